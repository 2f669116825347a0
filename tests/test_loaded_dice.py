"""Loaded DiCE (Farquhar et al. 2019) on advantages: LVC's step, plus the cross-time Hessian terms.

Exact, on the enumerable tabular family: its expected gradient is grad J; its expected Hessian is H1 + H2 with
lam = 0 (LVC), the full Hessian with lam = 1 (DiCE), and in between H1 + H2 + D + D^T with
D = E[sum_t G_t u_t g_t^T], u_t = sum_{t' < t} lam^(t - t') g_t', computed here from the enumerated scores. Then, on
sampled navigation episodes with GAE and standardised advantages: the inner step it takes is LVC's, to rounding,
while the meta-gradient through it is not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalearn_edu.envs.tabular import sample_tabular_tasks
from metalearn_edu.envs.tabular_trajectories import enumerate_trajectories, expected_return
from metalearn_edu.rl.exact import (
    expected_surrogate_gradient,
    expected_surrogate_hessian,
    hessian_terms,
    reward_to_go_from_start,
    trajectory_surrogate,
)
from metalearn_edu.rl.inner import ESTIMATORS, adapt_policy, inner_surrogate
from metalearn_edu.rl.objectives import loaded_dice_surrogate

torch.set_num_threads(1)
HORIZON, GAMMA = 4, 0.9


@pytest.fixture(scope="module")
def problem():
    task = sample_tabular_tasks(1, 2, 2, np.random.default_rng(6))[0]
    logits = 0.5 * torch.randn(2, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    return task, logits, hessian_terms(task, logits, HORIZON, GAMMA)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= 1e-9 * max(1.0, b.abs().max().item()))


def _discounted_cross_term(task, logits: torch.Tensor, lam: float) -> torch.Tensor:
    """D = sum_tau p(tau) sum_t G_t u_t g_t^T with u_t = sum_{t' < t} lam^(t - t') g_t': (P, P), by enumeration."""
    table = enumerate_trajectories(task, HORIZON)
    shape, flat = logits.shape, logits.detach().flatten()
    probs = table.probabilities(flat.view(shape))  # (N,)
    scores = torch.func.jacrev(lambda theta: table.policy_log_probs(theta.view(shape)))(flat)  # (N, H, P)
    reward_to_go = reward_to_go_from_start(table.rewards.T, GAMMA).T  # (N, H)
    weights = torch.zeros(HORIZON, HORIZON, dtype=logits.dtype)  # (t, t'): lam^(t - t') for t' < t
    for t in range(HORIZON):
        for earlier in range(t):
            weights[t, earlier] = lam ** (t - earlier)
    past_scores = torch.einsum("tk,nkp->ntp", weights, scores)  # (N, H, P) u_t
    return torch.einsum("n,nt,nti,ntj->ij", probs, reward_to_go, past_scores, scores)


def test_loaded_dice_is_an_estimator_of_the_inner_step():
    assert "loaded-dice" in ESTIMATORS


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_its_expected_gradient_is_the_policy_gradient(problem, lam):
    task, logits, _ = problem
    theta = logits.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(expected_return(task, theta, HORIZON, GAMMA), theta)
    mean = expected_surrogate_gradient(trajectory_surrogate("loaded-dice", GAMMA, lam), task, logits, HORIZON)
    assert _close(mean, exact.flatten())


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_its_expected_hessian_is_lvc_plus_the_discounted_cross_terms(problem, lam):
    task, logits, terms = problem
    expected = expected_surrogate_hessian(trajectory_surrogate("loaded-dice", GAMMA, lam), task, logits, HORIZON)
    lvc = terms.score_outer + terms.log_prob_curvature
    cross = _discounted_cross_term(task, logits, lam)
    assert _close(expected, lvc + cross + cross.T)
    # lam = 0 is LVC and lam = 1 the full Hessian (DiCE); in between it is neither, so a swapped estimator fails
    assert _close(expected, lvc) == (lam == 0.0)
    assert _close(expected, terms.total()) == (lam == 1.0)
    if lam == 1.0:
        assert _close(cross, terms.mixed)  # D = H12: the enumerated cross term is the one of the exact Hessian
    assert cross.abs().max() > 0.05 * terms.total().abs().max() or lam == 0.0


