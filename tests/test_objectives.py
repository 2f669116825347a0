"""Surrogates and losses: values, first and second derivatives with respect to the log-probabilities.

Differentiating with respect to the per-step log-probabilities themselves (a leaf tensor) exposes
the structure of each estimator: d L / d log pi_t and d^2 L / d log pi_t d log pi_t'.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Normal

from metalearn_edu.rl.objectives import (
    dice_surrogate,
    kl_divergence,
    lvc_surrogate,
    magic_box,
    mean_episode_length,
    pg_surrogate,
    ppo_clip_loss,
    sampled_kl,
)

H, T, B = 4, 2, 3


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    log_probs = -torch.rand(H, T, B, generator=generator, dtype=torch.float64) * 2.0
    rewards = torch.randn(H, T, B, generator=generator, dtype=torch.float64)
    advantages = torch.randn(H, T, B, generator=generator, dtype=torch.float64)
    mask = torch.ones(H, T, B, dtype=torch.float64)
    mask[2:, 0, 1] = 0.0  # one episode ends after 2 steps
    rewards = rewards * mask
    return log_probs, rewards, advantages, mask


def _grad_and_hessian(fn, log_probs):
    """Gradient (H, T, B) and Hessian (H, T, B, H, T, B) of sum(fn(x)) at x = log_probs."""
    x = log_probs.clone().requires_grad_(True)
    grad = torch.autograd.grad(fn(x).sum(), x)[0]
    hessian = torch.autograd.functional.hessian(lambda y: fn(y).sum(), log_probs)
    return grad, hessian


def test_magic_box_is_one_with_the_gradient_of_its_exponent():
    x = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    value = magic_box(3.0 * x)
    torch.testing.assert_close(value, torch.ones(2, dtype=torch.float64))
    (grad,) = torch.autograd.grad(value.sum(), x)
    torch.testing.assert_close(grad, torch.full((2,), 3.0, dtype=torch.float64))


def test_pg_surrogate_is_mean_over_episodes_of_sum_over_time(data):
    log_probs, _, advantages, mask = data
    value = pg_surrogate(log_probs, advantages, mask)
    assert value.shape == (T,)
    torch.testing.assert_close(value, (log_probs * advantages * mask).sum(0).mean(-1))
    grad, hessian = _grad_and_hessian(lambda x: pg_surrogate(x, advantages, mask), log_probs)
    torch.testing.assert_close(grad, advantages * mask / B)
    assert torch.all(hessian == 0)  # no curvature in log pi: only grad^2 log pi survives


def test_dividing_by_the_mean_episode_length_gives_the_mean_over_valid_steps(data):
    log_probs, _, advantages, mask = data
    lengths = mean_episode_length(mask)
    torch.testing.assert_close(lengths, mask.sum(0).mean(-1))
    per_step_mean = (log_probs * advantages * mask).sum((0, 2)) / mask.sum((0, 2))
    torch.testing.assert_close(pg_surrogate(log_probs, advantages, mask) / lengths, per_step_mean)


def test_lvc_has_the_per_step_score_outer_product_only(data):
    log_probs, _, advantages, mask = data
    value = lvc_surrogate(log_probs, advantages, mask)
    torch.testing.assert_close(value, (advantages * mask).sum(0).mean(-1))
    grad, hessian = _grad_and_hessian(lambda x: lvc_surrogate(x, advantages, mask), log_probs)
    torch.testing.assert_close(grad, advantages * mask / B)
    expected = torch.diag_embed((advantages * mask / B).flatten()).view(H, T, B, H, T, B)
    torch.testing.assert_close(hessian, expected)


@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_dice_value_gradient_and_cross_time_hessian(data, gamma):
    log_probs, rewards, _, mask = data
    discounts = gamma ** torch.arange(H, dtype=torch.float64).view(H, 1, 1)
    weighted = discounts * rewards * mask  # gamma^t r_t
    value = dice_surrogate(log_probs, rewards, mask, gamma)
    torch.testing.assert_close(value, weighted.sum(0).mean(-1))  # the discounted return
    grad, hessian = _grad_and_hessian(lambda x: dice_surrogate(x, rewards, mask, gamma), log_probs)
    reward_to_go = weighted.flip(0).cumsum(0).flip(0)  # sum_{k >= t} gamma^k r_k
    torch.testing.assert_close(grad, reward_to_go * mask / B)
    # d^2 L / d log pi_t d log pi_t' = sum_{k >= max(t, t')} gamma^k r_k / B (same episode only)
    for t in range(H):
        for u in range(H):
            expected = reward_to_go[max(t, u)] * mask[t] * mask[u] / B  # (T, B)
            block = torch.stack(
                [torch.stack([hessian[t, i, b, u, i, b] for b in range(B)]) for i in range(T)]
            )
            torch.testing.assert_close(block, expected)
    assert hessian[0, 0, 0, 1, 0, 1] == 0 and hessian[0, 0, 0, 0, 1, 0] == 0


def test_dice_baseline_term_changes_only_the_first_derivative(data):
    log_probs, rewards, advantages, mask = data
    gamma = 0.9
    baseline = advantages  # any constants
    plain = lambda x: dice_surrogate(x, rewards, mask, gamma)
    with_baseline = lambda x: dice_surrogate(x, rewards, mask, gamma, baseline=baseline)
    torch.testing.assert_close(with_baseline(log_probs), plain(log_probs))
    grad_plain, _ = _grad_and_hessian(plain, log_probs)
    grad_base, _ = _grad_and_hessian(with_baseline, log_probs)
    discounts = gamma ** torch.arange(H, dtype=torch.float64).view(H, 1, 1)
    torch.testing.assert_close(grad_base, grad_plain - discounts * baseline * mask / B)


def test_padded_steps_are_ignored_even_when_not_finite(data):
    log_probs, rewards, advantages, mask = data
    poisoned = log_probs.clone()
    poisoned[mask == 0] = float("nan")
    for fn in (
        lambda x: pg_surrogate(x, advantages, mask),
        lambda x: lvc_surrogate(x, advantages, mask),
        lambda x: dice_surrogate(x, rewards, mask, 0.9),
        lambda x: ppo_clip_loss(x, log_probs, advantages, mask, 0.2),
    ):
        torch.testing.assert_close(fn(poisoned), fn(log_probs))
        x = poisoned.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(fn(x).sum(), x)
        assert torch.isfinite(grad).all() and torch.all(grad[mask == 0] == 0)


def test_ppo_loss_at_the_old_policy_is_minus_the_policy_gradient(data):
    log_probs, _, advantages, mask = data
    loss = ppo_clip_loss(log_probs, log_probs, advantages, mask, clip=0.2)
    torch.testing.assert_close(loss, -(advantages * mask).sum(0).mean(-1))
    grad, _ = _grad_and_hessian(lambda x: ppo_clip_loss(x, log_probs, advantages, mask, 0.2), log_probs)
    grad_pg, _ = _grad_and_hessian(lambda x: pg_surrogate(x, advantages, mask), log_probs)
    torch.testing.assert_close(grad, -grad_pg)


def test_ppo_clip_removes_the_gradient_only_where_the_ratio_left_the_trust_region():
    old = torch.zeros(1, 1, 4, dtype=torch.float64)
    # ratios 1.5, 1.5, 0.5, 1.1 with advantages +, -, -, + and clip 0.2
    new = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.1], dtype=torch.float64)).view(1, 1, 4)
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64).view(1, 1, 4)
    mask = torch.ones(1, 1, 4, dtype=torch.float64)
    x = new.clone().requires_grad_(True)
    loss = ppo_clip_loss(x, old, advantages, mask, clip=0.2)
    torch.testing.assert_close(loss, -torch.tensor([(1.2 - 1.5 - 0.8 + 1.1) / 4], dtype=torch.float64))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    # clipped (gradient 0) for (1.5, +) and (0.5, -); unclipped (-ratio * A / B) otherwise
    expected = torch.tensor([0.0, 1.5 / 4, 0.0, -1.1 / 4], dtype=torch.float64).view(1, 1, 4)
    torch.testing.assert_close(grad, expected)


def test_kl_divergence_matches_the_categorical_formula_on_valid_steps(data):
    generator = torch.Generator().manual_seed(3)
    _, _, _, mask = data
    old_logits = torch.randn(H, T, B, 3, generator=generator, dtype=torch.float64)
    new_logits = torch.randn(H, T, B, 3, generator=generator, dtype=torch.float64)
    kl = kl_divergence(Categorical(logits=old_logits), Categorical(logits=new_logits), mask)
    p, q = old_logits.softmax(-1), new_logits.softmax(-1)
    per_step = (p * (p.log() - q.log())).sum(-1)
    expected = (per_step * mask).sum((0, 2)) / mask.sum((0, 2))
    torch.testing.assert_close(kl, expected)
    same = kl_divergence(Categorical(logits=old_logits), Categorical(logits=old_logits), mask)
    torch.testing.assert_close(same, torch.zeros(T, dtype=torch.float64))


def test_kl_divergence_sums_independent_action_dims():
    mask = torch.ones(2, 1, 3, dtype=torch.float64)
    old = Normal(torch.zeros(2, 1, 3, 2, dtype=torch.float64), torch.ones(2, 1, 3, 2, dtype=torch.float64))
    new = Normal(torch.ones(2, 1, 3, 2, dtype=torch.float64), torch.ones(2, 1, 3, 2, dtype=torch.float64))
    # KL(N(0,1) || N(1,1)) = 1/2 per dim, two dims
    torch.testing.assert_close(kl_divergence(old, new, mask), torch.tensor([1.0], dtype=torch.float64))


def test_sampled_kl_converges_to_the_exact_kl():
    generator = torch.Generator().manual_seed(4)
    old_logits = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    new_logits = torch.tensor([-0.3, 0.4, 0.0], dtype=torch.float64)
    actions = torch.multinomial(old_logits.softmax(-1), 200_000, replacement=True, generator=generator)
    actions = actions.view(1, 1, -1)  # (H=1, T=1, B)
    mask = torch.ones(actions.shape, dtype=torch.float64)
    estimate = sampled_kl(Categorical(logits=new_logits).log_prob(actions),
                          Categorical(logits=old_logits).log_prob(actions), mask)
    exact = kl_divergence(Categorical(logits=old_logits.view(1, 1, 1, 3)),
                          Categorical(logits=new_logits.view(1, 1, 1, 3)), torch.ones(1, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(estimate, exact, atol=0.01, rtol=0.0)


def test_bad_arguments_name_the_argument(data):
    log_probs, rewards, advantages, mask = data
    with pytest.raises(ValueError, match="clip"):
        ppo_clip_loss(log_probs, log_probs, advantages, mask, clip=0.0)
    with pytest.raises(ValueError, match="gamma"):
        dice_surrogate(log_probs, rewards, mask, gamma=-0.1)
    with pytest.raises(ValueError, match="advantages"):
        pg_surrogate(log_probs, advantages[:, :1], mask)
    with pytest.raises(ValueError, match="baseline"):
        dice_surrogate(log_probs, rewards, mask, 0.9, baseline=rewards[:1])
    with pytest.raises(TypeError, match="distribution"):
        kl_divergence(log_probs, log_probs, mask)
