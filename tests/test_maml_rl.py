"""MAML-VPG, MAML-TRPO and the pretrained baseline: each update improves its objective on a fixed batch;
TRPO's accepted step satisfies the KL constraint; conjugate gradient and the line search do their jobs."""

import pytest
import torch

from metalearn_edu.rl.maml_rl import (
    InnerSpec,
    MetaBatch,
    _PostUpdateProblem,
    maml_trpo_step,
    maml_vpg_objective,
    maml_vpg_step,
    pretrain_objective,
    pretrain_step,
)
from metalearn_edu.rl.policies import GaussianMLPPolicy
from metalearn_edu.rl.sampler import MetaSampler
from metalearn_edu.rl.trpo import backtracking_line_search, conjugate_gradient, trust_region_step


@pytest.fixture(scope="module")
def problem():
    """A tiny 2D-navigation meta-batch: 3 tasks x 6 episodes x 12 steps, a 16-unit policy."""
    torch.manual_seed(0)
    sampler = MetaSampler("navigation2d", horizon=12)
    policy = GaussianMLPPolicy(2, 2, hidden=(16,), init_log_std=-1.0)
    tasks = sampler.sample_tasks(3, rng=0)
    inner = InnerSpec(lr=0.1, estimator="lvc")
    pre = sampler.sample(policy, tasks, 6, seed=1)
    adapted = inner.adapt_detached(policy, policy.parameters_dict(), pre)
    post = sampler.sample(policy, tasks, 6, params=adapted, seed=2)
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    return policy, state, MetaBatch.build(pre, post, policy, gamma=0.99), inner


def fresh(problem):
    policy, state, meta, inner = problem
    policy.load_state_dict(state)
    return policy, meta, inner


def test_conjugate_gradient_solves_a_positive_definite_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=6)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-8)


def test_trust_region_step_lands_on_the_kl_boundary():
    a = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    step = trust_region_step(x, a @ x, max_kl=0.01)
    assert float(0.5 * step @ a @ step) == pytest.approx(0.01)


def test_line_search_backtracks_until_improvement_within_the_trust_region():
    # the surrogate improves only for steps below 0.5, the KL is step^2
    evaluate = lambda step: (float(step.sum()) if step.sum() < 0.5 else -1.0, float(step.sum() ** 2))
    result = backtracking_line_search(evaluate, torch.tensor([1.0]), 0.0, max_kl=0.2, backtrack=0.8)
    assert result.fraction == pytest.approx(0.8**4) and result.tries == 5  # 1, .8, .64, .512 rejected
    nothing = backtracking_line_search(lambda step: (-1.0, 0.0), torch.tensor([1.0]), 0.0, max_kl=0.2, max_tries=3)
    assert nothing.fraction == 0.0


@pytest.mark.parametrize("estimator", ["naive", "lvc", "dice"])
def test_maml_vpg_step_increases_the_post_update_objective(problem, estimator):
    policy, meta, _ = fresh(problem)
    inner = InnerSpec(lr=0.1, estimator=estimator)
    before = float(maml_vpg_objective(policy, meta, inner).detach())
    maml_vpg_step(policy, torch.optim.SGD(policy.parameters(), lr=0.05), meta, inner)
    assert float(maml_vpg_objective(policy, meta, inner).detach()) > before


def test_maml_vpg_gradient_flows_through_the_inner_step(problem):
    """With create_graph the meta-gradient differs from the first-order one (the Hessian term is kept)."""
    policy, meta, inner = fresh(problem)
    objective = maml_vpg_objective(policy, meta, inner)
    full = torch.autograd.grad(objective, list(policy.parameters()))
    adapted = inner.adapt_detached(policy, policy.parameters_dict(), meta.pre)
    adapted = {k: v.requires_grad_(True) for k, v in adapted.items()}
    from metalearn_edu.rl.maml_rl import per_step, post_log_probs
    from metalearn_edu.rl.objectives import pg_surrogate

    first = per_step(pg_surrogate(post_log_probs(policy, adapted, meta.post), meta.post_advantages, meta.post.mask), meta.post.mask)
    first_order = [g.sum(0) for g in torch.autograd.grad(first, list(adapted.values()))]
    gap = sum(float((a - b).abs().sum()) for a, b in zip(full, first_order))
    assert gap > 1e-4