def _gaussian_problem():
    """A small Gaussian policy and 2D-navigation-like episodes: 3 tasks x 6 episodes x 12 steps, some ended early."""
    from metalearn_edu.rl.batch import EpisodeBatch
    from metalearn_edu.rl.policies import GaussianMLPPolicy

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8, 8), init_log_std=-1.0).double()
    horizon, tasks, episodes = 12, 3, 6
    generator = torch.Generator().manual_seed(1)
    observations = torch.randn(horizon, tasks, episodes, 2, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        actions = policy.distribution(policy.parameters_dict(), observations).sample()
    rewards = -observations.norm(dim=-1) + 0.1 * torch.randn(horizon, tasks, episodes, generator=generator, dtype=torch.float64)
    lengths = torch.randint(6, horizon + 1, (tasks, episodes), generator=generator)
    mask = (torch.arange(horizon).view(-1, 1, 1) < lengths).to(torch.float64)
    batch = EpisodeBatch(observations=observations, actions=actions, rewards=rewards, mask=mask, tasks=list(range(tasks)))
    return policy, batch


def test_it_takes_lvcs_inner_step_but_not_its_meta_gradient():
    policy, batch = _gaussian_problem()
    options = dict(lr=0.1, gamma=0.99, gae_lambda=0.95, normalize=True)
    theta = {name: p.detach().clone().requires_grad_(True) for name, p in policy.parameters_dict().items()}
    adapted = {est: adapt_policy(policy, theta, batch, estimator=est, **options) for est in ("lvc", "loaded-dice")}
    for name in theta:
        torch.testing.assert_close(adapted["loaded-dice"][name], adapted["lvc"][name], rtol=1e-12, atol=1e-12)
    # an outer objective on the adapted parameters: its gradient differs by the cross-time terms
    grads = {}
    for est, params in adapted.items():
        log_probs = policy.distribution(params, batch.observations, task_dim=1).log_prob(batch.actions)
        outer = inner_surrogate("lvc", log_probs, batch.rewards, batch.mask, gamma=0.99, gae_lambda=0.95, normalize=True).sum()
        grads[est] = torch.cat([g.flatten() for g in torch.autograd.grad(outer, list(theta.values()))])
    gap = (grads["loaded-dice"] - grads["lvc"]).norm() / grads["lvc"].norm()
    assert gap > 1e-3


def test_dice_lambda_zero_is_lvc_and_is_passed_through_the_inner_spec():
    from metalearn_edu.rl.maml_rl import InnerSpec
    from metalearn_edu.rl.train import RLTrainConfig

    policy, batch = _gaussian_problem()
    theta = {name: p.detach().clone().requires_grad_(True) for name, p in policy.parameters_dict().items()}

    def meta_gradient(spec: InnerSpec) -> torch.Tensor:
        adapted = spec.adapt(policy, theta, batch, create_graph=True)
        log_probs = policy.distribution(adapted, batch.observations, task_dim=1).log_prob(batch.actions)
        outer = inner_surrogate("naive", log_probs, batch.rewards, batch.mask, gamma=0.99, gae_lambda=0.95, normalize=True).sum()
        return torch.cat([g.flatten() for g in torch.autograd.grad(outer, list(theta.values()))])

    lvc = meta_gradient(InnerSpec(estimator="lvc", gae_lambda=0.95))
    torch.testing.assert_close(meta_gradient(InnerSpec(estimator="loaded-dice", gae_lambda=0.95, dice_lambda=0.0)), lvc)
    default, half = (meta_gradient(InnerSpec(estimator="loaded-dice", gae_lambda=0.95, dice_lambda=d)) for d in (None, 0.5))
    torch.testing.assert_close(default, meta_gradient(InnerSpec(estimator="loaded-dice", gae_lambda=0.95, dice_lambda=0.95)))
    assert not torch.allclose(half, lvc) and not torch.allclose(half, default)
    config = RLTrainConfig(algo="ppo-maml", estimator="loaded-dice", gae_lambda=0.95, dice_lambda=0.5)
    assert config.inner_spec().dice_lambda == 0.5
    with pytest.raises(ValueError, match="dice_lambda is read by the loaded-dice estimator only"):
        RLTrainConfig(algo="ppo-maml", dice_lambda=0.5).validate()
    with pytest.raises(ValueError, match=r"dice_lambda must be in \[0, 1\]"):
        RLTrainConfig(algo="ppo-maml", estimator="loaded-dice", dice_lambda=1.5).validate()


def test_bad_lambda_is_refused_with_its_name():
    x = torch.zeros(3, 1, 2)
    with pytest.raises(ValueError, match="lam"):
        loaded_dice_surrogate(x, x, torch.ones_like(x), 1.5)
