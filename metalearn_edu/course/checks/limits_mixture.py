"""Graded check of notebook 08's Q1, ``sample_mixture`` (re-exported by ``checks.limits``).

The student draws a task batch whose tasks come from several families (sinusoids and lines) with given
weights, and labels each task's family in ``info["mode"]``. The check recognises where each task came from
by a least-squares fit on its support and query points, so it can name the mistakes: a mode label that
does not say where a task came from, support and query points from different tasks, ignored weights or an
ignored generator. It leaves torch's global random state as it found it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import call_student
from metalearn_edu.course.feedback import CheckFailed, expect_shape, expect_true, passed
from metalearn_edu.task_mixtures import LineTasks
from metalearn_edu.tasks import SinusoidTasks, TaskBatch

__all__ = ["check_sample_mixture"]


# ----------------------------------------------------------------------------------------------
# recognising where a task came from (a least-squares fit on support ∪ query)


def _fit(x: Tensor, y: Tensor, kind: str) -> tuple[float, float, float]:
    """Least-squares fit of one task's points: returns (p1, p2, largest residual).

    'sine': y = a sin x + b cos x, returned as amplitude A and phase φ ∈ (−π, π] of A sin(x − φ);
    'line': y = p1·x + p2.
    """
    x, y = x.double().reshape(-1), y.double().reshape(-1)
    if kind == "sine":
        design = torch.stack([torch.sin(x), torch.cos(x)], dim=1)
    else:
        design = torch.stack([x, torch.ones_like(x)], dim=1)
    coef = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    residual = float((design @ coef - y).abs().max())
    if kind == "sine":
        a, b = float(coef[0]), float(coef[1])  # A sin(x − φ) = A cos φ sin x − A sin φ cos x
        return math.hypot(a, b), math.atan2(-b, a), residual
    return float(coef[0]), float(coef[1]), residual


def _within(value: float, bounds: tuple[float, float], tol: float) -> bool:
    return bounds[0] - tol <= value <= bounds[1] + tol


def _phase_within(phase: float, bounds: tuple[float, float], tol: float) -> bool:
    """φ (mod 2π) lies in [low, high] up to ``tol`` on the circle."""
    low, high = bounds
    if high - low >= 2 * math.pi - tol:
        return True
    shifted = (phase - low) % (2 * math.pi)  # in [0, 2π)
    return shifted <= high - low + tol or shifted >= 2 * math.pi - tol


def _belongs(family: Any, x: Tensor, y: Tensor) -> tuple[bool, str]:
    """Whether one task's points (x, y) of shape (N, 1) can come from ``family``, and why not."""
    tol = 1e-3 * (1.0 + float(y.abs().max()))
    if not bool(((x >= family.x_range[0] - 1e-5) & (x <= family.x_range[1] + 1e-5)).all()):
        return False, f"inputs outside its x_range {family.x_range}"
    if isinstance(family, SinusoidTasks):
        amplitude, phase, residual = _fit(x, y, "sine")
        if residual > tol:
            return False, "points that are not on one sinusoid"
        if not _within(amplitude, family.amplitude, 1e-3) or not _phase_within(phase, family.phase, 1e-3):
            return False, f"amplitude {amplitude:.3g} and phase {phase:.3g} outside the family's ranges"
        return True, ""
    if isinstance(family, LineTasks):
        slope, intercept, residual = _fit(x, y, "line")
        if residual > tol:
            return False, "points that are not on one line"
        if not _within(slope, family.slope, 1e-3) or not _within(intercept, family.intercept, 1e-3):
            return False, f"slope {slope:.3g} and intercept {intercept:.3g} outside the family's ranges"
        return True, ""
    return True, ""  # a family the check does not know how to recognise


def _describe(family: Any) -> str:
    return repr(family)


# ----------------------------------------------------------------------------------------------
# Q1: sample_mixture

