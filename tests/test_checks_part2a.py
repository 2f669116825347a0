"""The graded checks of notebooks 04 and 05 accept correct answers and reject the usual mistakes.

For each check: a correct implementation (written here independently of the library, the way a student
would) passes, also with other seeds and parameters; specific wrong ones (the mask forgotten, the sum
running forwards in time, λ dropped, the clip without the min, MagicBox on each step instead of the
cumulative log-probabilities, the naive surrogate instead of LVC, a descent step, a missing
create_graph ...) raise CheckFailed with a hint that names the mistake; a blank answer's
NotImplementedError propagates; the global random state is left alone.
"""

from __future__ import annotations


import pytest
import torch

from metalearn_edu.course.checks import policy_gradients as pg
from metalearn_edu.course.checks import ppo_clip, rl_data
from metalearn_edu.course.checks import rl_meta_gradients as mg
from metalearn_edu.course.feedback import CheckFailed
from metalearn_edu.envs.tabular import TabularSoftmaxPolicy, sample_tabular_episodes
from metalearn_edu.rl.exact import trajectory_surrogate
from metalearn_edu.rl.inner import adapt_policy
from check_helpers import assert_leaves_random_state, blank, fails


# ------------------------------------------------------------------------------------------------
# notebook 04: discounted returns


def discounted_returns(rewards, mask, gamma):
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = mask[t] * (rewards[t] + gamma * running)
        returns[t] = running
    return returns


def test_discounted_returns_passes(capsys):
    pg.check_discounted_returns(discounted_returns)
    pg.check_discounted_returns(discounted_returns, seed=3, gamma=1.0, horizon=5, batch=(4,))
    pg.check_discounted_returns(discounted_returns, seed=4, gamma=0.0)
    assert "✔" in capsys.readouterr().out


def test_discounted_returns_mistakes():
    def no_mask(rewards, mask, gamma):
        return discounted_returns(rewards, torch.ones_like(mask), gamma)

    def output_masked(rewards, mask, gamma):
        return discounted_returns(rewards, torch.ones_like(mask), gamma) * mask

    def forwards(rewards, mask, gamma):
        out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
        for t in range(rewards.shape[0]):
            running = mask[t] * (rewards[t] + gamma * running)
            out[t] = running
        return out

    def from_start(rewards, mask, gamma):
        h = rewards.shape[0]
        weights = gamma ** torch.arange(h, dtype=rewards.dtype).view(h, *([1] * (rewards.dim() - 1)))
        return (rewards * mask * weights).flip(0).cumsum(0).flip(0)

    def excludes_current(rewards, mask, gamma):
        g = discounted_returns(rewards, mask, gamma)
        return torch.cat([g[1:], torch.zeros_like(g[:1])]) * gamma * mask

    fails(pg.check_discounted_returns, no_mask, "not used at all")
    fails(pg.check_discounted_returns, output_masked, "only the output was masked")
    fails(pg.check_discounted_returns, forwards, "forwards in time")
    fails(pg.check_discounted_returns, from_start, "from the episode start")
    fails(pg.check_discounted_returns, lambda r, m, g: discounted_returns(r, m, 1.0), "not discounted")
    fails(pg.check_discounted_returns, lambda r, m, g: discounted_returns(r, m, g)[0:1].expand_as(r) * m, "whole episode")
    fails(pg.check_discounted_returns, excludes_current, "expected")  # close to "off by one", not bit-equal
    fails(pg.check_discounted_returns, lambda r, m, g: discounted_returns(r, m, g).float(), "dtype")
    fails(pg.check_discounted_returns, lambda r, m, g: discounted_returns(r, m, g).sum(-1), "shape")
    fails(pg.check_discounted_returns, lambda r, m, g: None, "return")

    def in_place(rewards, mask, gamma):
        rewards *= mask
        return discounted_returns(rewards, mask, gamma)

    fails(pg.check_discounted_returns, in_place, "in place")
    fails(pg.check_discounted_returns, lambda r, m, g: r[:, 0, 0, 0], "calling discounted_returns")
    with pytest.raises(NotImplementedError):
        pg.check_discounted_returns(blank)


# ------------------------------------------------------------------------------------------------
# notebook 04: GAE


