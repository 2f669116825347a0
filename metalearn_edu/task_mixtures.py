"""Heterogeneous task distributions and the measurement of whether meta-learning helps (notebook 08).

    LineTasks            a second regression family, y = a·x + b (a mode very unlike a sinusoid)
    sample_mixture       a task batch whose tasks come from several families, with info["mode"] (T,)
    per_mode_mse         query MSE after adaptation, averaged separately over each mode's tasks
    meta_learning_gain   paired gain (baseline error − MAML error) over the same test tasks, with a 95% CI
    verdict              "helps" / "hurts" / "no evidence" from a gain and its CI

The lecture imports these; the graded checks of :mod:`metalearn_edu.course.checks.limits` compare
students' versions with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from metalearn_edu.evaluate import adaptation_curves
from metalearn_edu.functional import Params
from metalearn_edu.tasks import TaskBatch

__all__ = ["VERDICTS", "LineTasks", "meta_learning_gain", "per_mode_mse", "sample_mixture", "verdict"]

VERDICTS = ("helps", "hurts", "no evidence")


@dataclass(frozen=True)
class LineTasks:
    """Regression on lines y = a·x + b: slope a ~ U[−1, 1], intercept b ~ U[−2, 2], x ~ U[−5, 5].

    The ranges make E[y²] ≈ 4.1, close to the sinusoids' ≈ 4.2, so neither mode dominates a mean
    squared error. Same interface as :class:`~metalearn_edu.tasks.SinusoidTasks`; ``info`` holds
    ``slope`` (T,) and ``intercept`` (T,).
    """

    slope: tuple[float, float] = (-1.0, 1.0)
    intercept: tuple[float, float] = (-2.0, 2.0)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def sample(self, num_tasks: int, shots: int, query: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> TaskBatch:
        """T = ``num_tasks`` lines with ``shots`` support and ``query`` query points each."""
        _check_positive(num_tasks=num_tasks, shots=shots, query=query)
        slope = torch.empty(num_tasks, dtype=dtype).uniform_(*self.slope, generator=generator)  # (T,)
        intercept = torch.empty(num_tasks, dtype=dtype).uniform_(*self.intercept, generator=generator)  # (T,)
        x = torch.empty(num_tasks, shots + query, 1, dtype=dtype).uniform_(*self.x_range, generator=generator)
        y = slope[:, None, None] * x + intercept[:, None, None]  # (T, K+Q, 1)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], {"slope": slope, "intercept": intercept})

    @staticmethod
    def curve(info: dict[str, Tensor], x: Tensor) -> Tensor:
        """The true lines of the tasks in ``info`` at x (T, N, 1) → (T, N, 1), for plots."""
        return info["slope"][:, None, None] * x + info["intercept"][:, None, None]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def sample_mixture(families: Sequence[Any], num_tasks: int, shots: int, query: int,
                   generator: torch.Generator | None = None, weights: Sequence[float] | None = None) -> TaskBatch:
    """``num_tasks`` tasks, each drawn from one of ``families`` (mode m with probability ∝ ``weights[m]``).

    Each task's mode is drawn independently with ``torch.multinomial`` from ``generator`` (uniform
    without ``weights``); then each family samples its own tasks, which are put back in task order.
    ``info`` holds only ``mode`` (T,) int64, because the families' own parameters differ.
    """
    if not families:
        raise ValueError("families must hold at least one task family")
    _check_positive(num_tasks=num_tasks, shots=shots, query=query)
    w = torch.ones(len(families), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (len(families),) or not bool((w >= 0).all()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be {len(families)} non-negative numbers with a positive sum, got {weights!r}")
    mode = torch.multinomial(w, num_tasks, replacement=True, generator=generator)  # (T,) int64
    fields = {}
    for m, family in enumerate(families):
        index = (mode == m).nonzero()[:, 0]
        if index.numel() == 0:
            continue
        part = family.sample(int(index.numel()), shots, query, generator)
        for name in ("x_support", "y_support", "x_query", "y_query"):
            value = getattr(part, name)
            if name not in fields:
                fields[name] = value.new_zeros((num_tasks, *value.shape[1:]))
            fields[name][index] = value
    return TaskBatch(fields["x_support"], fields["y_support"], fields["x_query"], fields["y_query"], {"mode": mode})


def per_mode_mse(model: nn.Module, params: Params, batch: TaskBatch, num_modes: int, *, lr: float, steps: int) -> Tensor:
    """Query MSE after ``steps`` inner steps of size ``lr`` from ``params``, averaged per mode: (num_modes,).

    A mode without any task in ``batch`` gets NaN (the mean of nothing).
    """
    curves = adaptation_curves(model, params, batch.x_support, batch.y_support, batch.x_query, batch.y_query,
                               lr=lr, max_steps=steps)  # (T, steps + 1)
    after = curves[:, steps]
    mode = batch.info["mode"]
    return torch.stack([after[mode == m].mean() for m in range(num_modes)])


def meta_learning_gain(baseline_errors: Any, maml_errors: Any) -> tuple[float, float]:
    """Mean of the per-task differences baseline − MAML on the same tasks, and its 95% CI half-width.

    Positive = MAML's error is lower. The CI is 1.96 · std(differences) / √N (unbiased std): the
    comparison is paired, so the task-to-task spread that both errors share cancels.
    """
    b = torch.as_tensor(baseline_errors, dtype=torch.float64).reshape(-1)
    m = torch.as_tensor(maml_errors, dtype=torch.float64).reshape(-1)
    if b.shape != m.shape:
        raise ValueError(f"baseline_errors and maml_errors must hold one error per task of the same tasks, got "
                         f"{b.numel()} and {m.numel()} values")
    if b.numel() < 2:
        raise ValueError(f"need at least 2 tasks for a confidence interval, got {b.numel()}")
    diff = b - m
    return float(diff.mean()), float(1.96 * diff.std(unbiased=True) / math.sqrt(diff.numel()))


def verdict(gain: float, ci95: float) -> str:
    """'helps' if the whole interval gain ± ci95 is above 0, 'hurts' if below, else 'no evidence'."""
    gain, ci95 = float(gain), float(ci95)
    if gain - ci95 > 0:
        return "helps"
    if gain + ci95 < 0:
        return "hurts"
    return "no evidence"
