"""Seeded time-major inputs and the tensor expectations shared by the reinforcement-learning checks.

Every RL check (notebooks 04 to 07) calls the student's function on float64 inputs ``(H, T, B)`` whose
episodes end at different steps (:func:`episode_mask`), padded after each end either with zeros, as the
sampler writes, or with nonzero numbers that only a function using the mask ignores (:func:`padded`).
:func:`call_student` runs the student's code with hints for the usual shape and in-place mistakes, and
:func:`expect_tensor` names a wrong type, shape or dtype. Inputs come from a private ``torch.Generator``:
the global random state is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import student_caller
from metalearn_edu.course.feedback import CheckFailed, expect_shape

__all__ = [
    "ATOL", "HINT_IN_PLACE", "HINT_MASK", "HINT_SHAPES", "RTOL", "call_student", "data_label", "episode_mask",
    "expect_tensor", "padded", "rollout",
]

ATOL, RTOL = 1e-9, 1e-7  # the inputs are float64

HINT_MASK = (
    "numbers after the end of an episode leaked into the answer: a padded step (mask 0) must contribute nothing "
    "and nothing may flow back across the end of an episode. Multiply by mask[t] inside the backward recursion "
    "(running = mask[t] * (...)), not only at the end"
)
HINT_SHAPES = (
    "the inputs are time-major, (H, T, B) = (steps, tasks, episodes): loop over dim 0 (for t in "
    "reversed(range(H))) and let every other dim broadcast; do not hard-code the number of dims"
)
HINT_IN_PLACE = "build a new tensor (torch.zeros_like(rewards), then fill it); do not write into the inputs"

_RL_ERROR_HINTS = (
    ("must match the size", HINT_SHAPES),
    ("shape", HINT_SHAPES),
    ("a leaf Variable that requires grad is being used in an in-place operation", HINT_IN_PLACE),
    ("modified by an inplace operation", "an in-place update (+=, [t] = ... on a tensor in the graph) broke autograd: "
                                         "collect the per-step values in a list and torch.stack them"),
)


call_student = student_caller(_RL_ERROR_HINTS)  # RL shape and mask mistakes get their own hints


def expect_tensor(name: str, got: Any, like: Tensor, hint: str | None = None) -> Tensor:
    """Fail unless ``got`` is a tensor with the shape and dtype of ``like``; return it."""
    if got is None:
        raise CheckFailed(name, expected=f"a tensor of shape {tuple(like.shape)}", got="None",
                          hint="the function returns nothing: end it with `return ...`")
    if not isinstance(got, Tensor):
        raise CheckFailed(name, expected=f"a torch.Tensor of shape {tuple(like.shape)}", got=f"a {type(got).__name__}",
                          hint=hint or "keep the result a tensor (no .item(), .tolist() or .numpy())")
    expect_shape(name, got, tuple(like.shape), hint=hint or HINT_SHAPES)
    if got.dtype != like.dtype:
        raise CheckFailed(f"{name}.dtype", expected=str(like.dtype), got=str(got.dtype),
                          hint="create new tensors like the inputs (torch.zeros_like(rewards)); the inputs are float64")
    return got


# ----------------------------------------------------------------------------------------------
# seeded time-major data with episodes of different lengths


def episode_mask(generator: torch.Generator, horizon: int, batch: Sequence[int]) -> Tensor:
    """(H, *batch) float64: 1.0 up to and including each episode's last step, 0.0 after it.

    Lengths are drawn in [1, H]; the first episode runs the full horizon (truncated) and the second, when
    there is one, ends early, so both kinds of episode end always occur.
    """
    count = 1
    for size in batch:
        count *= int(size)
    lengths = torch.randint(1, horizon + 1, (count,), generator=generator)
    lengths[0] = horizon
    if count > 1:
        lengths[1] = max(1, horizon // 2)
    steps = torch.arange(horizon).unsqueeze(1)  # (H, 1)
    return (steps < lengths.unsqueeze(0)).to(torch.float64).reshape(horizon, *batch)


def padded(values: Tensor, mask: Tensor, padding: str, generator: torch.Generator, offset: float) -> Tensor:
    """``values`` on valid steps; zeros (as the sampler writes) or nonzero numbers ``offset + U[0, 1)`` on padded
    steps. ``mask`` is (T, B) and broadcasts over the trailing dims of ``values``, e.g. (T, B, act_dim)."""
    keep = mask.reshape(mask.shape + (1,) * (values.dim() - mask.dim())) > 0
    if padding == "zeros":
        return torch.where(keep, values, torch.zeros_like(values))
    garbage = offset + torch.rand(values.shape, generator=generator, dtype=values.dtype)
    return torch.where(keep, values, garbage)


def rollout(seed: int, horizon: int, batch: Sequence[int], padding: str) -> dict[str, Tensor]:
    """Seeded float64 inputs (H, *batch) of the policy-gradient checks: mask, rewards, values, old_log_probs,
    log_probs and advantages, every one but the mask padded after each episode's end as ``padding`` says."""
    generator = torch.Generator().manual_seed(seed)
    mask = episode_mask(generator, horizon, batch)
    shape = mask.shape
    rewards = torch.randn(shape, generator=generator, dtype=torch.float64) - 0.5
    values = torch.randn(shape, generator=generator, dtype=torch.float64)
    old_log_probs = -1.0 - 0.5 * torch.rand(shape, generator=generator, dtype=torch.float64)
    log_probs = old_log_probs + 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)  # ratios ~0.4..2.5
    advantages = torch.randn(shape, generator=generator, dtype=torch.float64)
    return {
        "mask": mask,
        "rewards": padded(rewards, mask, padding, generator, 2.0),
        "values": padded(values, mask, padding, generator, -3.0),
        "old_log_probs": padded(old_log_probs, mask, padding, generator, -2.0),
        "log_probs": padded(log_probs, mask, padding, generator, 1.0),
        "advantages": padded(advantages, mask, padding, generator, 4.0),
    }


def data_label(padding: str) -> str:
    """How the feedback names the data a check ran on: padded with zeros, as the sampler does, or with garbage."""
    return "sampler-like data (zeros after each episode's end)" if padding == "zeros" else (
        "data with nonzero numbers after each episode's end")
