"""ProMP and PPO-inner: ratio 1 and KL 0 at the first epoch, the objective improves, and the ProMP
meta-gradient through the inner step matches finite differences (naive inner step) and an explicit
Hessian reference (LVC inner step), in float64 on a tiny problem."""

import pytest
import torch

from metalearn_edu.rl.advantages import LinearFeatureBaseline, gae
from metalearn_edu.rl.inner import inner_surrogate
from metalearn_edu.rl.maml_rl import InnerSpec, MetaBatch, post_log_probs
from metalearn_edu.rl.objectives import mean_episode_length
from metalearn_edu.rl.policies import GaussianMLPPolicy
from metalearn_edu.rl.ppo_maml import (clipped_objective, post_update_kl, ppo_adapt, ppo_inner_step, pre_update_kl, promp_step,
                                      shrink_step_to_kl)
from metalearn_edu.rl.sampler import MetaSampler
from metalearn_edu.rl.trpo import flatten, unflatten

from rl_helpers import tiny_meta_batch

CLIP, KL_COEF = 0.3, 5e-4


@pytest.fixture()
def small():
    return tiny_meta_batch((16,), 12, 3, 6, torch.float32)


def test_promp_first_epoch_has_ratio_one_and_zero_kl(small):
    policy, meta = small
    stats = promp_step(policy, torch.optim.Adam(policy.parameters(), 1e-3), meta, InnerSpec(estimator="lvc"), epochs=3)
    assert stats["ratio_deviation_first"] == 0.0 and stats["kl_first"] == 0.0 and stats["clip_fraction_first"] == 0.0
    assert stats["kl_last"] > 0.0  # the later epochs did move theta


def test_promp_increases_its_objective_on_a_fixed_batch(small):
    policy, meta = small
    inner = InnerSpec(estimator="lvc")
    old_raw = tuple(r.detach() for r in policy.raw_outputs(None, meta.pre.observations))
    old_log_probs = post_log_probs(policy, inner.adapt_detached(policy, policy.parameters_dict(), meta.pre), meta.post).detach()

    def objective() -> float:
        log_probs = post_log_probs(policy, inner.adapt(policy, policy.parameters_dict(), meta.pre, create_graph=False), meta.post)
        return float((clipped_objective(log_probs, old_log_probs, meta.post_advantages, meta.post.mask, CLIP)
                      - KL_COEF * pre_update_kl(policy, old_raw, meta.pre)).detach())

    before = objective()
    stats = promp_step(policy, torch.optim.Adam(policy.parameters(), 1e-3), meta, inner, epochs=5)
    assert before == pytest.approx(stats["objective_first"], abs=1e-6)
    assert objective() > before + 1e-4


def test_ppo_inner_first_epoch_is_the_policy_gradient_step(small):
    policy, meta = small
    inner = InnerSpec(lr=0.1, estimator="naive")
    one_epoch = ppo_adapt(policy, policy.parameters_dict(), meta.pre, inner, epochs=1, clip=CLIP)
    pg_step = inner.adapt_detached(policy, policy.parameters_dict(), meta.pre)
    for name in pg_step:
        torch.testing.assert_close(one_epoch[name], pg_step[name], rtol=1e-4, atol=1e-6)
    three = ppo_adapt(policy, policy.parameters_dict(), meta.pre, inner, epochs=3, clip=CLIP)
    assert any(not torch.allclose(three[n], one_epoch[n]) for n in three)


def test_ppo_inner_step_ratio_one_then_improves(small):
    policy, meta = small
    adapted = ppo_adapt(policy, policy.parameters_dict(), meta.pre, InnerSpec(), epochs=3)
    stats = ppo_inner_step(policy, torch.optim.Adam(policy.parameters(), 1e-3), meta, adapted, epochs=4)
    assert stats["ratio_deviation_first"] == 0.0 and stats["kl_first"] == 0.0
    assert stats["objective_last"] > stats["objective_first"]


# --- the meta-gradient through the inner step, float64 ---------------------------------------------
LR = 0.5


