"""Parameters as dicts, a functional forward pass, and inner-loop adaptation.

MAML needs to evaluate one network at many parameter values: the meta-parameters θ and, for each
task, the adapted parameters θ′ = θ − α∇L_support(θ). So parameters live outside the module, in a
``dict[str, Tensor]`` (``Params``), and the module is only an architecture:
``forward(model, params, x) = torch.func.functional_call(model, params, (x,))``.

Two adaptation routines compute the same θ′:

- :func:`adapt` uses ``torch.autograd.grad``; it is the readable reference used by the per-task loop.
- :func:`adapt_functional` uses ``torch.func.grad`` so that it composes with ``torch.func.vmap``
  (all tasks at once, see ``maml.py``).

Learners who like objects can use :class:`Learner` (``clone`` / ``adapt`` in the learn2learn style).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

Params = dict[str, Tensor]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def make_mlp(in_dim: int = 1, hidden: Sequence[int] = (40, 40), out_dim: int = 1, activation: str = "relu") -> nn.Sequential:
    """The regression network of Finn et al. 2017: ``in_dim → 40 → 40 → out_dim`` with ReLU by default."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if in_dim < 1 or out_dim < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"in_dim, hidden and out_dim must be positive, got {in_dim}, {tuple(hidden)}, {out_dim}")
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def params_of(model: nn.Module) -> Params:
    """The module's own parameters as a dict (the meta-parameters θ; they require grad)."""
    return dict(model.named_parameters())


def forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """f_θ(x) with θ = ``params``: (..., in_dim) → (..., out_dim)."""
    return functional_call(model, params, (x,))


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error, mean over every element: L = 1/N Σ (ŷ − y)²."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have the same shape, got {tuple(prediction.shape)} and {tuple(target.shape)}")
    return ((prediction - target) ** 2).mean()


def check_inner_arguments(lr: float, steps: int) -> None:
    """Raise a ValueError naming the argument when the inner-loop ``lr`` or ``steps`` is unusable."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer (number of inner gradient steps), got {steps!r}")
    if not isinstance(lr, (int, float)) or not lr > 0 or lr != lr or lr == float("inf"):
        raise ValueError(f"lr must be a positive finite number (the inner step size α), got {lr!r}")


def sgd_step(params: Params, grads: Sequence[Tensor] | Params, lr: float) -> Params:
    """One gradient-descent step on every parameter: θ′ = θ − α g."""
    if isinstance(grads, dict):
        return {name: p - lr * grads[name] for name, p in params.items()}
    return {name: p - lr * g for (name, p), g in zip(params.items(), grads)}


def adapt(
    model: nn.Module,
    params: Params,
    x: Tensor,
    y: Tensor,
    *,
    lr: float,
    steps: int = 1,
    first_order: bool = False,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = mse,
) -> Params:
    """Adapt ``params`` to one task's support set with ``steps`` steps of gradient descent.

    θ₀ = θ,  θ_{k+1} = θ_k − α ∇_θ L_support(θ_k),  returns θ′ = θ_steps.

    Second order (``first_order=False``): the gradients keep their graph (``create_graph=True``), so
    ∂θ′/∂θ = Π_k (I − α∇²L_support(θ_k)) is available to the outer backward pass: that is MAML.
    First order: the gradients are detached, so ∂θ′/∂θ = I and the outer gradient is ∇L_query(θ′): FOMAML.

    Shapes: x (K, in_dim), y (K, out_dim) for one task.
    """
    check_inner_arguments(lr, steps)
    for _ in range(steps):
        loss = loss_fn(forward(model, params, x), y)
        grads = torch.autograd.grad(loss, tuple(params.values()), create_graph=not first_order)
        if first_order:
            grads = tuple(g.detach() for g in grads)
        params = sgd_step(params, grads, lr)
    return params


def adapt_functional(
    model: nn.Module,
    params: Params,
    x: Tensor,
    y: Tensor,
    *,
    lr: float,
    steps: int = 1,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = mse,
) -> Params:
    """Second-order inner loop written with ``torch.func.grad``, so it can be ``vmap``-ed over tasks.

    Same equation as :func:`adapt`; under an outer ``torch.func.grad`` the inner gradients are
    differentiated again, which gives the full MAML meta-gradient. Shapes: x (K, in_dim), y (K, out_dim).
    """

    def support_loss(p: Params) -> Tensor:
        return loss_fn(forward(model, p, x), y)

    for _ in range(steps):
        params = sgd_step(params, grad(support_loss)(params), lr)
    return params


class Learner:
    """A model together with one set of parameters, in the learn2learn ``clone``/``adapt`` style.

    >>> learner = Learner(model)             # wraps θ (the module's own parameters)
    >>> task_learner = learner.clone()       # starts from θ, not from a fresh initialisation
    >>> task_learner.adapt(loss, lr=0.01)    # θ′ = θ − α∇loss, differentiable unless first_order
    >>> task_learner(x_query)                # f_θ′(x)
    """

    def __init__(self, model: nn.Module, params: Params | None = None, *, first_order: bool = False) -> None:
        self.model = model
        self.params = params_of(model) if params is None else params
        self.first_order = first_order

    def __call__(self, x: Tensor) -> Tensor:
        return forward(self.model, self.params, x)

    def clone(self) -> "Learner":
        """A learner that shares θ (and its graph) and can be adapted without touching the original."""
        return Learner(self.model, dict(self.params), first_order=self.first_order)

    def adapt(self, loss: Tensor, lr: float) -> None:
        """One gradient step on ``loss`` (a scalar tensor computed with this learner)."""
        check_inner_arguments(lr, 1)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise TypeError("loss must be a scalar tensor computed with this learner (not a Python float from .item())")
        grads = torch.autograd.grad(loss, tuple(self.params.values()), create_graph=not self.first_order)
        if self.first_order:
            grads = tuple(g.detach() for g in grads)
        self.params = sgd_step(self.params, grads, lr)
