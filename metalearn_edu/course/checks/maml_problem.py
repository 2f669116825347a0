"""The seeded MAML problem that the notebook 01 checks share: a small sinusoid task, an MLP whose θ differs
from the module's own parameters, and the autograd helpers and hints the checks build their references and
mistakes from (:mod:`metalearn_edu.course.checks.objective`; :mod:`~metalearn_edu.course.checks.limits`
uses the hint on the module's own parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metalearn_edu.functional import Params, adapt, forward, make_mlp, mse, params_of
from metalearn_edu.tasks import SinusoidTasks

__all__ = ["HINT_OWN_PARAMS", "HINT_SIGN", "Problem", "adapt_any_lr", "detached", "grad_dict", "make_problem", "random_direction",
           "tolerances", "vector_jacobian_product"]

# ----------------------------------------------------------------------------------------------
# hints of the MAML checks (the generic ones live in checks.diagnosis)

HINT_OWN_PARAMS = (
    "you used the module's own parameters (model(x) or params_of(model)) instead of the params argument: "
    "the adapted model must start from the θ you were given, with forward(model, params, x)."
)
HINT_SIGN = "the inner step went uphill: gradient descent subtracts, θ′ = θ − α ∇L_support(θ)."


# ----------------------------------------------------------------------------------------------
# small seeded problems


@dataclass
class Problem:
    """One regression task and a network: θ deliberately differs from the module's own parameters."""

    model: nn.Module
    params: Params
    x_s: Tensor
    y_s: Tensor
    x_q: Tensor
    y_q: Tensor

    def theta(self) -> Params:
        """Fresh leaf copies of θ (requires_grad), so a student's in-place edits never leak between calls."""
        return {n: p.detach().clone().requires_grad_(True) for n, p in self.params.items()}


def make_problem(seed: int = 0, *, hidden: Sequence[int] = (8,), activation: str = "tanh",
                 dtype: torch.dtype = torch.float64, shots: int = 5, query: int = 7) -> Problem:
    """A small sinusoid task and an MLP; the global random state is left untouched."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_mlp(1, hidden, 1, activation).to(dtype)
    params = {
        n: (p.detach() + 0.3 * torch.randn(p.shape, generator=generator, dtype=dtype)).requires_grad_(True)
        for n, p in params_of(model).items()
    }
    batch = SinusoidTasks().sample(1, shots, query, generator, dtype=dtype)
    return Problem(model, params, batch.x_support[0], batch.y_support[0], batch.x_query[0], batch.y_query[0])


def random_direction(params: Params, seed: int) -> Params:
    """A seeded random vector with the shapes of ``params`` (for vector-Jacobian products)."""
    generator = torch.Generator().manual_seed(seed + 1000)
    return {n: torch.randn(p.shape, generator=generator, dtype=p.dtype) for n, p in params.items()}


def tolerances(dtype: torch.dtype) -> tuple[float, float]:
    return (1e-8, 1e-6) if dtype == torch.float64 else (2e-5, 2e-4)


def adapt_any_lr(model: nn.Module, params: Params, x: Tensor, y: Tensor, *, lr: float, steps: int = 1,
                 first_order: bool = False) -> Params:
    """Like ``functional.adapt`` but accepting a negative ``lr``: produces the "step uphill" mistake."""
    if lr > 0:
        return adapt(model, params, x, y, lr=lr, steps=steps, first_order=first_order)
    for _ in range(steps):
        grads = torch.autograd.grad(mse(forward(model, params, x), y), tuple(params.values()), create_graph=not first_order)
        params = {n: p - lr * (g.detach() if first_order else g) for (n, p), g in zip(params.items(), grads)}
    return params


def detached(params: Params) -> Params:
    return {n: p.detach() for n, p in params.items()}


def grad_dict(loss: Tensor, params: Params) -> Params:
    return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()))))


def vector_jacobian_product(outputs: Params, params: Params, direction: Params) -> list[Tensor | None]:
    """(∂θ′/∂θ)ᵀ v by autograd; None entries where θ′ does not depend on θ."""
    keys = [k for k in outputs if outputs[k].requires_grad]
    if not keys:
        return [None] * len(params)
    return list(torch.autograd.grad([outputs[k] for k in keys], tuple(params.values()),
                                    grad_outputs=[direction[k] for k in keys], allow_unused=True))
