"""MAML, FOMAML and Reptile meta-gradients (and the multi-task "pretrain" baseline's gradient).

For a batch of T tasks with support (x_s, y_s) and query (x_q, y_q) sets, and θ′_i the parameters
after ``steps`` inner gradient steps of size α on task i's support set:

    MAML      g = 1/T Σ_i dL_q,i(θ′_i)/dθ = 1/T Σ_i Π_k (I − α∇²L_s,i(θ_k)) ∇L_q,i(θ′_i)
    FOMAML    g = 1/T Σ_i ∇L_q,i(θ′_i)                        (the Hessian factor is dropped: ∂θ′/∂θ ≈ I)
    Reptile   g = 1/T Σ_i (θ − φ_i),  φ_i = ``steps`` SGD steps on support ∪ query (Nichol et al. 2018)
    pretrain  g = ∇ 1/T Σ_i L_i(θ)   on support ∪ query, no adaptation (the paper's baseline)

Each is computed two ways that must agree (the tests check it):

- :func:`meta_gradient_loop`: a plain Python loop over tasks with ``torch.autograd``; the readable reference.
- :func:`meta_gradient_batched`: all tasks at once with ``torch.func.vmap`` over ``torch.func.grad``.

Both return a :class:`MetaGradient`: the mean outer loss (detached) and one gradient per parameter,
ready to be written into ``p.grad`` for any torch optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, grad_and_value, vmap

from metalearn_edu.functional import Params, adapt, adapt_functional, check_inner_arguments, forward, mse
from metalearn_edu.tasks import TaskBatch

ALGORITHMS = ("maml", "fomaml", "reptile", "pretrain")


@dataclass
class MetaGradient:
    """The outer loss (mean over tasks, detached) and the meta-gradient, one tensor per parameter."""

    loss: Tensor
    grads: Params


def check_algorithm(algo: str) -> None:
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {', '.join(ALGORITHMS)}; got {algo!r}")


def _check_batch(batch: TaskBatch) -> None:
    if not isinstance(batch, TaskBatch):
        raise TypeError(f"batch must be a TaskBatch (from a task family's .sample()), got {type(batch).__name__}")
    xs, ys, xq, yq = batch.x_support, batch.y_support, batch.x_query, batch.y_query
    if xs.dim() != 3 or xq.dim() != 3:
        raise ValueError(f"x_support and x_query must have shape (T, K, in_dim), got {tuple(xs.shape)} and {tuple(xq.shape)}")
    if xs.shape[:2] != ys.shape[:2] or xq.shape[:2] != yq.shape[:2] or xs.shape[0] != xq.shape[0]:
        raise ValueError(
            "support and query shapes do not match: x_support "
            f"{tuple(xs.shape)}, y_support {tuple(ys.shape)}, x_query {tuple(xq.shape)}, y_query {tuple(yq.shape)}"
        )


def _detached(params: Params) -> Params:
    return {name: p.detach() for name, p in params.items()}


def _joint_data(batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """Support ∪ query of every task: (T, K+Q, in_dim), (T, K+Q, 1)."""
    return torch.cat([batch.x_support, batch.x_query], dim=1), torch.cat([batch.y_support, batch.y_query], dim=1)


def task_query_loss(model: nn.Module, params: Params, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor, *, lr: float, steps: int = 1, first_order: bool = False) -> Tensor:
    """L_query(θ′) for one task, differentiable with respect to ``params`` (θ). x (K, in_dim), y (K, 1)."""
    adapted = adapt(model, params, x_s, y_s, lr=lr, steps=steps, first_order=first_order)
    return mse(forward(model, adapted, x_q), y_q)


def meta_gradient_loop(model: nn.Module, params: Params, batch: TaskBatch, *, algo: str = "maml", lr: float = 0.01, steps: int = 1) -> MetaGradient:
    """The meta-gradient by a Python loop over the T tasks (``torch.autograd``; the readable reference)."""
    check_algorithm(algo)
    check_inner_arguments(lr, steps)
    _check_batch(batch)
    theta = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    names = list(theta)
    total = torch.zeros((), dtype=batch.x_support.dtype, device=batch.x_support.device)
    grads = {name: torch.zeros_like(p) for name, p in theta.items()}
    num_tasks = batch.num_tasks
    for i in range(num_tasks):
        xs, ys, xq, yq = batch.x_support[i], batch.y_support[i], batch.x_query[i], batch.y_query[i]
        if algo in ("maml", "fomaml"):
            loss = task_query_loss(model, theta, xs, ys, xq, yq, lr=lr, steps=steps, first_order=(algo == "fomaml"))
            task_grads = dict(zip(names, torch.autograd.grad(loss, [theta[n] for n in names])))
        elif algo == "reptile":
            x_all, y_all = torch.cat([xs, xq]), torch.cat([ys, yq])
            phi = adapt(model, theta, x_all, y_all, lr=lr, steps=steps, first_order=True)
            with torch.no_grad():  # logged only: keep no graph for it
                loss = mse(forward(model, phi, x_all), y_all)
            task_grads = {n: (theta[n] - phi[n]).detach() for n in names}
        else:  # pretrain
            x_all, y_all = torch.cat([xs, xq]), torch.cat([ys, yq])
            loss = mse(forward(model, theta, x_all), y_all)
            task_grads = dict(zip(names, torch.autograd.grad(loss, [theta[n] for n in names])))
        total = total + loss.detach()
        for n in names:
            grads[n] += task_grads[n]
    return MetaGradient(total / num_tasks, {n: g / num_tasks for n, g in grads.items()})


def meta_gradient_batched(model: nn.Module, params: Params, batch: TaskBatch, *, algo: str = "maml", lr: float = 0.01, steps: int = 1) -> MetaGradient:
    """The same meta-gradient with every task at once: ``torch.func.vmap`` over the task dimension.

    MAML differentiates the mean query loss through the vmapped inner loop (``grad`` of ``vmap`` of
    ``grad``); FOMAML, Reptile and pretrain need no second derivative, so the adapted parameters
    are computed without an outer graph first.
    """
    check_algorithm(algo)
    check_inner_arguments(lr, steps)
    _check_batch(batch)
    theta = _detached(params)
    xs, ys, xq, yq = batch.x_support, batch.y_support, batch.x_query, batch.y_query  # (T, K, ·), (T, Q, ·)

    def query_loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return mse(forward(model, p, x), y)

    def adapted(p: Params, x: Tensor, y: Tensor) -> Params:
        return adapt_functional(model, p, x, y, lr=lr, steps=steps)

    if algo == "maml":

        def mean_query_loss(p: Params) -> Tensor:
            def one_task(x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor) -> Tensor:
                return query_loss(adapted(p, x_s, y_s), x_q, y_q)

            return vmap(one_task)(xs, ys, xq, yq).mean()  # (T,) → ()

        grads, loss = grad_and_value(mean_query_loss)(theta)
        return MetaGradient(loss.detach(), grads)

    if algo == "fomaml":
        theta_prime = vmap(adapted, in_dims=(None, 0, 0))(theta, xs, ys)  # each (T, *shape)
        task_grads, losses = vmap(grad_and_value(query_loss))(theta_prime, xq, yq)
        return MetaGradient(losses.mean().detach(), {n: g.mean(dim=0) for n, g in task_grads.items()})

    x_all, y_all = _joint_data(batch)
    if algo == "reptile":
        phi = vmap(adapted, in_dims=(None, 0, 0))(theta, x_all, y_all)  # each (T, *shape)
        losses = vmap(query_loss)(phi, x_all, y_all)
        return MetaGradient(losses.mean().detach(), {n: theta[n] - phi[n].mean(dim=0) for n in theta})

    def pretrain_loss(p: Params) -> Tensor:
        return vmap(query_loss, in_dims=(None, 0, 0))(p, x_all, y_all).mean()

    grads, loss = grad_and_value(pretrain_loss)(theta)
    return MetaGradient(loss.detach(), grads)


def meta_gradient(model: nn.Module, params: Params, batch: TaskBatch, *, algo: str = "maml", lr: float = 0.01, steps: int = 1, batched: bool = True) -> MetaGradient:
    """The meta-gradient of ``algo`` on ``batch`` (batched with vmap by default, else the reference loop)."""
    fn = meta_gradient_batched if batched else meta_gradient_loop
    return fn(model, params, batch, algo=algo, lr=lr, steps=steps)


def hessian_vector_term(model: nn.Module, params: Params, batch: TaskBatch, *, lr: float) -> Params:
    """What FOMAML drops for one inner step: MAML − FOMAML = −α/T Σ_i ∇²L_s,i(θ) ∇L_q,i(θ′_i).

    Computed as an explicit Hessian-vector product (double backward), independently of both
    meta-gradient routines, so the tests can check MAML = FOMAML + this term.
    """
    check_inner_arguments(lr, 1)
    _check_batch(batch)
    theta = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    names = list(theta)
    out = {n: torch.zeros_like(p) for n, p in theta.items()}
    for i in range(batch.num_tasks):
        xs, ys, xq, yq = batch.x_support[i], batch.y_support[i], batch.x_query[i], batch.y_query[i]
        support = mse(forward(model, theta, xs), ys)
        g_s = torch.autograd.grad(support, [theta[n] for n in names], create_graph=True)
        theta_prime = {n: (theta[n] - lr * g).detach() for n, g in zip(names, g_s)}
        v = grad(lambda p: mse(forward(model, p, xq), yq))(theta_prime)  # ∇L_q(θ′), a constant vector
        hvp = torch.autograd.grad(g_s, [theta[n] for n in names], grad_outputs=[v[n] for n in names])
        for n, h in zip(names, hvp):
            out[n] -= lr * h / batch.num_tasks
    return out