def gae(rewards, values, mask, gamma, lam):
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    next_value = torch.zeros_like(values[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_value - values[t]
        running = mask[t] * (delta + gamma * lam * running)
        advantages[t] = running
        next_value = mask[t] * values[t]
    return advantages


def test_gae_passes_and_agrees_with_its_limits():
    pg.check_gae(gae)
    pg.check_gae(gae, seed=2, gamma=0.99, lam=1.0, horizon=10, batch=(3,))
    pg.check_gae(gae, seed=5, gamma=0.9, lam=0.0)
    generator = torch.Generator().manual_seed(0)
    mask = rl_data.episode_mask(generator, 6, (2, 3))
    rewards = torch.randn(6, 2, 3, generator=generator, dtype=torch.float64) * mask
    values = torch.randn(6, 2, 3, generator=generator, dtype=torch.float64) * mask
    torch.testing.assert_close(gae(rewards, values, mask, 0.9, 1.0), discounted_returns(rewards, mask, 0.9) - values)


def test_gae_mistakes():
    def unmasked_next_value(rewards, values, mask, gamma, lam):
        out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
        for t in reversed(range(rewards.shape[0])):
            next_value = values[t + 1] if t + 1 < rewards.shape[0] else torch.zeros_like(values[0])
            running = mask[t] * (rewards[t] + gamma * next_value - values[t] + gamma * lam * running)
            out[t] = running
        return out

    def td_only(rewards, values, mask, gamma, lam):
        return gae(rewards, values, mask, gamma, 0.0)

    def no_bootstrap(rewards, values, mask, gamma, lam):
        out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
        for t in reversed(range(rewards.shape[0])):
            running = mask[t] * (rewards[t] - values[t] + gamma * lam * running)
            out[t] = running
        return out

    fails(pg.check_gae, unmasked_next_value, "no next state")
    fails(pg.check_gae, lambda r, v, m, g, lam: gae(r, v, torch.ones_like(m), g, lam), "not used at all")
    fails(pg.check_gae, lambda r, v, m, g, lam: gae(r, v, m, g, 1.0), "λ was ignored")
    fails(pg.check_gae, lambda r, v, m, g, lam: discounted_returns(r, m, g) - v * m, "λ was ignored")
    fails(pg.check_gae, td_only, "one-step TD error")
    fails(pg.check_gae, no_bootstrap, "bootstrap")
    fails(pg.check_gae, lambda r, v, m, g, lam: -gae(r, v, m, g, lam), "wrong sign")
    with pytest.raises(NotImplementedError):
        pg.check_gae(blank)


# ------------------------------------------------------------------------------------------------
# notebook 04: PPO clipped loss


def ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip):
    ratio = torch.exp(log_probs - old_log_probs.detach())
    adv = advantages.detach()
    per_step = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv) * mask
    return -per_step.sum(0).mean(-1)


def test_ppo_clip_loss_passes():
    pg.check_ppo_clip_loss(ppo_clip_loss)
    pg.check_ppo_clip_loss(ppo_clip_loss, seed=1, clip=0.3, horizon=9, batch=(5,))


def test_ppo_clip_loss_mistakes():
    def variant(**change):
        def loss(lp, old, adv, mask, clip):
            return ppo_clip._ppo_variant(lp, old.detach(), adv.detach(), mask, clip, **change)
        return loss

    def not_detached(lp, old, adv, mask, clip):
        ratio = torch.exp(lp - old)
        return -(torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv) * mask).sum(0).mean(-1)

    fails(pg.check_ppo_clip_loss, lambda *a: -ppo_clip_loss(*a), "wrong sign")
    fails(pg.check_ppo_clip_loss, variant(combine="clipped"), "only the clipped term")
    fails(pg.check_ppo_clip_loss, variant(combine="unclipped"), "never clipped")
    fails(pg.check_ppo_clip_loss, variant(combine="min_ratio"), "PRODUCTS")
    fails(pg.check_ppo_clip_loss, variant(combine="max"), "max instead of min")
    fails(pg.check_ppo_clip_loss, variant(ratio="log"), "log-ratio")
    fails(pg.check_ppo_clip_loss, variant(ratio="inverse"), "upside down")
    fails(pg.check_ppo_clip_loss, variant(reduction="steps"), "mean over all valid steps")
    fails(pg.check_ppo_clip_loss, variant(reduction="sum"), "not the sum")
    fails(pg.check_ppo_clip_loss, variant(use_mask=False), "mask")
    fails(pg.check_ppo_clip_loss, lambda lp, *a: ppo_clip_loss(lp.detach(), *a), "requires_grad=False")
    fails(pg.check_ppo_clip_loss, not_detached, "old_log_probs")
    fails(pg.check_ppo_clip_loss, lambda *a: ppo_clip_loss(*a).mean(), "shape")
    with pytest.raises(NotImplementedError):
        pg.check_ppo_clip_loss(blank)