HINT_MIXTURE = ("draw each task's mode with torch.multinomial(weights, num_tasks, replacement=True, generator=generator); "
                "for each mode m, sample that many tasks with families[m].sample(n_m, shots, query, generator) and put them "
                "at the positions where mode == m; return TaskBatch(x_support, y_support, x_query, y_query, {'mode': mode})")


def _call_mixture(fn: Callable[..., TaskBatch], families: Sequence[Any], num_tasks: int, shots: int, query: int, seed: int,
                  weights: Sequence[float] | None) -> TaskBatch:
    generator = torch.Generator().manual_seed(seed)
    args = (list(families), num_tasks, shots, query, generator)
    label = f"sample_mixture(families, {num_tasks}, {shots}, {query}, generator" + (f", weights={tuple(weights)})" if weights is not None else ")")
    out = call_student(fn, "sample_mixture", *args, **({} if weights is None else {"weights": weights}))
    if not isinstance(out, TaskBatch):
        raise CheckFailed(label, expected="a TaskBatch", got=f"a {type(out).__name__}", hint=HINT_MIXTURE)
    return out


def _check_structure(batch: TaskBatch, num_tasks: int, shots: int, query: int, num_modes: int, label: str) -> Tensor:
    for field, shape in (("x_support", (num_tasks, shots, 1)), ("y_support", (num_tasks, shots, 1)),
                         ("x_query", (num_tasks, query, 1)), ("y_query", (num_tasks, query, 1))):
        value = getattr(batch, field)
        expect_true(isinstance(value, Tensor), f"{label}.{field} is a tensor")
        hint = "shapes are (num_tasks, points, 1): one row per task of the mixture, not one batch per family"
        if isinstance(value, Tensor) and value.dim() == 3 and value.shape[0] == num_tasks * num_modes:
            hint = (f"{value.shape[0]} = num_tasks × {num_modes} tasks: you kept every family's whole batch; keep only the "
                    "tasks whose drawn mode is that family")
        expect_shape(f"{label}.{field}", value, shape, hint=hint)
    info = batch.info
    expect_true(isinstance(info, Mapping) and "mode" in info, f"{label}.info has the key 'mode'",
                hint="info={'mode': mode}: which family each task came from, so errors can be split by mode")
    mode = info["mode"]
    expect_true(isinstance(mode, Tensor), f"{label}.info['mode'] is a tensor", hint="keep the modes as a tensor (T,)")
    expect_shape(f"{label}.info['mode']", mode, (num_tasks,), hint="one mode per task")
    expect_true(not mode.is_floating_point() and not mode.is_complex() and mode.dtype != torch.bool,
                f"{label}.info['mode'] holds integers", hint=f"got dtype {mode.dtype}; torch.multinomial and torch.randint return int64")
    low, high = int(mode.min()), int(mode.max())
    expect_true(low >= 0 and high < num_modes, f"{label}.info['mode'] lies in 0..{num_modes - 1}",
                hint=f"mode m means families[m]; got values from {low} to {high}")
    return mode


