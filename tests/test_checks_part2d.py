"""The graded checks of notebook 06 (PPO-MAML) accept correct answers and name the usual mistakes.

For each check: a correct implementation (written here independently of the library, the way a student
would) passes, also with other seeds, sizes and coefficients; specific wrong ones (the KL direction
swapped, the mask ignored or the padding counted, a sum instead of a mean, the old policy not detached,
the penalty's sign flipped, the clip on one side only, the η rule running backwards ...) fail with a
hint that names the mistake; a blank answer's NotImplementedError propagates; the global random state
is left alone. The checks' data and the library agree with the real ProMP step (``rl.ppo_maml``).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from metalearn_edu.course.checks import ppo_maml as checks
from check_helpers import blank, fails


# ------------------------------------------------------------------------------------------------
# Q1: the Gaussian KL penalty


def per_step_kl(old_mean, old_log_std, new_mean, new_log_std):
    old_mean, old_log_std = old_mean.detach(), old_log_std.detach()
    per_dim = (new_log_std - old_log_std
               + (torch.exp(2 * old_log_std) + (old_mean - new_mean) ** 2) / (2 * torch.exp(2 * new_log_std)) - 0.5)
    return per_dim.sum(-1)


def gaussian_kl(old_mean, old_log_std, new_mean, new_log_std, mask):
    kl = per_step_kl(old_mean, old_log_std, new_mean, new_log_std)
    kl = torch.where(mask > 0, kl, torch.zeros_like(kl))
    return (kl * mask).sum(dim=(0, 2)) / mask.sum(dim=(0, 2))


def test_gaussian_kl_passes(capsys):
    checks.check_gaussian_kl(gaussian_kl)
    checks.check_gaussian_kl(gaussian_kl, seed=3, horizon=9, batch=(2, 5), act_dim=1)
    checks.check_gaussian_kl(gaussian_kl, seed=4, horizon=4, batch=(5, 2), act_dim=3)
    assert "✔" in capsys.readouterr().out


def test_gaussian_kl_with_torch_distributions_passes():
    def with_distributions(old_mean, old_log_std, new_mean, new_log_std, mask):
        old = torch.distributions.Normal(old_mean.detach(), old_log_std.detach().exp())
        new = torch.distributions.Normal(new_mean, new_log_std.exp())
        kl = torch.distributions.kl_divergence(old, new).sum(-1) * mask
        return kl.nan_to_num().sum((0, 2)) / mask.sum((0, 2))

    checks.check_gaussian_kl(with_distributions)


def test_gaussian_kl_mistakes():
    def swapped(m0, s0, m1, s1, mask):
        return gaussian_kl(m1, s1, m0.detach(), s0.detach(), mask).detach() + 0 * (m1.sum() + s1.sum())

    def no_mask(m0, s0, m1, s1, mask):
        return per_step_kl(m0, s0, m1, s1).mean(dim=(0, 2))

    def padding_counted(m0, s0, m1, s1, mask):
        return (per_step_kl(m0, s0, m1, s1) * mask).sum(dim=(0, 2)) / (mask.shape[0] * mask.shape[2])

    def summed(m0, s0, m1, s1, mask):
        return (per_step_kl(m0, s0, m1, s1) * mask).sum(dim=(0, 2))

    def episode_means(m0, s0, m1, s1, mask):
        return ((per_step_kl(m0, s0, m1, s1) * mask).sum(0) / mask.sum(0)).mean(-1)

    def action_mean(m0, s0, m1, s1, mask):
        return gaussian_kl(m0, s0, m1, s1, mask) / m0.shape[-1]

    def no_half(m0, s0, m1, s1, mask):
        return gaussian_kl(m0, s0, m1, s1, mask) + 0.5 * m0.shape[-1]

    def std_as_variance(m0, s0, m1, s1, mask):
        per_dim = s1 - s0.detach() + (torch.exp(s0.detach()) + (m0.detach() - m1) ** 2) / (2 * torch.exp(s1)) - 0.5
        return (per_dim.sum(-1) * mask).sum((0, 2)) / mask.sum((0, 2))

    def not_detached(m0, s0, m1, s1, mask):
        per_dim = s1 - s0 + (torch.exp(2 * s0) + (m0 - m1) ** 2) / (2 * torch.exp(2 * s1)) - 0.5
        return (per_dim.sum(-1) * mask).sum((0, 2)) / mask.sum((0, 2))

    fails(checks.check_gaussian_kl, swapped, "direction is swapped")
    fails(checks.check_gaussian_kl, no_mask, "the mask was ignored")
    fails(checks.check_gaussian_kl, padding_counted, "still counted in the denominator")
    fails(checks.check_gaussian_kl, summed, "sum instead of mean")
    fails(checks.check_gaussian_kl, episode_means, "per-episode means")
    fails(checks.check_gaussian_kl, action_mean, "ADD")
    fails(checks.check_gaussian_kl, no_half, "−1/2 per action dimension is missing")
    fails(checks.check_gaussian_kl, std_as_variance, "exp(2·log σ)")
    fails(checks.check_gaussian_kl, not_detached, "use old_mean.detach()")
    fails(checks.check_gaussian_kl, lambda *a: gaussian_kl(*a).detach(), "requires_grad=False")
    fails(checks.check_gaussian_kl, lambda *a: gaussian_kl(*a).mean(), "shape")
    fails(checks.check_gaussian_kl, lambda *a: gaussian_kl(*a).float(), "dtype")
    fails(checks.check_gaussian_kl, lambda *a: None, "return")
    fails(checks.check_gaussian_kl, lambda *a: a[0][:, :, :, 0, 7], "calling gaussian_kl")
    with pytest.raises(NotImplementedError):
        checks.check_gaussian_kl(blank)


def test_gaussian_kl_hand_case_names_the_direction():
    # the hand-sized case alone catches a swapped KL before the random data does
    def swapped(m0, s0, m1, s1, mask):
        return gaussian_kl(m1.detach(), s1.detach(), m0, s0, mask)

    message = fails(checks.check_gaussian_kl, swapped)
    assert "hand-sized case" in message


# ------------------------------------------------------------------------------------------------
# Q2: the ProMP outer objective


def promp_objective(log_probs, old_log_probs, advantages, mask, kl, clip, kl_coef):
    ratio = torch.exp(log_probs - old_log_probs.detach())
    adv = advantages.detach()
    per_step = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    per_step = torch.where(mask > 0, per_step, torch.zeros_like(per_step))
    per_task = per_step.sum(dim=(0, 2)) / mask.sum(dim=(0, 2))
    return per_task.mean() - kl_coef * kl.mean()


def test_promp_objective_passes(capsys):
    checks.check_promp_objective(promp_objective)
    checks.check_promp_objective(promp_objective, seed=5, clip=0.2, kl_coef=5e-4, horizon=10, batch=(4, 3))
    checks.check_promp_objective(promp_objective, seed=6, clip=0.1, kl_coef=2.0, horizon=3, batch=(2, 6))
    assert "✔" in capsys.readouterr().out


def test_promp_objective_mistakes():
    def variant(*, combine="min", reduction="task", sign=-1.0, detach_old=True, mask_it=True, kl_fn=torch.mean,
                ratio_sign=1.0, coef=True, overall=1.0, detach_kl=False):
        def fn(log_probs, old_log_probs, advantages, mask, kl, clip, kl_coef):
            old = old_log_probs.detach() if detach_old else old_log_probs
            m = mask if mask_it else torch.ones_like(mask)
            ratio = torch.exp(ratio_sign * (log_probs - old))
            adv = advantages.detach()
            clipped = {"both": torch.clamp(ratio, 1 - clip, 1 + clip), "upper": torch.clamp(ratio, max=1 + clip),
                       "lower": torch.clamp(ratio, min=1 - clip)}
            per_step = {
                "min": torch.minimum(ratio * adv, clipped["both"] * adv),
                "max": torch.maximum(ratio * adv, clipped["both"] * adv),
                "clipped": clipped["both"] * adv,
                "unclipped": ratio * adv,
                "upper": torch.minimum(ratio * adv, clipped["upper"] * adv),
                "lower": torch.minimum(ratio * adv, clipped["lower"] * adv),
            }[combine]
            per_step = torch.where(m > 0, per_step, torch.zeros_like(per_step))
            if reduction == "task":
                surrogate = (per_step.sum((0, 2)) / m.sum((0, 2))).mean()
            elif reduction == "task_sum":
                surrogate = (per_step.sum((0, 2)) / m.sum((0, 2))).sum()
            elif reduction == "pooled":
                surrogate = per_step.sum() / m.sum()
            elif reduction == "episodes":
                surrogate = per_step.sum(0).mean(-1).mean()
            else:  # padding counted
                surrogate = (per_step.sum((0, 2)) / (m.shape[0] * m.shape[2])).mean()
            penalty = kl_fn(kl.detach() if detach_kl else kl)
            return overall * (surrogate + sign * (kl_coef if coef else 1.0) * penalty)

        return fn

    fails(checks.check_promp_objective, variant(sign=1.0), "wrong sign of the penalty")
    fails(checks.check_promp_objective, variant(overall=-1.0), "this is the loss")
    fails(checks.check_promp_objective, variant(coef=False), "not multiplied by kl_coef")
    fails(checks.check_promp_objective, variant(kl_fn=torch.sum), "summed over tasks")
    fails(checks.check_promp_objective, variant(reduction="task_sum"), "sum instead of mean over tasks")
    fails(checks.check_promp_objective, variant(mask_it=False), "mask was not used at all")
    fails(checks.check_promp_objective, variant(reduction="padding"), "counted")
    fails(checks.check_promp_objective, variant(reduction="episodes"), "not a per-step average")
    fails(checks.check_promp_objective, variant(reduction="pooled"), "pooled")
    fails(checks.check_promp_objective, variant(combine="max"), "max instead of min")
    fails(checks.check_promp_objective, variant(combine="clipped"), "only the clipped term")
    fails(checks.check_promp_objective, variant(combine="unclipped"), "never clipped")
    fails(checks.check_promp_objective, variant(combine="upper"), "no lower bound")
    fails(checks.check_promp_objective, variant(combine="lower"), "no upper bound")
    fails(checks.check_promp_objective, variant(ratio_sign=-1.0), "upside down")
    fails(checks.check_promp_objective, variant(detach_old=False), "missing detach")
    fails(checks.check_promp_objective, variant(detach_kl=True), "no gradient reaches the KL")
    fails(checks.check_promp_objective, lambda *a: promp_objective(*a).detach(), "requires_grad=False")
    fails(checks.check_promp_objective, lambda lp, o, a, m, kl, c, e: promp_objective(lp, o, a, m, kl, c, e).repeat(2), "shape")
    fails(checks.check_promp_objective, lambda *a: None, "return")
    fails(checks.check_promp_objective, lambda *a: a[0][:, :, :, 3], "calling promp_objective")
    with pytest.raises(NotImplementedError):
        checks.check_promp_objective(blank)


def test_promp_objective_hand_case_catches_a_missing_clip():
    def unclipped(log_probs, old_log_probs, advantages, mask, kl, clip, kl_coef):
        per_step = torch.exp(log_probs - old_log_probs.detach()) * advantages * mask
        return (per_step.sum((0, 2)) / mask.sum((0, 2))).mean() - kl_coef * kl.mean()

    assert "hand-sized case" in fails(checks.check_promp_objective, unclipped)


def test_promp_objective_reference_is_the_library_promp_objective():
    """The check's reference J is what ``rl.ppo_maml.ppo_outer_epochs`` maximises, on a real meta-batch."""
    from metalearn_edu.rl.maml_rl import InnerSpec, MetaBatch, post_log_probs
    from metalearn_edu.rl.policies import GaussianMLPPolicy
    from metalearn_edu.rl.ppo_maml import clipped_objective, pre_update_kl
    from metalearn_edu.rl.sampler import MetaSampler

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (16, 16), init_log_std=-1.0)
    with MetaSampler("navigation2d", horizon=20) as sampler:
        tasks = sampler.sample_tasks(3, rng=0)
        pre = sampler.sample(policy, tasks, 4, seed=0)
        inner = InnerSpec(estimator="lvc")
        adapted = inner.adapt_detached(policy, policy.parameters_dict(), pre)
        post = sampler.sample(policy, tasks, 4, params=adapted, seed=1)
    meta = MetaBatch.build(pre, post, policy, gamma=0.99)
    old_raw = tuple(r.detach() for r in policy.raw_outputs(None, pre.observations))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    log_probs = post_log_probs(policy, inner.adapt(policy, policy.parameters_dict(), pre, create_graph=True), post)
    old_log_probs = post_log_probs(policy, adapted, post).detach()
    new_raw = policy.raw_outputs(None, pre.observations)
    kl = gaussian_kl(old_raw[0], old_raw[1], new_raw[0], new_raw[1], pre.mask)
    ours = promp_objective(log_probs, old_log_probs, meta.post_advantages, post.mask, kl, 0.3, 0.1)
    library = clipped_objective(log_probs, old_log_probs, meta.post_advantages, post.mask, 0.3) - 0.1 * pre_update_kl(policy, old_raw, pre)
    torch.testing.assert_close(ours, library)