def test_maml_trpo_step_improves_the_surrogate_within_the_kl_constraint(problem):
    policy, meta, inner = fresh(problem)
    stats = maml_trpo_step(policy, meta, inner, max_kl=0.01)
    assert stats["step_fraction"] > 0 and stats["improvement"] > 0
    assert 0 < stats["post_kl"] <= 0.01
    # measured independently: the KL of the post-update policy, through the inner step, from theta_old
    policy_new = {k: v.clone() for k, v in policy.state_dict().items()}
    policy.load_state_dict(problem[1])
    check = _PostUpdateProblem(policy, meta, inner)
    policy.load_state_dict(policy_new)
    surrogate, kl = check.evaluate(create_graph=False)
    assert float(kl.detach()) <= 0.01 and float(surrogate.detach()) > 0.0  # the surrogate is 0 at theta_old (standardised advantages)


def test_maml_trpo_respects_a_tighter_trust_region(problem):
    policy, meta, inner = fresh(problem)
    stats = maml_trpo_step(policy, meta, inner, max_kl=1e-4)
    assert stats["post_kl"] <= 1e-4


def test_pretrain_step_increases_the_plain_policy_gradient_objective(problem):
    policy, meta, _ = fresh(problem)
    before = float(pretrain_objective(policy, meta, 0.99).detach())
    pretrain_step(policy, torch.optim.SGD(policy.parameters(), lr=0.05), meta, 0.99)
    assert float(pretrain_objective(policy, meta, 0.99).detach()) > before


def test_inner_spec_names_bad_arguments():
    with pytest.raises(ValueError, match="estimator must be one of naive, dice, lvc"):
        InnerSpec(estimator="magic")
    with pytest.raises(ValueError, match="inner_lr must be a positive number"):
        InnerSpec(lr=0.0)


def test_advantages_survive_collinear_baseline_features():
    """Constant observations (a bandit's [1.0], or a policy parked at one point) make the features o, o^2 and 1
    collinear; in float32 the ridge term 1e-5 is lost next to Gram entries of order H*B and the solve failed."""
    from metalearn_edu.rl.advantages import LinearFeatureBaseline
    from metalearn_edu.rl.batch import EpisodeBatch

    shape = (100, 2, 20)
    batch = EpisodeBatch(observations=torch.full(shape + (1,), 1.0), actions=torch.zeros(shape + (2,)),
                         rewards=torch.rand(shape, generator=torch.Generator().manual_seed(0)), mask=torch.ones(shape))
    values = LinearFeatureBaseline().fit(batch, batch.rewards).predict(batch)
    assert values.dtype == torch.float32 and torch.isfinite(values).all()


def test_two_inner_steps_on_fresh_episodes_chain_differentiably_and_match_finite_differences():
    """J(theta) = surrogate at theta''(theta), theta' = theta + a grad L(theta; D), theta'' = theta' + a' grad L(theta'; D'),
    with D' sampled at theta' (fixed here): autograd through adapt_meta equals central differences (float64).

    The naive estimator, because its surrogate has no stop-gradient: its autograd derivative is the derivative of
    the step as a numeric function. (LVC and DiCE add sampling-distribution terms on purpose; see test_estimators.)"""
    torch.manual_seed(0)
    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            sampler = MetaSampler("navigation2d", horizon=6)
            policy = GaussianMLPPolicy(2, 2, hidden=(5,), init_log_std=-1.0)
            inner = InnerSpec(lr=0.1, estimator="naive", later_lr=0.07)
            tasks = sampler.sample_tasks(2, rng=0)
            pre = sampler.sample(policy, tasks, 4, seed=1)
            first = inner.adapt_detached(policy, policy.parameters_dict(), pre)
            mid = sampler.sample(policy, tasks, 4, params=first, seed=3)
            second = inner.adapt_detached(policy, first, mid, lr=0.07, per_task_params=True)
            post = sampler.sample(policy, tasks, 4, params=second, seed=2)
            meta = MetaBatch.build(pre, post, policy, gamma=0.99, mids=(mid,))
            theta = policy.parameters_dict()
            torch.testing.assert_close(inner.adapt_meta(policy, theta, meta, create_graph=False)["log_std"], second["log_std"])
            (grad,) = torch.autograd.grad(maml_vpg_objective(policy, meta, inner), [theta["log_std"]])
            one_step = torch.autograd.grad(maml_vpg_objective(policy, MetaBatch(pre, post, meta.post_advantages), inner), [theta["log_std"]])[0]
            assert not torch.allclose(grad, one_step, atol=1e-4)  # the second step changes the meta-gradient
            eps, numeric = 1e-6, torch.zeros(2)
            for j in range(2):
                values = []
                for sign in (1, -1):
                    with torch.no_grad():
                        policy.log_std[j] += sign * eps
                    values.append(float(maml_vpg_objective(policy, meta, inner).detach()))
                    with torch.no_grad():
                        policy.log_std[j] -= sign * eps
                numeric[j] = (values[0] - values[1]) / (2 * eps)
            torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)
        finally:
            torch.set_default_dtype(torch.float32)