@pytest.fixture(scope="module")
def tiny():
    policy, meta = tiny_meta_batch((3,), 6, 2, 3, torch.float64)
    theta = {n: p.detach().clone() for n, p in policy.named_parameters()}
    adapted = InnerSpec(lr=LR, estimator="naive").adapt_detached(policy, theta, meta.pre)
    with torch.no_grad():
        old = post_log_probs(policy, adapted, meta.post)
    return policy, meta, theta, old


def _objective(policy, meta, old, flat, like, estimator, create_graph):
    """The ProMP clipped objective as a function of the flat meta-parameters."""
    adapted = InnerSpec(lr=LR, estimator=estimator).adapt(policy, unflatten(flat, like), meta.pre, create_graph=create_graph)
    return clipped_objective(post_log_probs(policy, adapted, meta.post), old, meta.post_advantages, meta.post.mask, CLIP)


def _autograd(tiny, estimator):
    policy, meta, theta, old = tiny
    flat = flatten(theta).clone().requires_grad_(True)
    return torch.autograd.grad(_objective(policy, meta, old, flat, theta, estimator, True), flat)[0]


def _inner_map(policy, meta, theta, flat):
    """theta -> theta'_i(theta) for every task, flattened: (P,) -> (T * P,)."""
    adapted = InnerSpec(lr=LR, estimator="naive").adapt(policy, unflatten(flat, theta), meta.pre, create_graph=False)
    return torch.cat([torch.cat([v[i].reshape(-1) for v in adapted.values()]) for i in range(meta.pre.num_tasks)])


def _central_differences(fn, flat, eps=1e-6):
    columns = []
    for j in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[j] = eps
        columns.append((fn(flat + e) - fn(flat - e)) / (2 * eps))
    return torch.stack(columns, dim=-1)


def test_promp_naive_meta_gradient_matches_finite_differences(tiny):
    policy, meta, theta, old = tiny
    flat = flatten(theta).clone()
    numeric = _central_differences(lambda f: _objective(policy, meta, old, f, theta, "naive", False).detach(), flat)
    torch.testing.assert_close(_autograd(tiny, "naive"), numeric, rtol=1e-5, atol=1e-8)


def test_promp_lvc_meta_gradient_matches_the_explicit_hessian_reference(tiny):
    """LVC differentiates theta'(theta) = theta + lr grad L(theta) with the Jacobian
    I + lr (sum_t w_t grad^2 log pi_t) + lr sum_t w_t grad log pi_t grad log pi_t^T,
    where w_t = dL/d log pi_t: the finite-difference Jacobian of the numeric map (first two terms) plus the
    score outer-product term (H1 of Rothfuss et al.) that no estimator-free finite difference can see."""
    policy, meta, theta, old = tiny
    pre, flat = meta.pre, flatten(theta).clone()
    num_tasks, size = pre.num_tasks, flat.numel()
    jacobian = _central_differences(lambda f: _inner_map(policy, meta, theta, f), flat)  # (T*P, P)
    # u_i = gradient of the outer objective with respect to theta'_i, at theta'_i(theta)
    adapted = {k: v.clone().requires_grad_(True) for k, v in
               InnerSpec(lr=LR, estimator="naive").adapt_detached(policy, theta, pre).items()}
    outer = clipped_objective(post_log_probs(policy, adapted, meta.post), old, meta.post_advantages, meta.post.mask, CLIP)
    grads = torch.autograd.grad(outer, list(adapted.values()))
    u = torch.stack([torch.cat([g[i].reshape(-1) for g in grads]) for i in range(num_tasks)])  # (T, P)
    # w_t: the inner surrogate's weight on each log-probability (adapt_policy's documented advantages)
    values = LinearFeatureBaseline().fit(pre, gae(pre.rewards, torch.zeros_like(pre.rewards), pre.mask, 0.99, 1.0)).predict(pre)
    log_probs = lambda f: policy.distribution(unflatten(f, theta), pre.observations).log_prob(pre.actions)  # (H, T, B)
    x = log_probs(flat).detach().requires_grad_(True)
    surrogate = (inner_surrogate("lvc", x, pre.rewards, pre.mask, gamma=0.99, values=values, normalize=True)
                 / mean_episode_length(pre.mask)).sum()
    w = torch.autograd.grad(surrogate, x)[0]  # (H, T, B)
    scores = torch.autograd.functional.jacobian(log_probs, flat)  # (H, T, B, P)
    # sanity: the numeric inner step is theta + lr sum_t w_t grad log pi_t
    step = LR * torch.einsum("htb,htbp->tp", w, scores)
    torch.testing.assert_close(_inner_map(policy, meta, theta, flat).view(num_tasks, size) - flat, step)
    g_u = torch.einsum("htbp,tp->htb", scores, u)  # grad log pi_t . u_i
    reference = jacobian.T @ u.reshape(-1) + LR * torch.einsum("htb,htbp->p", w * g_u, scores)
    lvc = _autograd(tiny, "lvc")
    torch.testing.assert_close(lvc, reference, rtol=1e-5, atol=1e-8)
    # the outer-product term matters here, so swapping the estimator would fail this test
    assert float((lvc - _autograd(tiny, "naive")).norm()) > 1e-3 * float(lvc.norm())


