"""The figures the notebooks and the CLI show. Each function draws on a matplotlib Axes and returns it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

import torch
from torch import nn

from metalearn_edu.functional import Params, adapt, forward
from metalearn_edu.tasks import SinusoidTasks, TaskBatch


def _pyplot():
    import matplotlib.pyplot as plt  # imported lazily so that headless CLI runs can pick a backend first

    return plt


def plot_learning_curve(metrics: Sequence[dict], ax=None, label: str | None = None):
    """Meta-training loss (per log interval) against iteration, log scale."""
    ax = ax or _pyplot().subplots(figsize=(5, 3.2))[1]
    ax.plot([m["iteration"] for m in metrics], [m["loss"] for m in metrics], label=label)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("query MSE after adaptation")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if label:
        ax.legend()
    return ax


def plot_sinusoid_fit(model: nn.Module, params: Params, task: TaskBatch, *, lr: float = 0.01, steps: Sequence[int] = (0, 1, 10), ax=None, title: str | None = None):
    """One task: the true curve, its K support points and the model after each number of ``steps``."""
    ax = ax or _pyplot().subplots(figsize=(5, 3.2))[1]
    xs, ys = task.x_support[0], task.y_support[0]
    grid = torch.linspace(-5, 5, 200, dtype=xs.dtype, device=xs.device)[:, None]  # (200, 1)
    truth = SinusoidTasks.curve(task.info, grid[None])[0]
    ax.plot(grid.cpu(), truth.cpu(), color="black", lw=2, label="true function")
    ax.scatter(xs.cpu(), ys.cpu(), color="tab:red", zorder=5, label=f"{xs.shape[0]} support points")
    p, done = {n: v.detach().requires_grad_(True) for n, v in params.items()}, 0
    for s in sorted(steps):
        if s > done:
            p = adapt(model, p, xs, ys, lr=lr, steps=s - done, first_order=True)
            done = s
        with torch.no_grad():
            ax.plot(grid.cpu(), forward(model, p, grid).cpu(), "--", label=f"after {s} step{'s' if s != 1 else ''}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return ax


def plot_adaptation_curve(results: dict[str, Sequence[float]], cis: dict[str, Sequence[float]] | None = None, ax=None, reference: dict[str, dict[int, float]] | None = None):
    """Query MSE against the number of adaptation steps, one line per model, with 95% CI bands."""
    ax = ax or _pyplot().subplots(figsize=(5, 3.2))[1]
    for name, mean in results.items():
        steps = list(range(len(mean)))
        line = ax.plot(steps, mean, marker="o", ms=3, label=name)[0]
        if cis and name in cis:
            lo = [m - c for m, c in zip(mean, cis[name])]
            hi = [m + c for m, c in zip(mean, cis[name])]
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    for name, points in (reference or {}).items():
        ax.scatter(list(points), list(points.values()), marker="x", s=40, label=name, zorder=5)
    ax.set_xlabel("gradient steps on the support set")
    ax.set_ylabel("query MSE")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def use_headless_backend() -> None:
    """Select a non-interactive backend for command-line figure writing."""
    matplotlib.use("Agg")
