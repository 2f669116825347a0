"""Meta-gradient estimators proven against exact meta-gradients of a tabular MDP small enough to enumerate.

Part 1 checks the tabular family itself (gymnasium API, enumeration, sampler). Part 2 checks the
inner step. Part 3 is exact, with no sampling noise: the expected Hessian of each estimator's surrogate
(the probability-weighted sum over all trajectories) against the terms of the exact Hessian of J
(ProMP: grad^2 J = H1 + H2 + H12 + H12^T): DiCE has all four, LVC H1 + H2, naive H2. Part 4 is
Monte Carlo: meta-gradient estimates through ``adapt_policy`` converge, as samples grow, to the
exact meta-gradient for DiCE, and to a different, predicted limit for the other estimators.
Each identity is also shown NOT to hold for the other estimators, so a swapped estimator fails.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from metalearn_edu.envs.tabular import (
    ENV_ID,
    TabularMDPEnv,
    TabularSoftmaxPolicy,
    register_tabular,
    sample_tabular_episodes,
    sample_tabular_tasks,
    task_tensors,
)
from metalearn_edu.envs.tabular_trajectories import enumerate_trajectories, expected_return
from metalearn_edu.rl.advantages import LinearFeatureBaseline, discounted_returns
from metalearn_edu.rl.exact import (
    exact_hessian,
    exact_meta_gradient,
    expected_surrogate_gradient,
    expected_surrogate_hessian,
    hessian_terms,
    meta_gradient_with_curvature,
    state_action_values,
    trajectory_surrogate,
)
from metalearn_edu.rl.inner import adapt_policy
from metalearn_edu.rl.objectives import dice_surrogate, pg_surrogate
from metalearn_edu.rl.policies import CategoricalMLPPolicy

torch.set_num_threads(1)
HORIZON, GAMMA = 3, 0.9


def _problem(num_states: int = 2, seed: int = 6, scale: float = 0.5):
    """A seeded task (2 actions) and logits where all Hessian terms are sizeable."""
    task = sample_tabular_tasks(1, num_states, 2, np.random.default_rng(seed))[0]
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(num_states, 2, generator=generator, dtype=torch.float64)
    return task, logits


def _close(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= 1e-9 * max(1.0, scale.abs().max().item()))


# --- 1. the tabular family ------------------------------------------------------------------------


def test_tabular_env_passes_check_env_and_is_registered_idempotently():
    register_tabular()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_tabular()
        check_env(gym.make(ENV_ID, num_states=3, num_actions=2, horizon=2).unwrapped)
    env = gym.make(ENV_ID, num_states=2, horizon=4)
    env.unwrapped.reset(seed=3)
    tasks = env.unwrapped.sample_tasks(2)
    env.unwrapped.reset(seed=3)
    np.testing.assert_array_equal(env.unwrapped.sample_tasks(2)[1]["transitions"], tasks[1]["transitions"])
    env.unwrapped.set_task(tasks[0])
    state, _ = env.reset(seed=0)
    steps = 0
    while True:
        action = env.action_space.sample()
        next_state, reward, terminated, truncated, _ = env.step(action)
        assert reward == tasks[0]["rewards"][state, action] and 0 <= next_state < 2
        state, steps = next_state, steps + 1
        if terminated or truncated:
            break
    assert steps == 4 and not terminated
    with pytest.raises(ValueError, match="states"):
        env.unwrapped.set_task(sample_tabular_tasks(1, 3, 2, np.random.default_rng(0))[0])


def test_enumeration_is_a_distribution_and_agrees_with_dynamic_programming():
    task, logits = _problem(num_states=3)
    table = enumerate_trajectories(task, HORIZON)
    assert table.states.shape == ((3 * 2) ** HORIZON, HORIZON)
    torch.testing.assert_close(table.probabilities(logits).sum(), torch.tensor(1.0, dtype=torch.float64))
    _, _, initial = task_tensors(task)
    q_values = state_action_values(task, logits, HORIZON, GAMMA)  # (H, S, A)
    by_dp = (initial * (torch.softmax(logits, -1) * q_values[0]).sum(-1)).sum()
    torch.testing.assert_close(expected_return(task, logits, HORIZON, GAMMA), by_dp)


def test_monte_carlo_sampler_and_gymnasium_env_average_to_the_exact_return():
    task, logits = _problem(num_states=3)
    exact = expected_return(task, logits, HORIZON, 1.0).item()
    batch = sample_tabular_episodes([task], logits, HORIZON, 40_000, torch.Generator().manual_seed(0))
    assert batch.observations.shape == (HORIZON, 1, 40_000) and batch.observations.dtype == torch.long
    returns = batch.episode_returns()  # (1, B)
    assert abs(returns.mean().item() - exact) < 4 * returns.std().item() / 200
    env = TabularMDPEnv(num_states=3, horizon=HORIZON, task=task)
    uniform = expected_return(task, torch.zeros(3, 2, dtype=torch.float64), HORIZON, 1.0).item()
    env.reset(seed=0)
    totals = []
    for _ in range(3000):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + reward, terminated or truncated
        totals.append(total)
    assert abs(np.mean(totals) - uniform) < 4 * np.std(totals) / np.sqrt(len(totals))


# --- 2. the inner step ----------------------------------------------------------------------------


def test_adapt_policy_is_one_ascent_step_per_task_and_first_order_detaches_it():
    task_a, logits = _problem()
    task_b, _ = _problem(seed=1)
    batch = sample_tabular_episodes([task_a, task_b], logits, HORIZON, 64, torch.Generator().manual_seed(0))
    policy = TabularSoftmaxPolicy(2, 2)
    theta = logits.clone().requires_grad_(True)
    adapted = adapt_policy(policy, {"logits": theta}, batch, lr=0.3, estimator="naive", gamma=GAMMA)
    assert adapted["logits"].shape == (2, 2, 2)
    for task in range(2):
        episodes = batch.task(task)
        log_probs = policy.distribution({"logits": theta}, episodes.observations).log_prob(episodes.actions)
        returns = discounted_returns(episodes.rewards, episodes.mask, GAMMA)
        (grad,) = torch.autograd.grad(pg_surrogate(log_probs, returns, episodes.mask).sum(), theta)
        torch.testing.assert_close(adapted["logits"][task], theta + 0.3 * grad)
    # second order: d theta' / d theta = I + lr * Hessian; first order: exactly I
    jacobian = lambda fo: torch.autograd.functional.jacobian(
        lambda th: adapt_policy(policy, {"logits": th}, batch, lr=0.3, estimator="dice",
                                gamma=GAMMA, first_order=fo)["logits"][0], logits)
    eye = torch.eye(4, dtype=torch.float64).view(2, 2, 2, 2)
    torch.testing.assert_close(jacobian(True), eye)
    assert (jacobian(False) - eye).abs().max() > 1e-3
    # two steps = one step from the once-adapted per-task params
    twice = adapt_policy(policy, {"logits": theta}, batch, lr=0.3, estimator="lvc", gamma=GAMMA, steps=2)
    once = adapt_policy(policy, {"logits": theta}, batch, lr=0.3, estimator="lvc", gamma=GAMMA)
    again = adapt_policy(policy, once, batch, lr=0.3, estimator="lvc", gamma=GAMMA, per_task_params=True)
    torch.testing.assert_close(twice["logits"], again["logits"])


def _meta_gradient_through(policy, params, batch, post, **options):
    adapted = adapt_policy(policy, params, batch, lr=0.3, gamma=GAMMA, **options)
    log_probs = policy.distribution(adapted, post.observations, task_dim=1).log_prob(post.actions)
    outer = dice_surrogate(log_probs, post.rewards, post.mask, GAMMA).sum()
    return adapted, torch.autograd.grad(outer, list(params.values()))


@pytest.mark.parametrize("estimator", ["naive", "dice", "lvc"])
def test_vectorized_adaptation_equals_the_per_task_loop(estimator):
    task_a, logits = _problem()
    task_b, _ = _problem(seed=1)
    generator = torch.Generator().manual_seed(0)
    batch = sample_tabular_episodes([task_a, task_b], logits, HORIZON, 16, generator)
    post = sample_tabular_episodes([task_a, task_b], logits, HORIZON, 16, generator)
    tabular = (TabularSoftmaxPolicy(2, 2), {"logits": logits.clone().requires_grad_(True)})
    torch.manual_seed(0)
    mlp = CategoricalMLPPolicy(obs_dim=2, n_actions=2, hidden=(8,))  # float32 params, float64 rewards
    for policy, params in (tabular, (mlp, mlp.parameters_dict())):
        options = dict(estimator=estimator, steps=2, baseline=LinearFeatureBaseline(num_observations=2))
        loop, loop_grads = _meta_gradient_through(policy, params, batch, post, vectorize=False, **options)
        fast, fast_grads = _meta_gradient_through(policy, params, batch, post, vectorize=True, **options)
        for name in params:
            torch.testing.assert_close(fast[name], loop[name])
        for fast_grad, loop_grad in zip(fast_grads, loop_grads):
            torch.testing.assert_close(fast_grad, loop_grad)


def test_step_reduction_divides_the_inner_step_by_the_episode_length():
    task, logits = _problem()
    batch = sample_tabular_episodes([task], logits, HORIZON, 16, torch.Generator().manual_seed(0))
    policy, params = TabularSoftmaxPolicy(2, 2), {"logits": logits}
    by_episode = adapt_policy(policy, params, batch, lr=0.3, gamma=GAMMA)["logits"]
    by_step = adapt_policy(policy, params, batch, lr=0.3, gamma=GAMMA, reduction="step")["logits"]
    torch.testing.assert_close(by_step - logits, (by_episode - logits) / HORIZON)  # full-length episodes


@pytest.mark.parametrize("estimator", ["naive", "dice"])
def test_linear_baseline_reduces_the_variance_of_the_inner_step(estimator):
    task, logits = _problem()
    replicates = 64  # independent small batches of the same task, one "task" each
    batch = sample_tabular_episodes([task] * replicates, logits, HORIZON, 10, torch.Generator().manual_seed(0))
    policy, params = TabularSoftmaxPolicy(2, 2), {"logits": logits}
    spread = {}
    for name, baseline in (("none", None), ("linear", LinearFeatureBaseline(num_observations=2))):
        adapted = adapt_policy(policy, params, batch, lr=1.0, estimator=estimator, gamma=1.0,
                               first_order=True, baseline=baseline)["logits"]  # (K, S, A)
        spread[name] = adapted.var(dim=0).sum().item()
        if baseline is not None:
            assert baseline.weights.shape == (replicates, 2 * 2 + 4)  # fitted per task
    assert spread["linear"] < 0.8 * spread["none"], spread


def test_adapt_policy_rejects_bad_arguments_by_name():
    task, logits = _problem()
    batch = sample_tabular_episodes([task], logits, HORIZON, 4, torch.Generator().manual_seed(0))
    policy, params = TabularSoftmaxPolicy(2, 2), {"logits": logits}
    with pytest.raises(ValueError, match="estimator.*naive, dice, lvc"):
        adapt_policy(policy, params, batch, lr=0.1, estimator="reinforce")
    with pytest.raises(ValueError, match="lr"):
        adapt_policy(policy, params, batch, lr=0.0)
    with pytest.raises(ValueError, match="steps"):
        adapt_policy(policy, params, batch, lr=0.1, steps=0)
    with pytest.raises(ValueError, match="gae_lambda"):
        adapt_policy(policy, params, batch, lr=0.1, estimator="dice", gae_lambda=0.9)
    with pytest.raises(ValueError, match="reduction.*episode, step"):
        adapt_policy(policy, params, batch, lr=0.1, reduction="sum")
    with pytest.raises(ValueError, match="per_task_params"):
        adapt_policy(policy, params, batch, lr=0.1, per_task_params=True)


# --- 3. exact identities --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exact_terms():
    task, logits = _problem()
    terms = hessian_terms(task, logits, HORIZON, GAMMA)
    return task, logits, terms, exact_hessian(task, logits, HORIZON, GAMMA)


def test_exact_hessian_is_h1_plus_h2_plus_h12_plus_its_transpose(exact_terms):
    _, _, terms, hessian = exact_terms
    assert _close(terms.total(), hessian, hessian)
    # every term matters here, so dropping any one is visible
    for term in (terms.score_outer, terms.log_prob_curvature, terms.mixed):
        assert term.abs().max() > 0.05 * hessian.abs().max()
    assert not _close(terms.score_outer + terms.log_prob_curvature, hessian, hessian)


def test_every_estimator_is_unbiased_for_the_policy_gradient(exact_terms):
    task, logits, _, _ = exact_terms
    theta = logits.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(expected_return(task, theta, HORIZON, GAMMA), theta)
    for estimator in ("naive", "lvc", "dice"):
        mean = expected_surrogate_gradient(trajectory_surrogate(estimator, GAMMA), task, logits, HORIZON)
        assert _close(mean, exact.flatten(), exact), estimator
    # swapped weighting: reward-to-go discounted from step t (not from the start) is biased when gamma < 1
    from_t = lambda lp, r, m: pg_surrogate(lp, discounted_returns(r, m, GAMMA), m)
    biased = expected_surrogate_gradient(from_t, task, logits, HORIZON)
    assert (biased - exact.flatten()).abs().max() > 1e-3


@pytest.mark.parametrize("estimator", ["naive", "lvc", "dice"])
def test_expected_surrogate_hessian_keeps_exactly_its_terms(exact_terms, estimator):
    task, logits, terms, hessian = exact_terms
    candidates = {
        "naive": terms.log_prob_curvature,  # H2
        "lvc": terms.score_outer + terms.log_prob_curvature,  # H1 + H2
        "dice": terms.total(),  # H1 + H2 + H12 + H12^T = exact Hessian
    }
    expected = expected_surrogate_hessian(trajectory_surrogate(estimator, GAMMA), task, logits, HORIZON)
    for name, candidate in candidates.items():
        assert _close(expected, candidate, hessian) == (name == estimator), (estimator, name)


def test_dice_baseline_keeps_the_exact_hessian_only_if_it_ignores_the_action(exact_terms):
    task, logits, terms, hessian = exact_terms
    generator = torch.Generator().manual_seed(1)
    state_values = torch.randn(HORIZON, 2, dtype=torch.float64, generator=generator)  # b_t(s)
    action_values = torch.randn(HORIZON, 2, 2, dtype=torch.float64, generator=generator)  # b_t(s, a)
    table = enumerate_trajectories(task, HORIZON)
    time = torch.arange(HORIZON)
    by_state = state_values[time, table.states].T.unsqueeze(-1)  # (H, N, 1)
    by_action = action_values[time, table.states, table.actions].T.unsqueeze(-1)  # (H, N, 1)
    with_state = lambda lp, r, m: dice_surrogate(lp, r, m, GAMMA, baseline=by_state)
    with_action = lambda lp, r, m: dice_surrogate(lp, r, m, GAMMA, baseline=by_action)
    assert _close(expected_surrogate_hessian(with_state, task, logits, HORIZON), terms.total(), hessian)
    assert not _close(expected_surrogate_hessian(with_action, task, logits, HORIZON), terms.total(), hessian)


# --- 4. Monte-Carlo meta-gradients ----------------------------------------------------------------

ALPHA, REPLICATES = 1.0, 8


def _meta_gradient_estimates(task, logits, episodes, estimator, first_order, seed):
    """REPLICATES independent estimates (K, S, A): inner step on fresh episodes of pi_theta, then the
    DiCE outer surrogate on fresh episodes of each adapted policy (one 'task' per replicate)."""
    generator = torch.Generator().manual_seed(seed)
    policy = TabularSoftmaxPolicy(*logits.shape)
    theta = logits.clone().requires_grad_(True)
    tasks = [task] * REPLICATES
    inner = sample_tabular_episodes(tasks, theta, HORIZON, episodes, generator)
    adapted = adapt_policy(policy, {"logits": theta}, inner, lr=ALPHA, estimator=estimator,
                           gamma=1.0, first_order=first_order)
    outer = sample_tabular_episodes(tasks, adapted["logits"], HORIZON, episodes, generator)
    log_probs = policy.distribution(adapted, outer.observations).log_prob(outer.actions)  # (H, K, B)
    outer_objective = dice_surrogate(log_probs, outer.rewards, outer.mask, 1.0)  # (K,)
    return torch.stack([
        torch.autograd.grad(outer_objective[k], theta, retain_graph=True)[0] for k in range(REPLICATES)
    ])


@pytest.fixture(scope="module")
def meta_problem():
    task, logits = _problem()
    terms = hessian_terms(task, logits, HORIZON, 1.0)
    exact = exact_meta_gradient(task, logits, HORIZON, ALPHA, 1.0)
    return task, logits, terms, exact


def test_dice_meta_gradient_converges_to_the_exact_meta_gradient(meta_problem):
    task, logits, _, exact = meta_problem
    errors = {}
    for episodes in (100, 20_000):
        estimates = _meta_gradient_estimates(task, logits, episodes, "dice", False, seed=episodes)
        errors[episodes] = ((estimates - exact).flatten(1).norm(dim=1) / exact.norm()).mean().item()
    assert errors[20_000] < errors[100] / 4  # error shrinks like 1 / sqrt(episodes)
    assert errors[20_000] < 0.1
    # the same comparison fails for the naive estimator: it converges, but elsewhere
    naive = _meta_gradient_estimates(task, logits, 20_000, "naive", False, seed=1)
    assert ((naive - exact).flatten(1).norm(dim=1) / exact.norm()).mean().item() > 0.3


@pytest.mark.parametrize(
    "estimator, first_order, limit",
    [("dice", False, "exact"), ("lvc", False, "h1+h2"), ("naive", False, "h2"), ("dice", True, "none")],
)
def test_each_meta_gradient_estimate_converges_to_its_predicted_limit(meta_problem, estimator, first_order, limit):
    """(I + alpha C) grad J(theta'), with C the estimator's expected Hessian (C = 0 for first order)."""
    task, logits, terms, exact = meta_problem
    curvatures = {
        "exact": terms.total(),
        "h1+h2": terms.score_outer + terms.log_prob_curvature,
        "h2": terms.log_prob_curvature,
        "none": torch.zeros_like(terms.total()),
    }
    limits = {name: meta_gradient_with_curvature(task, logits, HORIZON, ALPHA, c, 1.0) for name, c in curvatures.items()}
    torch.testing.assert_close(limits["exact"], exact)
    pooled = _meta_gradient_estimates(task, logits, 20_000, estimator, first_order, seed=2).mean(dim=0)
    distance = {name: ((pooled - value).norm() / exact.norm()).item() for name, value in limits.items()}
    assert distance[limit] < 0.025, distance
    # and not near any other limit (they are >= 10 % apart here): a swapped estimator or a dropped
    # create_graph lands elsewhere
    assert all(value > 0.06 for name, value in distance.items() if name != limit), distance