def test_kl_stop_shrinks_the_epoch_that_overshoots_and_ends_the_update(small):
    policy, meta = small
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    inner = InnerSpec(estimator="lvc")

    def run(kl_stop):
        policy.load_state_dict(start)
        optimizer = torch.optim.Adam(policy.parameters(), 3e-2)
        stats = promp_step(policy, optimizer, meta, inner, epochs=4, kl_stop=kl_stop)
        return stats, {k: v.clone() for k, v in policy.state_dict().items()}, optimizer

    free, free_params, _ = run(None)
    assert free["epochs_kept"] == 4.0
    loose, loose_params, _ = run(1e9)  # never reached: the same update as without kl_stop
    assert all(torch.equal(loose_params[k], free_params[k]) for k in free_params)
    tight, tight_params, optimizer = run(1e-12)  # even 1/1024 of the first step overshoots: undone, nothing moves
    assert tight["epochs_kept"] == 0.0
    assert all(torch.equal(tight_params[k], start[k]) for k in start)
    assert all(not s for s in optimizer.state_dict()["state"].values())  # Adam's state is rolled back too
    policy.load_state_dict(start)
    with torch.no_grad():
        before = tuple(r.detach() for r in policy.raw_outputs(None, meta.pre.observations))
    policy.load_state_dict(free_params)
    with torch.no_grad():
        full_kl = float(pre_update_kl(policy, before, meta.pre))
    capped, capped_params, _ = run(full_kl / 2)  # stops part-way (a shrunk step); the KL it keeps is under the bound
    policy.load_state_dict(capped_params)
    with torch.no_grad():
        kept_kl = float(pre_update_kl(policy, before, meta.pre))
    assert 0 < capped["epochs_kept"] < 4 and kept_kl <= full_kl / 2
    assert "objective_first" in tight and "kl_first" in tight  # statistics of the epoch that was undone are still reported


def test_post_kl_stop_bounds_how_far_the_update_moves_the_adapted_policies(small):
    policy, meta = small
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    inner = InnerSpec(estimator="lvc")

    def run(**guards):
        policy.load_state_dict(start)
        optimizer = torch.optim.Adam(policy.parameters(), 3e-2)
        stats = promp_step(policy, optimizer, meta, inner, epochs=4, **guards)
        return stats, {k: v.clone() for k, v in policy.state_dict().items()}

    free, free_params = run()
    assert "post_kl" not in free
    loose, loose_params = run(post_kl_stop=1e9)  # never reached: the same update, and its post-update KL reported
    assert loose["epochs_kept"] == 4.0 and loose["post_kl"] > 0.0
    assert all(torch.equal(loose_params[k], free_params[k]) for k in free_params)
    old_raw = tuple(r.detach() for r in policy.raw_outputs(inner.adapt_detached(policy, _as_params(start), meta.pre), meta.post.observations, task_dim=1))
    adapted = inner.adapt_detached(policy, _as_params(free_params), meta.pre)
    torch.testing.assert_close(torch.tensor(loose["post_kl"]), post_update_kl(policy, old_raw, adapted, meta.post).detach())
    capped, _ = run(post_kl_stop=loose["post_kl"] / 2)  # stops part-way, within the bound
    assert 0 < capped["epochs_kept"] < 4 and capped["post_kl"] <= loose["post_kl"] / 2
    both, _ = run(kl_stop=1e9, post_kl_stop=loose["post_kl"] / 2)  # a loose pre-update bound leaves the post-update one in charge
    assert both["epochs_kept"] == capped["epochs_kept"]
    tight, tight_params = run(post_kl_stop=1e-12)  # undone: nothing moves
    assert tight["epochs_kept"] == 0.0 and tight["post_kl"] == 0.0
    assert all(torch.equal(tight_params[k], start[k]) for k in start)


