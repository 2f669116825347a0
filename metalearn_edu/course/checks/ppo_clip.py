"""Graded check for notebook 04, question 3: the PPO clipped loss.

``ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip)`` = −mean_b Σ_t m_t min(ρA, clip(ρ, 1−ε, 1+ε)A)
with ρ = exp(log_probs − old_log_probs), compared with ``rl.objectives.ppo_clip_loss`` on the seeded inputs of
:mod:`metalearn_edu.course.checks.rl_data`. :func:`clipped_terms` (the per-step term and its usual mistakes)
is shared with the ProMP check of notebook 06.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import diagnose
from metalearn_edu.course.checks.rl_data import ATOL, HINT_MASK, RTOL, call_student, data_label, expect_tensor, rollout
from metalearn_edu.course.feedback import CheckFailed, passed
from metalearn_edu.rl import objectives as reference_objectives

__all__ = ["check_ppo_clip_loss", "clipped_terms"]


def clipped_terms(rho: Tensor, adv: Tensor, clip: float, combine: str = "min") -> Tensor:
    """Per step min(ρA, clip(ρ, 1−ε, 1+ε)A) (``combine="min"``), or one of the usual mistakes in its place.

    ``combine``: "clipped" (clipped term only), "unclipped", "max", "min_ratio" (min of the ratios, times A),
    "upper_only" / "lower_only" (the ratio clipped on one side only). Shared by the PPO and ProMP checks.
    """
    clipped = torch.clamp(rho, 1.0 - clip, 1.0 + clip)
    return {
        "min": torch.minimum(rho * adv, clipped * adv),
        "max": torch.maximum(rho * adv, clipped * adv),
        "clipped": clipped * adv,
        "unclipped": rho * adv,
        "min_ratio": torch.minimum(rho, clipped) * adv,
        "upper_only": torch.minimum(rho * adv, torch.clamp(rho, max=1.0 + clip) * adv),
        "lower_only": torch.minimum(rho * adv, torch.clamp(rho, min=1.0 - clip) * adv),
    }[combine]


def _ppo_variant(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: float, *,
                 use_mask: bool = True, combine: str = "min", ratio: str = "exp", sign: float = -1.0,
                 reduction: str = "episodes") -> Tensor:
    """The PPO loss with one deliberate change, to recognise a common mistake.

    ``combine``: "min" (right), "clipped" (clipped term only), "unclipped", "max", "min_ratio" (min of the ratios).
    ``ratio``: "exp" (right), "log" (the log-ratio itself), "inverse" (π_old / π).
    ``reduction``: "episodes" (sum over time, mean over episodes: right), "steps" (mean over valid steps),
    "sum" (sum over time and episodes).
    """
    m = mask if use_mask else torch.ones_like(mask)
    lp, old, adv = log_probs * m, old_log_probs * m, advantages * m
    rho = {"exp": torch.exp(lp - old), "log": lp - old, "inverse": torch.exp(old - lp)}[ratio]
    per_step = clipped_terms(rho, adv, clip, combine) * m
    dims = (0, -1)
    if reduction == "episodes":
        value = per_step.sum(0).mean(-1)
    elif reduction == "steps":
        value = per_step.sum(dims) / m.sum(dims).clamp_min(1.0)
    else:
        value = per_step.sum(dims)
    return sign * value


def check_ppo_clip_loss(ppo_clip_loss: Callable[..., Tensor], *, seed: int = 0, clip: float = 0.2, horizon: int = 6,
                        batch: Sequence[int] = (2, 4)) -> None:
    """``ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip)`` = −mean_b Σ_t m_t min(ρA, clip(ρ)A).

    Compared with ``rl.objectives.ppo_clip_loss``: the value (per task, shape (T,)), the gradient with
    respect to ``log_probs``, and that no gradient reaches ``old_log_probs`` or ``advantages`` (they are
    data collected with the old policy: constants).
    """
    for padding in ("zeros", "garbage"):
        data = rollout(seed, horizon, batch, padding)
        mask = data["mask"]
        log_probs = data["log_probs"].clone().requires_grad_(True)
        old_log_probs = data["old_log_probs"].clone().requires_grad_(True)
        advantages = data["advantages"].clone().requires_grad_(True)
        out = call_student(ppo_clip_loss, "ppo_clip_loss", log_probs, old_log_probs, advantages, mask.clone(), clip)
        label = f"ppo_clip_loss(..., clip={clip}) on {data_label(padding)}"
        expected_shape = mask.sum(0).mean(-1)
        expect_tensor(label, out, expected_shape,
                      hint="one loss per task: sum over time (dim 0), then mean over episodes (the last dim): "
                           "(H, T, B) -> (T,)")
        reference = reference_objectives.ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip)
        variant = lambda **change: _ppo_variant(log_probs.detach(), old_log_probs.detach(), advantages.detach(),  # noqa: E731
                                               mask, clip, **change)
        mistakes = [
            (variant(sign=1.0), "wrong sign: this is the clipped objective, which PPO maximises; the loss to minimise "
                                "is its negative"),
            (variant(combine="clipped"), "only the clipped term was used: PPO takes min(ρA, clip(ρ, 1−ε, 1+ε)A), so "
                                         "that a ratio that moved the wrong way is not clipped (the bound is pessimistic)"),
            (variant(combine="unclipped"), "the ratio was never clipped: use torch.clamp(ratio, 1 − clip, 1 + clip) "
                                           "and the min of both terms"),
            (variant(combine="min_ratio"), "the min was taken of the ratios, then multiplied by A: take the min of "
                                           "the two PRODUCTS ρA and clip(ρ)A (when A < 0 the order flips)"),
            (variant(combine="max"), "max instead of min: PPO keeps the smaller (pessimistic) of ρA and clip(ρ)A"),
            (variant(ratio="log"), "the log-ratio was used as the ratio: ρ = exp(log π − log π_old)"),
            (variant(ratio="inverse"), "the ratio is upside down: ρ = π/π_old = exp(log_probs − old_log_probs)"),
            (variant(reduction="steps"), "reduction: sum over time (dim 0), then the mean over episodes (last dim), "
                                         "not the mean over all valid steps"),
            (variant(reduction="sum"), "reduction: sum over time, then the MEAN over episodes (last dim), not the sum"),
            (variant(use_mask=False), HINT_MASK.split(":")[0] + ": multiply each step's term by mask (padded steps "
                                                               "contribute nothing)"),
        ]
        diagnose(label, out, reference, mistakes, atol=ATOL, rtol=RTOL,
                 hint="ratio = exp(log_probs − old_log_probs); per step min(ratio·A, clamp(ratio, 1−clip, 1+clip)·A)·mask; "
                      "then −(sum over dim 0).mean(-1)")

        if not out.requires_grad:
            raise CheckFailed(f"{label}: gradient", expected="a loss that autograd can differentiate with respect to log_probs",
                              got="a tensor with requires_grad=False",
                              hint="do not detach log_probs (or use .item(), torch.no_grad()): the loss must move the policy")
        grads = torch.autograd.grad(out.sum(), (log_probs, old_log_probs, advantages), allow_unused=True)
        (reference_grad,) = torch.autograd.grad(reference.sum(), log_probs)
        got_grad = torch.zeros_like(log_probs) if grads[0] is None else grads[0]
        diagnose(f"{label}: d loss / d log_probs", got_grad, reference_grad, [
            (torch.zeros_like(reference_grad), "the gradient is zero: log_probs was detached on the way to the loss"),
        ], atol=ATOL, rtol=RTOL, hint="the gradient flows through the ratio only where it is not clipped: build the "
                                      "loss from log_probs with torch operations (exp, clamp, minimum)")
        for name, grad in (("old_log_probs", grads[1]), ("advantages", grads[2])):
            if grad is not None and grad.abs().max() > 0:
                raise CheckFailed(f"{label}: d loss / d {name}", expected="no gradient (a constant)",
                                  got=f"a nonzero gradient (max |.| {grad.abs().max().item():.3g})",
                                  hint=f"{name} are data collected with the old policy: use {name}.detach() so that "
                                       "the loss moves the policy only through log_probs")
    passed(f"PPO clipped loss (clip={clip}) matches: value per task, gradient, constants detached")
