"""Functional policies: log-probabilities by hand, sampling, per-task params, differentiability, errors."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from gymnasium import spaces

from metalearn_edu.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, policy_for_spaces, stack_params


def perturbed(params: dict[str, torch.Tensor], seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: (p + scale * torch.randn(p.shape, generator=g)).detach() for n, p in params.items()}


def test_gaussian_log_prob_matches_a_hand_computed_normal() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden=(16, 16), init_log_std=-0.5)
    obs, actions = torch.randn(5, 4, 3), torch.randn(5, 4, 2)
    mean = policy.net(obs)
    std = torch.full((2,), -0.5).exp()
    by_hand = (-((actions - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    dist = policy.distribution(None, obs)
    torch.testing.assert_close(dist.log_prob(actions), by_hand)
    assert dist.log_prob(actions).shape == (5, 4)
    torch.testing.assert_close(policy.log_prob(policy(obs), actions), by_hand)  # the closed form act() uses


def test_categorical_log_prob_matches_log_softmax() -> None:
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(4, 3, hidden=(8,), activation="relu")
    obs, actions = torch.randn(6, 2, 4), torch.randint(0, 3, (6, 2))
    logits = policy.net(obs)
    by_hand = logits.gather(-1, actions[..., None]).squeeze(-1) - logits.logsumexp(-1)
    torch.testing.assert_close(policy.distribution(None, obs).log_prob(actions), by_hand)
    step = policy.act(None, obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(step.log_probs, policy.distribution(None, obs).log_prob(step.actions))


def test_parameters_dict_is_ordered_named_and_the_default() -> None:
    policy = GaussianMLPPolicy(2, 2)
    params = policy.parameters_dict()
    assert isinstance(params, OrderedDict) and list(params) == [n for n, _ in policy.named_parameters()]
    assert params["log_std"].shape == (2,) and params["net.0.weight"].shape == (64, 2)
    obs, actions = torch.randn(7, 2), torch.randn(7, 2)
    torch.testing.assert_close(policy.distribution(params, obs).log_prob(actions), policy.distribution(None, obs).log_prob(actions))
    other = perturbed(params, 1)
    assert not torch.allclose(policy.distribution(other, obs).log_prob(actions), policy.distribution(None, obs).log_prob(actions))


def test_sampling_is_seeded_and_follows_the_distribution() -> None:
    torch.manual_seed(0)
    gaussian = GaussianMLPPolicy(2, 2, init_log_std=math.log(0.5))
    obs = torch.zeros(20000, 2)
    first = gaussian.act(None, obs, torch.Generator().manual_seed(3)).actions
    assert torch.equal(first, gaussian.act(None, obs, torch.Generator().manual_seed(3)).actions)
    torch.testing.assert_close(first.std(0), torch.full((2,), 0.5), atol=0.02, rtol=0)
    torch.testing.assert_close(gaussian.act(None, obs, deterministic=True).actions, gaussian.net(obs))

    categorical = CategoricalMLPPolicy(2, 4)
    with torch.no_grad():
        categorical.net[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0]))
        categorical.net[-1].weight.zero_()
    arms = categorical.act(None, obs, torch.Generator().manual_seed(0)).actions
    frequencies = torch.bincount(arms, minlength=4).float() / len(arms)
    torch.testing.assert_close(frequencies, torch.tensor([0.0, 1.0, 2.0, -1.0]).softmax(0), atol=0.015, rtol=0)
    assert torch.equal(categorical.act(None, obs[:3], deterministic=True).actions, torch.full((3,), 2))


def test_an_inner_step_through_functional_params_is_differentiable() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8, 8))
    theta = policy.parameters_dict()
    obs, actions, advantages = torch.randn(10, 2), torch.randn(10, 2), torch.randn(10)
    inner_loss = -(policy.distribution(theta, obs).log_prob(actions) * advantages).mean()
    grads = torch.autograd.grad(inner_loss, list(theta.values()), create_graph=True)
    adapted = {n: p - 0.1 * g for (n, p), g in zip(theta.items(), grads)}
    outer = -policy.distribution(adapted, obs).log_prob(actions).mean()
    outer.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in policy.parameters())
    assert grads[0].grad_fn is not None  # second-order terms are in the graph


@pytest.mark.parametrize("policy_class", ["gaussian", "categorical"])
def test_stacked_per_task_params_match_one_call_per_task(policy_class: str) -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden=(8, 8)) if policy_class == "gaussian" else CategoricalMLPPolicy(3, 4, hidden=(8, 8))
    per_task = [perturbed(policy.parameters_dict(), seed) for seed in range(4)]
    stacked = {n: v.requires_grad_() for n, v in stack_params(per_task).items()}
    obs = torch.randn(5, 4, 6, 3)  # (H, T, B, obs_dim)
    dist = policy.distribution(stacked, obs, task_dim=1)
    actions = dist.sample()
    log_probs = dist.log_prob(actions)
    assert log_probs.shape == (5, 4, 6)
    for i, params in enumerate(per_task):
        torch.testing.assert_close(log_probs[:, i], policy.distribution(params, obs[:, i]).log_prob(actions[:, i]))
    log_probs[:, 2].sum().backward()  # only task 2's parameters receive a gradient
    assert stacked["net.0.weight"].grad[2].abs().sum() > 0
    assert stacked["net.0.weight"].grad[[0, 1, 3]].abs().sum() == 0


def test_integer_observations_are_one_hot_encoded() -> None:
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(5, 2, hidden=(8,))
    states = torch.tensor([[0, 4], [2, 2]])
    by_hand = policy.distribution(None, torch.nn.functional.one_hot(states, 5).float())
    torch.testing.assert_close(policy.distribution(None, states).logits, by_hand.logits)


def test_policy_for_spaces_picks_the_distribution() -> None:
    box = spaces.Box(-1, 1, shape=(3,))
    assert isinstance(policy_for_spaces(box, spaces.Box(-1, 1, shape=(2,))), GaussianMLPPolicy)
    categorical = policy_for_spaces(spaces.Discrete(6), spaces.Discrete(4))
    assert isinstance(categorical, CategoricalMLPPolicy) and categorical.obs_dim == 6
    with pytest.raises(TypeError, match="action_space"):
        policy_for_spaces(box, spaces.MultiBinary(3))


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: GaussianMLPPolicy(2, 2, activation="sigmoid"), "activation must be one of \\['relu', 'tanh'\\]"),
        (lambda: GaussianMLPPolicy(0, 2), "obs_dim"),
        (lambda: GaussianMLPPolicy(2, 0), "act_dim"),
        (lambda: CategoricalMLPPolicy(2, 0), "n_actions"),
        (lambda: CategoricalMLPPolicy(2, 3, hidden=64), "hidden"),
        (lambda: GaussianMLPPolicy(2, 2).distribution({"log_std": torch.zeros(2)}, torch.zeros(1, 2)), "params"),
        (lambda: GaussianMLPPolicy(2, 2).act(stack_params([GaussianMLPPolicy(2, 2).parameters_dict()] * 3), torch.zeros(3, 2)), "task_dim"),
        (lambda: GaussianMLPPolicy(2, 2).act(stack_params([GaussianMLPPolicy(2, 2).parameters_dict()] * 3), torch.zeros(4, 2), task_dim=0), "tasks"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_argument(make, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make()


def test_action_scale_scales_mean_and_sigma_and_stacked_params_agree() -> None:
    torch.manual_seed(0)
    scaled = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-0.3, action_scale=0.1)
    obs, actions = torch.randn(6, 3, 2), 0.1 * torch.randn(6, 3, 2)
    mean, log_std = scaled(obs)
    torch.testing.assert_close(mean, 0.1 * scaled.net(obs))
    torch.testing.assert_close(log_std, torch.full_like(mean, -0.3 + math.log(0.1)))
    expected = torch.distributions.Normal(0.1 * scaled.net(obs), 0.1 * math.exp(-0.3)).log_prob(actions).sum(-1)
    torch.testing.assert_close(scaled.distribution(None, obs).log_prob(actions), expected)
    stacked = stack_params([scaled.parameters_dict()] * 3)  # per-task path applies c too
    torch.testing.assert_close(scaled.distribution(stacked, obs, task_dim=1).log_prob(actions), expected)
    assert scaled.act(None, obs, deterministic=True).actions.abs().max() < 0.1 * scaled.net(obs).abs().max() + 1e-6


def _output_shift_of_one_step(policy: GaussianMLPPolicy, name: str, output: int, obs: torch.Tensor, actions: torch.Tensor,
                              advantages: torch.Tensor, alpha: float) -> torch.Tensor:
    """How far raw output ``output`` (0: μ, 1: log σ) moves after one policy-gradient step of size ``alpha`` on parameter ``name``."""
    params = policy.parameters_dict()
    surrogate = (policy.distribution(params, obs).log_prob(actions) * advantages).mean()
    (grad,) = torch.autograd.grad(surrogate, [params[name]])
    stepped = {**params, name: params[name] + alpha * grad}
    return (policy.raw_outputs(stepped, obs)[output] - policy.raw_outputs(params, obs)[output]).detach()


def test_action_scale_makes_an_output_layer_step_move_the_mean_c_squared_as_far() -> None:
    """Same distribution, two parametrisations: a step of size alpha on the output bias moves μ c² as far with c."""
    torch.manual_seed(0)
    c, alpha = 0.1, 0.05
    scaled = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=0.0, action_scale=c)
    plain = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=math.log(c))
    with torch.no_grad():  # plain's MLP outputs c * scaled's: the two policies are one distribution
        for (name, p), q in zip(plain.named_parameters(), scaled.parameters()):
            if name != "log_std":  # plain's log σ is already log c + scaled's (0)
                p.copy_(c * q if name in ("net.2.weight", "net.2.bias") else q)
    obs, actions, advantages = torch.randn(10, 2), 0.1 * torch.randn(10, 2), torch.randn(10)
    torch.testing.assert_close(plain.distribution(None, obs).log_prob(actions), scaled.distribution(None, obs).log_prob(actions))

    def mean_shift(policy: GaussianMLPPolicy) -> torch.Tensor:
        return _output_shift_of_one_step(policy, "net.2.bias", 0, obs, actions, advantages, alpha)

    torch.testing.assert_close(mean_shift(scaled), c**2 * mean_shift(plain))


def test_action_scale_is_validated_and_survives_a_checkpoint_spec() -> None:
    from metalearn_edu.rl.train import policy_from_spec, policy_spec

    for bad in (0.0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match="action_scale"):
            GaussianMLPPolicy(2, 2, action_scale=bad)
    spec = policy_spec(GaussianMLPPolicy(2, 2, hidden=(4,), action_scale=0.1))
    assert spec["action_scale"] == 0.1 and policy_from_spec(spec).action_scale == 0.1
    old = {k: v for k, v in spec.items() if k != "action_scale"}  # a checkpoint written before the field existed
    assert policy_from_spec(old).action_scale == 1.0


def test_log_std_scale_sets_sigma_and_makes_a_step_move_log_sigma_k_squared_as_far() -> None:
    """log σ = log c + k φ: the same distribution at init, and a gradient step of size α on φ moves log σ k² as far."""
    torch.manual_seed(0)
    k, c, alpha = 4.0, 0.1, 0.05
    scaled = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-0.8, action_scale=c, log_std_scale=k)
    plain = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-0.8, action_scale=c)
    plain.load_state_dict({**scaled.state_dict(), "log_std": plain.log_std.detach()})
    torch.testing.assert_close(scaled.log_std.detach(), torch.full((2,), -0.8 / k))  # the parameter holds init / k
    obs, actions, advantages = torch.randn(10, 2), 0.1 * torch.randn(10, 2), torch.randn(10)
    torch.testing.assert_close(scaled.distribution(None, obs).log_prob(actions), plain.distribution(None, obs).log_prob(actions))
    stacked = stack_params([scaled.parameters_dict()] * 3)  # the per-task path applies k too
    torch.testing.assert_close(scaled.distribution(stacked, obs.unsqueeze(1).expand(10, 3, 2), task_dim=1).log_prob(actions.unsqueeze(1)),
                               plain.distribution(None, obs).log_prob(actions).unsqueeze(1).expand(10, 3))

    def log_std_shift(policy: GaussianMLPPolicy) -> torch.Tensor:
        return _output_shift_of_one_step(policy, "log_std", 1, obs, actions, advantages, alpha)

    assert log_std_shift(plain).abs().min() > 0
    torch.testing.assert_close(log_std_shift(scaled), k**2 * log_std_shift(plain))


def test_log_std_scale_is_validated_and_survives_a_checkpoint_spec() -> None:
    from metalearn_edu.rl.train import policy_from_spec, policy_spec

    for bad in (0.0, -2.0, math.inf, True):
        with pytest.raises(ValueError, match="log_std_scale"):
            GaussianMLPPolicy(2, 2, log_std_scale=bad)
    policy = GaussianMLPPolicy(2, 2, hidden=(4,), init_log_std=-1.0, log_std_scale=5.0)
    rebuilt = policy_from_spec(policy_spec(policy))
    rebuilt.load_state_dict(policy.state_dict())
    assert rebuilt.log_std_scale == 5.0
    torch.testing.assert_close(rebuilt(torch.zeros(1, 2))[1], torch.full((1, 2), -1.0))
    old = {key: value for key, value in policy_spec(policy).items() if key != "log_std_scale"}  # written before the field existed
    assert policy_from_spec(old).log_std_scale == 1.0


def test_state_dependent_std_starts_at_the_initial_sigma_and_varies_with_the_state_after_a_step() -> None:
    from metalearn_edu.rl.train import policy_from_spec, policy_spec

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-0.7, action_scale=0.1, state_dependent_std=True)
    obs, actions, advantages = torch.randn(10, 2), 0.1 * torch.randn(10, 2), torch.randn(10)
    mean, log_std = policy(obs)
    assert mean.shape == log_std.shape == (10, 2)
    torch.testing.assert_close(log_std, torch.full((10, 2), -0.7 + math.log(0.1)))  # zero-initialised σ head
    torch.testing.assert_close(mean, 0.1 * policy.net(obs)[:, :2])
    params = policy.parameters_dict()
    surrogate = (policy.distribution(params, obs).log_prob(actions) * advantages).mean()
    grads = torch.autograd.grad(surrogate, list(params.values()))
    stepped = {name: value + 0.5 * grad for (name, value), grad in zip(params.items(), grads)}
    new_log_std = policy.raw_outputs(stepped, obs)[1]
    assert new_log_std.std(dim=0).min() > 0  # σ now depends on the state
    stacked = stack_params([stepped] * 3)  # the per-task path splits the output the same way
    torch.testing.assert_close(policy.raw_outputs(stacked, obs.unsqueeze(1).expand(10, 3, 2), task_dim=1)[1],
                               new_log_std.unsqueeze(1).expand(10, 3, 2))
    rebuilt = policy_from_spec(policy_spec(policy))
    rebuilt.load_state_dict(policy.state_dict())
    assert rebuilt.state_dependent_std
    with pytest.raises(ValueError, match="state_dependent_std"):
        GaussianMLPPolicy(2, 2, state_dependent_std=1)


def test_min_std_floors_sigma_without_gradient_below_it_and_leaves_it_alone_above() -> None:
    from metalearn_edu.rl.train import policy_from_spec, policy_spec

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), action_scale=0.1, state_dependent_std=True, min_std=0.4)
    with torch.no_grad():  # log σ-part = -5 at state 0 (below log 0.4) and 0 at state 1 (above): σ-head bias, row by row
        policy.net[-1].weight[2:].zero_()
        policy.net[-1].bias[2:] = torch.tensor([-5.0, 0.0])
    obs = torch.zeros(1, 2)
    log_std = policy(obs)[1]
    torch.testing.assert_close(log_std, torch.tensor([[math.log(0.04), math.log(0.1)]]))  # σ = c max(e^part, min_std)
    log_std.sum().backward()
    assert policy.net[-1].bias.grad[2].item() == 0.0 and policy.net[-1].bias.grad[3].item() == 1.0  # floored: no gradient
    assert policy_from_spec(policy_spec(policy)).min_std == 0.4
    assert policy_from_spec({k: v for k, v in policy_spec(policy).items() if k != "min_std"}).min_std is None  # old checkpoints
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="min_std must be a positive finite number or None"):
            GaussianMLPPolicy(2, 2, min_std=bad)
