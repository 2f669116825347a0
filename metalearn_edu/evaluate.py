"""Few-shot evaluation: query MSE after 0..S adaptation steps on N fresh tasks, mean and 95% CI.

The protocol of Finn et al. 2017, Table 2: each test task gives K support points; the model takes S
gradient steps of size α from the meta-parameters on them (never from a fresh initialisation) and is
scored by its mean squared error on held-out query points of the same task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from metalearn_edu.functional import Params, check_inner_arguments, forward, mse, sgd_step
from metalearn_edu.tasks import SinusoidTasks


@dataclass
class EvalResult:
    """Query MSE after each number of steps: ``mean[s]`` and ``ci95[s]`` for s = 0..max_steps."""

    mean: list[float]
    ci95: list[float]
    tasks: int
    shots: int
    lr: float

    def at(self, steps: int) -> tuple[float, float]:
        return self.mean[steps], self.ci95[steps]

    def as_dict(self, steps: Sequence[int]) -> dict:
        return {
            "tasks": self.tasks, "shots": self.shots, "inner_lr": self.lr,
            "mse": {str(s): self.mean[s] for s in steps}, "ci95": {str(s): self.ci95[s] for s in steps},
        }


def adaptation_curves(model: nn.Module, params: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor, *, lr: float, max_steps: int) -> Tensor:
    """Query MSE of each task after 0..max_steps inner steps: (T,K,·),(T,Q,·) → (T, max_steps + 1)."""
    theta = {n: p.detach() for n, p in params.items()}

    def one_task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Tensor:
        p, losses = theta, []
        for k in range(max_steps + 1):
            losses.append(mse(forward(model, p, xq), yq))
            if k < max_steps:
                p = sgd_step(p, grad(lambda q: mse(forward(model, q, xs), ys))(p), lr)
        return torch.stack(losses)

    return vmap(one_task)(x_s, y_s, x_q, y_q)


def evaluate_sinusoid(
    model: nn.Module,
    params: Params | None = None,
    *,
    tasks: int = 600,
    shots: int = 5,
    query: int = 100,
    max_steps: int = 10,
    lr: float = 0.01,
    seed: int = 0,
    family: SinusoidTasks | None = None,
    chunk: int = 200,
) -> EvalResult:
    """MSE after 0..``max_steps`` steps on ``tasks`` fresh sinusoids with ``shots`` support points.

    The test tasks depend only on ``seed`` (a generator separate from training), so two models are
    compared on exactly the same tasks. 95% CI = 1.96 · std / √N over tasks.
    """
    for name, value in (("tasks", tasks), ("shots", shots), ("query", query)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError(f"max_steps must be a non-negative integer, got {max_steps!r}")
    check_inner_arguments(lr, max(max_steps, 1))
    params = dict(model.named_parameters()) if params is None else params
    family = family or SinusoidTasks()
    device = next(iter(params.values())).device
    generator = torch.Generator().manual_seed(10_000_019 + seed)  # never the training stream
    curves = []
    for start in range(0, tasks, chunk):
        b = family.sample(min(chunk, tasks - start), shots, query, generator).to(device)
        curves.append(adaptation_curves(model, params, b.x_support, b.y_support, b.x_query, b.y_query, lr=lr, max_steps=max_steps))
    c = torch.cat(curves).double().cpu()  # (N, S+1)
    mean = c.mean(dim=0)
    ci = 1.96 * c.std(dim=0, unbiased=True) / math.sqrt(tasks) if tasks > 1 else torch.zeros_like(mean)
    return EvalResult([float(v) for v in mean], [float(v) for v in ci], tasks, shots, lr)