# ------------------------------------------------------------------------------------------------
# notebook 05: MagicBox


def magic_box(x):
    return torch.exp(x - x.detach())


def test_magic_box():
    mg.check_magic_box(magic_box)
    mg.check_magic_box(magic_box, seed=4, size=3)
    fails(mg.check_magic_box, torch.exp, "exp(x)")
    fails(mg.check_magic_box, lambda x: x - x.detach(), "value is 0")
    fails(mg.check_magic_box, lambda x: torch.ones_like(x), "not connected")
    fails(mg.check_magic_box, lambda x: torch.exp(x.detach() - x), "wrong sign")
    fails(mg.check_magic_box, lambda x: x - x.detach() + 1, "no curvature")
    fails(mg.check_magic_box, lambda x: magic_box(x).float(), "dtype")
    with pytest.raises(NotImplementedError):
        mg.check_magic_box(blank)


# ------------------------------------------------------------------------------------------------
# notebook 05: DiCE and LVC surrogates


def dice_surrogate(log_probs, rewards, mask, gamma):
    h = log_probs.shape[0]
    discounts = (gamma ** torch.arange(h, dtype=log_probs.dtype)).view(h, *([1] * (log_probs.dim() - 1)))
    cumulative = torch.cumsum(log_probs * mask, dim=0)
    return (magic_box(cumulative) * discounts * rewards * mask).sum(0).mean(-1)


def lvc_surrogate(log_probs, advantages, mask):
    ratio = torch.exp(log_probs * mask - (log_probs * mask).detach())
    return (ratio * advantages.detach() * mask).sum(0).mean(-1)


def test_dice_surrogate_passes():
    mg.check_dice_surrogate(dice_surrogate)
    mg.check_dice_surrogate(dice_surrogate, seed=2, gamma=1.0, horizon=4, batch=(5,))


def test_dice_surrogate_mistakes():
    def variant(**change):
        return lambda lp, r, m, g: mg._dice_variant(lp, r, m, g, **change)

    fails(mg.check_dice_surrogate, variant(box="per_step"), "each step's log π_t alone")
    fails(mg.check_dice_surrogate, variant(box="future"), "backwards")
    fails(mg.check_dice_surrogate, variant(box="first_order"), "no second")
    fails(mg.check_dice_surrogate, variant(box="none"), "probability of the trajectory")
    fails(mg.check_dice_surrogate, variant(discount=False), "not discounted")
    fails(mg.check_dice_surrogate, variant(use_mask=False), "mask")
    fails(mg.check_dice_surrogate, variant(reduction="sum"), "not the sum")
    fails(mg.check_dice_surrogate, lambda lp, r, m, g: dice_surrogate(lp.detach(), r, m, g), "no gradient")
    fails(mg.check_dice_surrogate, lambda lp, r, m, g: dice_surrogate(lp, r, m, g).sum(), "shape")
    with pytest.raises(NotImplementedError):
        mg.check_dice_surrogate(blank)


def test_lvc_surrogate_passes():
    mg.check_lvc_surrogate(lvc_surrogate)
    mg.check_lvc_surrogate(lvc_surrogate, seed=3, gamma=1.0, horizon=6, batch=(4,))


def test_lvc_surrogate_mistakes():
    def variant(**change):
        return lambda lp, a, m: mg._lvc_variant(lp, a, m, **change)

    fails(mg.check_lvc_surrogate, variant(form="naive"), "naive surrogate")
    fails(mg.check_lvc_surrogate, variant(form="exp"), "stop-gradient")
    fails(mg.check_lvc_surrogate, variant(form="cumulative"), "log π_t only")
    fails(mg.check_lvc_surrogate, variant(form="first_order"), "no curvature")
    fails(mg.check_lvc_surrogate, variant(use_mask=False), "mask")
    fails(mg.check_lvc_surrogate, variant(reduction="mean"), "SUM over time")
    with pytest.raises(NotImplementedError):
        mg.check_lvc_surrogate(blank)