def check_sample_mixture(sample_mixture: Callable[..., TaskBatch], *, seed: int = 0, families: Sequence[Any] | None = None,
                         weights: Sequence[float] | None = None, shots: int = 5, query: int = 7) -> None:
    """``sample_mixture(families, num_tasks, shots, query, generator, weights=None)`` mixes task families.

    Checked: a TaskBatch of the right shapes with ``info['mode']`` (T,) integers; every task's support
    and query points lie on one function of the family its mode names (a least-squares fit); the
    frequency of each mode over 2000 tasks matches the (normalised) weights; modes are drawn at
    random (they change with the seed and are not sorted); every draw comes from ``generator``.
    """
    families = list(families) if families is not None else [SinusoidTasks(), LineTasks()]
    num_modes = len(families)
    with torch.random.fork_rng(devices=[]):
        num_tasks = 40
        label = "batch"
        batch = _call_mixture(sample_mixture, families, num_tasks, shots, query, seed, weights)
        mode = _check_structure(batch, num_tasks, shots, query, num_modes, label)

        # each task lies on one function of the family its mode names
        x_all = torch.cat([batch.x_support, batch.x_query], dim=1)
        y_all = torch.cat([batch.y_support, batch.y_query], dim=1)
        for i in range(num_tasks):
            m = int(mode[i])
            ok, why = _belongs(families[m], x_all[i], y_all[i])
            if ok:
                continue
            others = [j for j, family in enumerate(families) if j != m and _belongs(family, x_all[i], y_all[i])[0]]
            if others:
                hint = (f"task {i} fits families[{others[0]}] but its info['mode'] says {m}: the mode must name the family "
                        "the task was sampled from (check the order in which you put the tasks back)")
            else:
                support_ok = any(_belongs(f, batch.x_support[i], batch.y_support[i])[0] for f in families)
                query_ok = any(_belongs(f, batch.x_query[i], batch.y_query[i])[0] for f in families)
                if support_ok and query_ok:
                    hint = (f"task {i}'s support and query points come from different functions: take the support and "
                            "the query set of a task from the same sampled task (same index in the family's batch)")
                else:
                    hint = f"task {i} is not a task of families[{m}] = {_describe(families[m])}: it has {why}. " + HINT_MIXTURE
            raise CheckFailed(f"task {i} of the mixture", expected=f"a task of families[{m}] (its info['mode'])",
                              got=why or "a task of another family", hint=hint)

        # mode frequencies over many tasks
        many = 2000
        big = _call_mixture(sample_mixture, families, many, 2, 2, seed + 1, weights)
        big_mode = _check_structure(big, many, 2, 2, num_modes, "batch of 2000 tasks")
        w = torch.ones(num_modes, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        expected = (w / w.sum()).tolist()
        frequency = [float((big_mode == m).double().mean()) for m in range(num_modes)]
        for m in range(num_modes):
            tolerance = 5 * math.sqrt(max(expected[m] * (1 - expected[m]), 1e-4) / many)
            if abs(frequency[m] - expected[m]) > tolerance:
                if weights is not None and all(abs(f - 1 / num_modes) < 0.05 for f in frequency):
                    hint = "the weights were ignored: pass them to torch.multinomial (it normalises them for you)"
                else:
                    hint = ("draw each task's mode independently with probability weights[m] / sum(weights) (uniform "
                            "without weights): torch.multinomial(weights, num_tasks, replacement=True, generator=generator)")
                raise CheckFailed("frequency of each mode over 2000 tasks", expected=f"≈ {[round(e, 3) for e in expected]}",
                                  got=str([round(f, 3) for f in frequency]), hint=hint)

        # drawn at random, from the generator
        expect_true(not bool((big_mode[1:] >= big_mode[:-1]).all()), "the modes are interleaved, not sorted",
                    hint="draw each task's mode independently; do not group the tasks by family (a meta-batch's first "
                         "tasks would then all come from one mode)")
        torch.manual_seed(seed + 12345)
        again = _call_mixture(sample_mixture, families, num_tasks, shots, query, seed, weights)
        torch.manual_seed(seed + 54321)
        twice = _call_mixture(sample_mixture, families, num_tasks, shots, query, seed, weights)
        expect_true(torch.equal(again.info["mode"], twice.info["mode"]) and torch.equal(again.x_query, twice.x_query),
                    "the same generator seed gives the same batch",
                    hint="draw every random number from `generator` (torch.multinomial(..., generator=generator) and "
                         "family.sample(..., generator)), not from torch's global random stream")
        other = _call_mixture(sample_mixture, families, num_tasks, shots, query, seed + 7, weights)
        expect_true(not torch.equal(other.info["mode"], again.info["mode"]), "different generator seeds give different modes",
                    hint="the modes must be drawn at random from `generator`, not fixed (e.g. not arange(T) % M)")
    passed(f"sample_mixture: tasks from {num_modes} families, each labelled with its mode, modes drawn with the "
           f"{'given weights' if weights is not None else 'same probability'} from the generator")