def _as_params(state):
    return {k: v.detach() for k, v in state.items()}


def test_shrink_step_to_kl_halves_the_step_until_within_the_bound():
    start = {"w": torch.zeros(3)}
    direction = torch.tensor([1.0, -2.0, 0.5])

    def moved(bound):
        params = {"w": direction.clone()}
        kept = shrink_step_to_kl(params, start, lambda: float((params["w"] ** 2).sum()), bound)  # "KL" = |w|^2 = 5.25 f^2
        return kept, params["w"]

    kept, w = moved(10.0)  # within the bound: untouched
    assert kept == 1.0 and torch.equal(w, direction)
    kept, w = moved(0.5)  # 5.25/4 > 0.5 >= 5.25/16: a quarter of the step
    assert kept == 0.25 and torch.equal(w, 0.25 * direction)
    kept, w = moved(1e-9)  # 5.25 / 1024^2 > 1e-9: undone
    assert kept == 0.0 and torch.equal(w, torch.zeros(3))


def test_promp_every_step_scores_the_episodes_after_each_inner_step():
    """With every_step the first epoch's step is alpha grad of (J^clip_1(theta^(1)) + J^clip_2(theta^(2))) / 2, each on the
    episodes sampled after that inner step (exact, with plain SGD); without it, alpha grad J^clip_2 alone."""
    torch.manual_seed(0)
    sampler = MetaSampler("navigation2d", horizon=10)
    inner = InnerSpec(lr=0.5, estimator="lvc", later_lr=0.25)
    tasks = sampler.sample_tasks(3, rng=0)

    def fresh():
        torch.manual_seed(0)
        return GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-1.0)

    policy = fresh()
    pre = sampler.sample(policy, tasks, 5, seed=1)
    first = inner.adapt_detached(policy, policy.parameters_dict(), pre)
    mid = sampler.sample(policy, tasks, 5, params=first, seed=3)
    post = sampler.sample(policy, tasks, 5, params=inner.adapt_detached(policy, first, mid, lr=0.25, per_task_params=True), seed=2)
    meta = MetaBatch.build(pre, post, policy, gamma=0.99, mids=(mid,), score_mids=True)
    assert [batch for batch, _ in meta.scored(every_step=True)] == [mid, post] and [b for b, _ in meta.scored()] == [post]
    with pytest.raises(ValueError, match="score_mids=True"):
        MetaBatch.build(pre, post, policy, gamma=0.99, mids=(mid,)).scored(every_step=True)

    def step_taken(every_step: bool) -> torch.Tensor:
        policy = fresh()
        before = flatten(policy.parameters_dict()).detach().clone()
        promp_step(policy, torch.optim.SGD(policy.parameters(), lr=1.0), meta, inner, epochs=1, kl_coef=0.0, every_step=every_step)
        return flatten(policy.parameters_dict()).detach() - before

    def expected(stages: list[int]) -> torch.Tensor:  # the gradient of the mean clipped objective over the stages, by hand
        policy = fresh()
        params = policy.parameters_dict()
        path = inner.adapt_meta_path(policy, params, meta, create_graph=True)
        scored = meta.scored(every_step=True)
        total = 0.0
        for k in stages:
            batch, advantages = scored[k]
            log_probs = post_log_probs(policy, path[k], batch)
            total = total + clipped_objective(log_probs, log_probs.detach(), advantages, batch.mask, CLIP)
        return flatten(dict(zip(params, torch.autograd.grad(total / len(stages), list(params.values()))))).detach()

    torch.testing.assert_close(step_taken(True), expected([0, 1]), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(step_taken(False), expected([1]), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(step_taken(True), step_taken(False), atol=1e-4)  # the step-1 episodes change the update