# ------------------------------------------------------------------------------------------------
# Q3: the KL-coefficient rule


def adapt_kl_coef(kl_coef, kl, target):
    if kl > 1.5 * target:
        return kl_coef * 2
    if kl < target / 1.5:
        return kl_coef / 2
    return kl_coef


def test_adapt_kl_coef_passes(capsys):
    checks.check_adapt_kl_coef(adapt_kl_coef)
    checks.check_adapt_kl_coef(lambda c, kl, t: torch.tensor(adapt_kl_coef(c, kl, t), dtype=torch.float64))  # 0-dim tensor
    assert "✔" in capsys.readouterr().out
    assert checks.reference_adapt_kl_coef(1.0, 0.1, 0.01) == 2.0
    assert checks.reference_adapt_kl_coef(1.0, 0.001, 0.01) == 0.5
    assert checks.reference_adapt_kl_coef(1.0, 0.012, 0.01) == 1.0


def test_adapt_kl_coef_mistakes():
    def rule(up, down, high, low):
        def fn(coef, kl, target):
            if kl > high(target):
                return coef * up
            if kl < low(target):
                return coef * down
            return coef

        return fn

    fails(checks.check_adapt_kl_coef, rule(0.5, 2.0, lambda t: 1.5 * t, lambda t: t / 1.5), "wrong way")
    fails(checks.check_adapt_kl_coef, rule(2.0, 0.5, lambda t: t, lambda t: t), "no tolerance band")
    fails(checks.check_adapt_kl_coef, rule(1.5, 1 / 1.5, lambda t: 1.5 * t, lambda t: t / 1.5), "not the factor of η")
    fails(checks.check_adapt_kl_coef, rule(2.0, 0.5, lambda t: t + 1.5, lambda t: t - 1.5), "multiplicative")
    fails(checks.check_adapt_kl_coef, rule(2.0, 0.5, lambda t: t / 1.5, lambda t: t / 1.5), "upper threshold")
    fails(checks.check_adapt_kl_coef, rule(2.0, 0.5, lambda t: 1.5 * t, lambda t: 1.5 * t), "lower threshold")
    fails(checks.check_adapt_kl_coef, rule(2.0, 1.0, lambda t: 1.5 * t, lambda t: t / 1.5), "halve it below")
    fails(checks.check_adapt_kl_coef, lambda c, kl, t: None, "return")
    fails(checks.check_adapt_kl_coef, lambda c, kl, t: "2x", "a number")
    fails(checks.check_adapt_kl_coef, lambda c, kl, t: c / 0 if kl > t else c, "calling adapt_kl_coef")
    with pytest.raises(NotImplementedError):
        checks.check_adapt_kl_coef(blank)


# ------------------------------------------------------------------------------------------------


def test_checks_leave_the_global_random_state_alone():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    checks.check_gaussian_kl(gaussian_kl)
    checks.check_promp_objective(promp_objective)
    checks.check_adapt_kl_coef(adapt_kl_coef)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == before