def test_exact_hessian_check_names_the_terms_an_estimator_keeps():
    # a surrogate that is right on the random data cannot be wrong on the tabular MDP; test the exact
    # comparison directly with the library surrogates standing in for the student's
    with pytest.raises(CheckFailed, match="H1 \\+ H2 \\(LVC\\)"):
        mg._exact_hessian_check("x", trajectory_surrogate("lvc", 0.9), "f", 0, 0.9, "dice")
    with pytest.raises(CheckFailed, match="H2 only"):
        mg._exact_hessian_check("x", trajectory_surrogate("naive", 0.9), "f", 0, 0.9, "lvc")
    mg._exact_hessian_check("x", trajectory_surrogate("dice", 0.9), "f", 0, 0.9, "dice")
    mg._exact_hessian_check("x", trajectory_surrogate("lvc", 0.9), "f", 0, 0.9, "lvc")


# ------------------------------------------------------------------------------------------------
# notebook 05: the inner policy-gradient step


def policy_gradient_step(logits, batch, lr, surrogate):
    log_probs = torch.log_softmax(logits, dim=-1)[batch.observations, batch.actions]
    objective = surrogate(log_probs, batch.rewards, batch.mask).sum()
    (grad,) = torch.autograd.grad(objective, logits, create_graph=True)
    return logits + lr * grad


def test_policy_gradient_step_passes_and_equals_adapt_policy():
    mg.check_policy_gradient_step(policy_gradient_step)
    mg.check_policy_gradient_step(policy_gradient_step, seed=1, estimator="lvc", lr=1.0)
    mg.check_policy_gradient_step(policy_gradient_step, seed=2, estimator="naive", gamma=0.9, episodes=5)
    task, logits = mg.tabular_problem(0)
    batch = sample_tabular_episodes([task], logits, mg.HORIZON, 8, torch.Generator().manual_seed(0))
    theta = logits.clone().requires_grad_(True)
    ours = policy_gradient_step(theta, batch, 0.5, trajectory_surrogate("dice", 0.9))
    library = adapt_policy(TabularSoftmaxPolicy(2, 2), {"logits": theta}, batch, lr=0.5, estimator="dice", gamma=0.9)
    torch.testing.assert_close(ours, library["logits"][0])


def test_policy_gradient_step_mistakes():
    def descent(logits, batch, lr, surrogate):
        return policy_gradient_step(logits, batch, -lr, surrogate)

    def first_order(logits, batch, lr, surrogate):
        log_probs = torch.log_softmax(logits, dim=-1)[batch.observations, batch.actions]
        (grad,) = torch.autograd.grad(surrogate(log_probs, batch.rewards, batch.mask).sum(), logits)
        return logits + lr * grad

    def no_sum(logits, batch, lr, surrogate):
        log_probs = torch.log_softmax(logits, dim=-1)[batch.observations, batch.actions]
        (grad,) = torch.autograd.grad(surrogate(log_probs, batch.rewards, batch.mask) * torch.ones(2, dtype=logits.dtype), logits)
        return logits + lr * grad

    fails(mg.check_policy_gradient_step, descent, "ASCENT")
    fails(mg.check_policy_gradient_step, first_order, "create_graph=True")
    fails(mg.check_policy_gradient_step, lambda *a: policy_gradient_step(*a).detach(), "detached")
    fails(mg.check_policy_gradient_step, lambda theta, *a: theta, "not applied")
    fails(mg.check_policy_gradient_step, no_sum, "calling policy_gradient_step")
    with pytest.raises(NotImplementedError):
        mg.check_policy_gradient_step(blank)


def test_checks_leave_global_random_state_alone():
    assert_leaves_random_state(
        lambda: pg.check_discounted_returns(discounted_returns),
        lambda: pg.check_ppo_clip_loss(ppo_clip_loss),
        lambda: mg.check_dice_surrogate(dice_surrogate),
        lambda: mg.check_policy_gradient_step(policy_gradient_step),
    )