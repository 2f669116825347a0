"""Graded check of notebook 06's Q1, the KL penalty between diagonal Gaussian policies (re-exported by
``checks.ppo_maml``).

The student writes ``gaussian_kl``: KL(π_old ‖ π_new) per task, averaged over the valid steps. The check runs
a hand-sized case with a closed-form answer, then seeded time-major inputs ``(H, T, B, act_dim)`` with zeros
or nonzero numbers after each episode's end, and compares the value and the gradients with
``rl.objectives.kl_divergence`` of two ``Independent(Normal)`` distributions; a wrong answer is compared with
the usual mistakes (the direction swapped, the mask ignored or the padding counted, a sum instead of a mean ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from metalearn_edu.course.checks.diagnosis import diagnose
from metalearn_edu.course.checks.rl_data import ATOL, RTOL, call_student, data_label, episode_mask, expect_tensor, padded
from metalearn_edu.course.feedback import CheckFailed, passed
from metalearn_edu.rl.objectives import kl_divergence

__all__ = ["check_gaussian_kl", "gradients"]

HINT_MASK = (
    "padded steps (mask 0) were counted: the KL and the surrogate are averaged over the VALID steps only, "
    "Σ mask·x / Σ mask, so the numbers after an episode's end must not enter the sum, nor the count"
)


def _masked_step_mean(per_step: Tensor, mask: Tensor) -> Tensor:
    """(H, T, B) -> (T,): Σ_{t,b} m x / Σ_{t,b} m."""
    return (per_step * mask).sum(dim=(0, -1)) / mask.sum(dim=(0, -1)).clamp_min(1.0)


def gradients(value: Tensor, leaves: Sequence[Tensor]) -> list[Tensor]:
    """d value.sum() / d leaf for each leaf (zeros where the leaf is not used)."""
    grads = torch.autograd.grad(value.sum(), list(leaves), allow_unused=True)
    return [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]


def _gaussian_data(seed: int, horizon: int, batch: Sequence[int], act_dim: int, padding: str) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = episode_mask(generator, horizon, batch)
    shape = (*mask.shape, act_dim)

    def randn() -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    old_mean = 0.5 * randn()
    old_log_std = -0.7 + 0.3 * randn()
    new_mean = old_mean + 0.4 * randn()
    new_log_std = old_log_std + 0.3 * randn()
    return {
        "mask": mask,
        "old_mean": padded(old_mean, mask, padding, generator, 2.0),
        "old_log_std": padded(old_log_std, mask, padding, generator, 1.0),
        "new_mean": padded(new_mean, mask, padding, generator, -3.0),
        "new_log_std": padded(new_log_std, mask, padding, generator, -1.5),
    }


def _per_step_kl(m0: Tensor, s0: Tensor, m1: Tensor, s1: Tensor, *, variance: str = "exp2", constant: bool = True,
                 log_ratio_sign: float = 1.0, action_reduction: str = "sum") -> Tensor:
    """KL(N(m0, e^{2 s0}) ‖ N(m1, e^{2 s1})) per step, (..., act_dim) -> (...), with optional deliberate mistakes.

    ``variance``: "exp2" (right: σ² = e^{2 log σ}) or "exp" (σ² taken as e^{log σ}).
    """
    if variance == "exp2":
        var0, var1 = torch.exp(2.0 * s0), torch.exp(2.0 * s1)
    else:
        var0, var1 = torch.exp(s0), torch.exp(s1)
    per_dim = log_ratio_sign * (s1 - s0) + (var0 + (m0 - m1) ** 2) / (2.0 * var1) - (0.5 if constant else 0.0)
    return per_dim.sum(dim=-1) if action_reduction == "sum" else per_dim.mean(dim=-1)


def _kl_variant(d: dict[str, Tensor], *, swap: bool = False, reduction: str = "valid_steps", **change: Any) -> Tensor:
    """The per-task KL with one deliberate change, to recognise a common mistake.

    ``reduction``: "valid_steps" (right), "all_steps" (mask ignored), "padding_counted" (masked sum over H·B),
    "sum" (masked sum), "episode_means" (the mean of per-episode means).
    """
    m0, s0, m1, s1, mask = (d[k].detach() for k in ("old_mean", "old_log_std", "new_mean", "new_log_std", "mask"))
    if swap:
        m0, s0, m1, s1 = m1, s1, m0, s0
    per_step = _per_step_kl(m0, s0, m1, s1, **change)  # (H, T, B)
    valid = torch.where(mask > 0, per_step, torch.zeros_like(per_step))
    if reduction == "valid_steps":
        return _masked_step_mean(valid, mask)
    if reduction == "all_steps":
        return per_step.mean(dim=(0, -1))
    if reduction == "padding_counted":
        return valid.sum(dim=(0, -1)) / (mask.shape[0] * mask.shape[-1])
    if reduction == "sum":
        return valid.sum(dim=(0, -1))
    if reduction == "episode_means":
        return (valid.sum(dim=0) / mask.sum(dim=0).clamp_min(1.0)).mean(dim=-1)
    raise ValueError(reduction)


def _library_kl(d: dict[str, Tensor]) -> Tensor:
    old = Independent(Normal(d["old_mean"].detach(), d["old_log_std"].detach().exp(), validate_args=False), 1)
    new = Independent(Normal(d["new_mean"], d["new_log_std"].exp(), validate_args=False), 1)
    return kl_divergence(old, new, d["mask"])


def _kl_mistakes(data: dict[str, Tensor]) -> list[tuple[Tensor, str]]:
    """What the usual mistakes give on ``data``, each with the hint that names it."""
    variant = lambda **change: _kl_variant(data, **change)  # noqa: E731
    return [
        (variant(swap=True), "the KL direction is swapped: this is KL(π_new ‖ π_old). ProMP penalises "
                             "KL(π_old ‖ π_new), the expectation under the OLD policy (whose states were sampled): "
                             "log σ_new − log σ_old + (σ_old² + (μ_old − μ_new)²) / (2σ_new²) − 1/2"),
        (variant(reduction="all_steps"), HINT_MASK + " (here the mask was ignored: the mean ran over all H·B steps)"),
        (variant(reduction="padding_counted"), HINT_MASK + " (here the padded steps were zeroed but still counted in the "
                                                           "denominator: divide by mask.sum(), not by H·B)"),
        (variant(reduction="sum"), "sum instead of mean: the penalty is the AVERAGE KL per valid step, Σ mask·KL / Σ mask "
                                   "(a sum would grow with the number of episodes and their length)"),
        (variant(reduction="episode_means"), "the mean of per-episode means weighs a short episode's steps more than a "
                                             "long one's: average over all valid steps of the task at once, "
                                             "Σ_{t,b} mask·KL / Σ_{t,b} mask"),
        (variant(action_reduction="mean"), "the action dimensions are independent, so their KLs ADD: sum over the last "
                                           "dim, do not average it"),
        (variant(constant=False), "the −1/2 per action dimension is missing (KL(π ‖ π) must be 0)"),
        (variant(variance="exp"), "σ² = exp(2·log σ), not exp(log σ): log_std is the log of the standard deviation"),
        (variant(log_ratio_sign=-1.0), "the log-ratio term is upside down: it is log(σ_new / σ_old) = "
                                       "new_log_std − old_log_std"),
    ]


HINT_KL = ("per step and action dim: (new_log_std − old_log_std) + (exp(2·old_log_std) + (old_mean − new_mean)²) "
           "/ (2·exp(2·new_log_std)) − 1/2; .sum(-1); then (kl·mask).sum((0, 2)) / mask.sum((0, 2))")


def _kl_hand_case(gaussian_kl: Callable[..., Tensor]) -> None:
    """One task, one action dim, two episodes of 2 and 1 valid steps: the KLs 1/2, 2 and 1/2 + e⁻²/2 are exact."""
    data = {
        "old_mean": torch.tensor([[0.0, 0.0], [0.0, 5.0]], dtype=torch.float64).view(2, 1, 2, 1),
        "old_log_std": torch.zeros(2, 1, 2, 1, dtype=torch.float64),
        "new_mean": torch.tensor([[1.0, 2.0], [0.0, 5.0]], dtype=torch.float64).view(2, 1, 2, 1),
        "new_log_std": torch.tensor([[0.0, 0.0], [1.0, 7.0]], dtype=torch.float64).view(2, 1, 2, 1),
        "mask": torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64).view(2, 1, 2),  # episode 2 ends after step 0
    }
    # KL(N(0,1) ‖ N(1,1)) = 1/2, KL(N(0,1) ‖ N(2,1)) = 2, KL(N(0,1) ‖ N(0,e²)) = 1 + e⁻²/2 − 1/2; the padded step is ignored
    expected = torch.tensor([(0.5 + 2.0 + 0.5 + 0.5 * math.exp(-2.0)) / 3.0], dtype=torch.float64)
    args = [data[k].clone() for k in ("old_mean", "old_log_std", "new_mean", "new_log_std", "mask")]
    out = call_student(gaussian_kl, "gaussian_kl", *args)
    label = "gaussian_kl on a hand-sized case (one task; KLs 1/2, 2 and 1/2 + e⁻²/2 on its 3 valid steps, mean 1.0226)"
    expect_tensor(label, out, expected, hint="one KL per task: (H, T, B, act_dim) -> (T,)")
    diagnose(label, out, expected, _kl_mistakes(data), atol=1e-9, rtol=1e-9, hint=HINT_KL)


def check_gaussian_kl(gaussian_kl: Callable[..., Tensor], *, seed: int = 0, horizon: int = 6,
                      batch: Sequence[int] = (3, 4), act_dim: int = 2) -> None:
    """``gaussian_kl(old_mean, old_log_std, new_mean, new_log_std, mask)`` = per task (T,), mean over valid steps of
    Σ_j [log σ_new − log σ_old + (σ_old² + (μ_old − μ_new)²) / (2σ_new²) − 1/2].

    Means and log-stds are (H, T, B, act_dim), the mask (H, T, B). Compared with ``rl.objectives.kl_divergence`` of
    two ``Independent(Normal)`` distributions: the value, the gradient with respect to the new policy's mean and
    log-std, and that no gradient reaches the old policy's (a constant: the policy before the update).
    """
    _kl_hand_case(gaussian_kl)
    for padding in ("zeros", "garbage"):
        data = _gaussian_data(seed, horizon, batch, act_dim, padding)
        leaves = {k: data[k].clone().requires_grad_(True) for k in ("old_mean", "old_log_std", "new_mean", "new_log_std")}
        mask = data["mask"]
        out = call_student(gaussian_kl, "gaussian_kl", leaves["old_mean"], leaves["old_log_std"], leaves["new_mean"],
                           leaves["new_log_std"], mask.clone())
        label = f"gaussian_kl (act_dim={act_dim}) on {data_label(padding)}"
        reference = _library_kl({**leaves, "mask": mask})
        expect_tensor(label, out, reference,
                      hint="one KL per task: sum over the action dims (last), then the mean over the valid steps of time "
                           "(dim 0) and episodes (dim 2): (H, T, B, act_dim) -> (T,)")
        diagnose(label, out, reference, _kl_mistakes(data), atol=ATOL, rtol=RTOL, hint=HINT_KL)
        if not out.requires_grad:
            raise CheckFailed(f"{label}: gradient", expected="a KL that autograd can differentiate with respect to the new policy",
                              got="a tensor with requires_grad=False",
                              hint="do not detach the NEW mean and log-std (or use .item(), torch.no_grad()): the penalty must "
                                   "pull the new policy back towards the old one")
        got_grads = gradients(out, list(leaves.values()))
        ref_grads = gradients(reference, [leaves["new_mean"], leaves["new_log_std"]])
        for name, got, ref in zip(("new_mean", "new_log_std"), got_grads[2:], ref_grads):
            diagnose(f"{label}: d KL / d {name}", got, ref, [
                (torch.zeros_like(ref), f"the gradient is zero: {name} was detached on the way to the KL"),
            ], atol=ATOL, rtol=RTOL, hint="build the KL from the new mean and log-std with torch operations")
        for name, grad in zip(("old_mean", "old_log_std"), got_grads[:2]):
            if grad.abs().max() > 0:
                raise CheckFailed(f"{label}: d KL / d {name}", expected="no gradient (a constant)",
                                  got=f"a nonzero gradient (max |.| {grad.abs().max().item():.3g})",
                                  hint=f"the old policy is the policy before the update, a constant: use {name}.detach(), "
                                       "so that the penalty moves only the new policy")
    passed(f"Gaussian KL(π_old ‖ π_new) matches (act_dim={act_dim}): per task, over valid steps, old policy detached")
