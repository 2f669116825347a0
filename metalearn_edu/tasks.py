"""Supervised task families: Finn et al.'s sinusoids and linear regression with a closed form.

A task family samples a batch of T tasks and, for each, a support set (K examples the learner adapts
on) and a query set (Q examples that measure the adapted model). Sampling takes an explicit
``torch.Generator`` so that a seed reproduces every task and every point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TaskBatch:
    """T regression tasks with their support and query sets.

    x_support (T, K, in_dim), y_support (T, K, 1), x_query (T, Q, in_dim), y_query (T, Q, 1);
    ``info`` holds each task's parameters (for a sinusoid: amplitude (T,) and phase (T,)).
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor
    info: dict[str, Tensor]

    @property
    def num_tasks(self) -> int:
        return self.x_support.shape[0]

    def task(self, i: int) -> "TaskBatch":
        """Task ``i`` alone, keeping the leading task dimension (T = 1)."""
        s = slice(i, i + 1)
        return TaskBatch(self.x_support[s], self.y_support[s], self.x_query[s], self.y_query[s], {k: v[s] for k, v in self.info.items()})

    def to(self, device: torch.device | str) -> "TaskBatch":
        return TaskBatch(
            self.x_support.to(device), self.y_support.to(device), self.x_query.to(device), self.y_query.to(device),
            {k: v.to(device) for k, v in self.info.items()},
        )


def _check_sizes(num_tasks: int, shots: int, query: int) -> None:
    for name, value in (("num_tasks", num_tasks), ("shots", shots), ("query", query)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class SinusoidTasks:
    """Finn et al. 2017 sinusoid regression: y = A sin(x − φ).

    amplitude A ~ U[0.1, 5], phase φ ~ U[0, π], inputs x ~ U[−5, 5]; every field can be changed
    (for example to study out-of-distribution amplitudes in the limits notebook).
    """

    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def sample(self, num_tasks: int, shots: int, query: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> TaskBatch:
        """T = ``num_tasks`` sinusoids with ``shots`` support and ``query`` query points each."""
        _check_sizes(num_tasks, shots, query)
        g = generator
        amp = torch.empty(num_tasks, dtype=dtype).uniform_(*self.amplitude, generator=g)  # (T,)
        phase = torch.empty(num_tasks, dtype=dtype).uniform_(*self.phase, generator=g)  # (T,)
        x = torch.empty(num_tasks, shots + query, 1, dtype=dtype).uniform_(*self.x_range, generator=g)  # (T, K+Q, 1)
        y = amp[:, None, None] * torch.sin(x - phase[:, None, None])  # (T, K+Q, 1)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], {"amplitude": amp, "phase": phase})

    @staticmethod
    def curve(info: dict[str, Tensor], x: Tensor) -> Tensor:
        """The true functions of the tasks in ``info`` at x (T, N, 1) → (T, N, 1), for plots."""
        return info["amplitude"][:, None, None] * torch.sin(x - info["phase"][:, None, None])


@dataclass(frozen=True)
class LinearRegressionTasks:
    """Noise-free linear regression y = w·x with w ~ N(0, I_d), x ~ N(0, I_d).

    With the linear model f_θ(x) = θ·x and the MSE loss, the MAML meta-gradient has a closed form
    (:func:`linear_maml_meta_gradient`), which the tests and notebook 01 use as ground truth.
    """

    dim: int = 3

    def sample(self, num_tasks: int, shots: int, query: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> TaskBatch:
        _check_sizes(num_tasks, shots, query)
        w = torch.randn(num_tasks, self.dim, 1, generator=generator, dtype=dtype)  # (T, d, 1)
        x = torch.randn(num_tasks, shots + query, self.dim, generator=generator, dtype=dtype)  # (T, K+Q, d)
        y = x @ w  # (T, K+Q, 1)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], {"weight": w[..., 0]})


def linear_maml_meta_gradient(theta: Tensor, x_support: Tensor, y_support: Tensor, x_query: Tensor, y_query: Tensor, lr: float, steps: int = 1) -> Tensor:
    """Exact MAML meta-gradient for the linear model f_θ(x) = Xθ with L(θ) = 1/n ‖Xθ − y‖².

    ∇L(θ) = (2/n) Xᵀ(Xθ − y),  ∇²L = H = (2/n) XᵀX (constant), so with θ_{k+1} = θ_k − α∇L_s(θ_k):
        θ′ = θ_steps,   dL_q(θ′)/dθ = (I − α H_s)^steps ∇L_q(θ′).

    Shapes: theta (d,), x_support (K, d), y_support (K, 1), x_query (Q, d), y_query (Q, 1) → (d,).
    """
    k, d = x_support.shape
    q = x_query.shape[0]
    h_s = 2.0 / k * x_support.T @ x_support  # (d, d)
    theta_prime = theta.clone()
    for _ in range(steps):
        theta_prime = theta_prime - lr * (2.0 / k) * x_support.T @ (x_support @ theta_prime - y_support[:, 0])
    grad_query = (2.0 / q) * x_query.T @ (x_query @ theta_prime - y_query[:, 0])  # (d,)
    jacobian = torch.linalg.matrix_power(torch.eye(d, dtype=theta.dtype) - lr * h_s, steps)  # (d, d), symmetric
    return jacobian @ grad_query
