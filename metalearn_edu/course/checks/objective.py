"""Graded checks for notebook 01, the MAML objective.

Each ``check_*`` function takes the student's function, runs it on a small seeded problem, and
compares the result with the library's reference (``functional.adapt``, ``maml.meta_gradient_loop``,
``tasks.linear_maml_meta_gradient``). When the answer is wrong it also compares it with the answers
that the usual mistakes produce (the FOMAML gradient where MAML was asked for, a step uphill, the
module's own parameters instead of θ, one inner step instead of ``steps`` ...) and names the mistake.
Structure is checked too: with ``create_graph=True`` the adapted parameters θ′ must remember how the
inner gradient depends on θ (∂θ′/∂θ ≠ I); with ``create_graph=False`` they must not (∂θ′/∂θ = I).

The problems are tiny (a tanh network with one hidden layer of 8 units, float64 by default), so every
check runs in well under a second; hidden tests call the same checks with other seeds, the Finn ReLU
network in float32, or more inner steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from metalearn_edu.course.checks.diagnosis import HINT_UNUSED, call_student, diagnose, expect_params_like, params_close
from metalearn_edu.course.checks.maml_problem import (HINT_OWN_PARAMS, HINT_SIGN, Problem, adapt_any_lr, detached, grad_dict,
                                                      make_problem, random_direction, tolerances,
                                                      vector_jacobian_product)
from metalearn_edu.course.feedback import CheckFailed, expect_shape, passed
from metalearn_edu.functional import Params, adapt, forward, mse, params_of
from metalearn_edu.tasks import LinearRegressionTasks, linear_maml_meta_gradient

__all__ = [
    "check_fomaml_gradient",
    "check_inner_step",
    "check_linear_meta_gradient",
    "check_maml_meta_gradient",
    "check_reptile_direction",
]

# ----------------------------------------------------------------------------------------------
# Q1: one inner step


def check_inner_step(inner_step: Callable[..., Params], *, seed: int = 0, hidden: Sequence[int] = (8,),
                     activation: str = "tanh", dtype: torch.dtype = torch.float64, lr: float = 0.3) -> None:
    """``inner_step(model, params, x, y, lr, create_graph)`` must return θ′ = θ − α∇L(θ) as a dict.

    Values are compared with ``functional.adapt``; the structure with a vector-Jacobian product:
    ``create_graph=True`` gives ∂θ′/∂θ = I − α∇²L (MAML), ``create_graph=False`` gives ∂θ′/∂θ = I (FOMAML).
    """
    problem = make_problem(seed, hidden=hidden, activation=activation, dtype=dtype)
    model, x, y = problem.model, problem.x_s, problem.y_s
    atol, rtol = tolerances(dtype)
    direction = random_direction(problem.params, seed)
    for create_graph in (False, True):
        label = f"inner_step(..., create_graph={create_graph})"
        theta = problem.theta()
        before = detached({n: p.clone() for n, p in theta.items()})
        out = call_student(inner_step, "inner_step", model, theta, x, y, lr, create_graph)
        expect_params_like(label, out, theta)
        if not params_close(theta, before, 0.0, 0.0):
            raise CheckFailed("params after inner_step", expected="unchanged (θ is needed again for the outer gradient)",
                              got="modified in place", hint="build new tensors (p - lr * g); do not use p -= ..., p.data or optimizer.step()")
        reference_theta = problem.theta()
        reference = adapt(model, reference_theta, x, y, lr=lr, steps=1, first_order=not create_graph)
        mistakes = [
            (adapt_any_lr(model, problem.theta(), x, y, lr=-lr, first_order=True), HINT_SIGN),
            (before, "θ′ equals θ: the gradient step was not applied (return the new dict, not params)"),
            (_adapt_from_own(model, x, y, lr), HINT_OWN_PARAMS),
        ]
        diagnose(label, out, reference, mistakes, atol=atol, rtol=rtol,
                 hint="compute loss = mse(forward(model, params, x), y), g = torch.autograd.grad(loss, params.values(), "
                      "create_graph=create_graph), and return {name: p - lr * g}")

        # structure: how θ′ depends on θ
        if not all(out[n].requires_grad for n in theta):
            raise CheckFailed(f"{label}: θ′ connected to θ", expected="tensors that autograd can trace back to θ",
                              got="tensors with requires_grad=False (detached)",
                              hint="do not detach θ′ (no .detach(), .data or torch.no_grad()): even in first order, "
                                   "θ′ = θ − α·g must let the outer gradient flow back to θ; only g may be a constant")
        vjp = vector_jacobian_product(out, theta, direction)
        if any(v is None for v in vjp):
            raise CheckFailed(f"{label}: θ′ connected to θ", expected="every entry of θ′ to depend on θ", got="a disconnected entry",
                              hint=HINT_UNUSED)
        vjp_dict = dict(zip(theta, vjp))
        if create_graph:
            ref_vjp = dict(zip(reference_theta, vector_jacobian_product(reference, reference_theta, direction)))
            if params_close(vjp_dict, direction, atol, rtol):
                raise CheckFailed(f"{label}: ∂θ′/∂θ", expected="I − α∇²L_support(θ) (the graph of the gradient is kept)",
                                  got="the identity: the gradient was treated as a constant",
                                  hint="pass create_graph=create_graph to torch.autograd.grad so that θ′ remembers how "
                                       "∇L_support depends on θ; without it, MAML silently becomes FOMAML")
            diagnose(f"{label}: (∂θ′/∂θ)ᵀv", vjp_dict, ref_vjp, [], atol=atol, rtol=rtol,
                     hint="θ′ must be θ − lr * g with g from torch.autograd.grad(..., create_graph=True)")
        else:
            if not params_close(vjp_dict, direction, atol, rtol):
                raise CheckFailed(f"{label}: ∂θ′/∂θ", expected="the identity (first order: the gradient is a constant)",
                                  got="a Jacobian with a second-order term",
                                  hint="pass the create_graph argument through to torch.autograd.grad instead of always "
                                       "using create_graph=True")
    passed("inner_step: θ′ = θ − α∇L_support(θ); create_graph=True keeps the second-order term, False drops it")


def _adapt_from_own(model: nn.Module, x: Tensor, y: Tensor, lr: float, steps: int = 1) -> Params:
    own = {n: p.detach().clone().requires_grad_(True) for n, p in params_of(model).items()}
    return detached(adapt(model, own, x, y, lr=lr, steps=steps, first_order=True))


# ----------------------------------------------------------------------------------------------
# Q2 and Q4: MAML and FOMAML meta-gradients of one task


def _outer_gradient(problem: Problem, *, lr: float, steps: int, first_order: bool, start: Params | None = None) -> Params:
    """dL_query(θ′)/dθ for one task, through ``steps`` inner steps (or ∇L_query(θ′) if first order)."""
    theta = problem.theta() if start is None else {n: p.detach().clone().requires_grad_(True) for n, p in start.items()}
    adapted = adapt_any_lr(problem.model, theta, problem.x_s, problem.y_s, lr=lr, steps=steps, first_order=first_order)
    return grad_dict(mse(forward(problem.model, adapted, problem.x_q), problem.y_q), theta)


def _query_gradient_at_theta(problem: Problem) -> Params:
    theta = problem.theta()
    return grad_dict(mse(forward(problem.model, theta, problem.x_q), problem.y_q), theta)


def _outer_gradient_mistakes(problem: Problem, *, lr: float, steps: int, first_order: bool) -> list[tuple[Params, str]]:
    """The meta-gradients that the common mistakes produce, each with what to fix."""
    own = params_of(problem.model)
    mistakes = [
        (_query_gradient_at_theta(problem),
         "this is ∇L_query(θ), the gradient before adaptation: first adapt θ′ on the support set, then "
         "differentiate the query loss at θ′"),
        (_outer_gradient(problem, lr=-lr, steps=steps, first_order=first_order), HINT_SIGN),
        (_outer_gradient(problem, lr=lr, steps=steps, first_order=first_order, start=own), HINT_OWN_PARAMS),
    ]
    if first_order:
        mistakes.insert(0, (_outer_gradient(problem, lr=lr, steps=steps, first_order=False),
                            "this is the full MAML meta-gradient: FOMAML drops the second-order term, so adapt with "
                            "create_graph=False (first_order=True): the inner gradient is a constant"))
    else:
        mistakes.insert(0, (_outer_gradient(problem, lr=lr, steps=steps, first_order=True),
                            "this is the FOMAML gradient ∇L_query(θ′): the Hessian term is missing. Adapt with "
                            "create_graph=True (adapt(..., first_order=False) or inner_step(..., create_graph=True)) and "
                            "differentiate the query loss with respect to θ, not θ′"))
    if steps > 1:
        mistakes.append((_outer_gradient(problem, lr=lr, steps=1, first_order=first_order),
                         f"this is the result of one inner step; take steps={steps} steps, each starting from the previous θ_k"))
    return mistakes


def _check_outer_gradient(fn: Callable[..., Params], fn_name: str, *, first_order: bool, seed: int, steps: int, lr: float,
                          hidden: Sequence[int], activation: str, dtype: torch.dtype) -> None:
    problem = make_problem(seed, hidden=hidden, activation=activation, dtype=dtype)
    theta = problem.theta()
    out = call_student(fn, fn_name, problem.model, theta, problem.x_s, problem.y_s, problem.x_q, problem.y_q, lr, steps=steps)
    label = f"{fn_name}(..., lr={lr}, steps={steps})"
    expect_params_like(label, out, theta, hint="return {name: gradient} with one entry per parameter of θ")
    reference = _outer_gradient(problem, lr=lr, steps=steps, first_order=first_order)
    atol, rtol = tolerances(dtype)
    diagnose(label, out, reference, _outer_gradient_mistakes(problem, lr=lr, steps=steps, first_order=first_order),
             atol=atol, rtol=rtol,
             hint="adapt θ′ from params on (x_s, y_s), compute the query loss at θ′ on (x_q, y_q), and take "
                  "torch.autograd.grad of it with respect to params.values()")


def check_maml_meta_gradient(maml_meta_gradient_one_task: Callable[..., Params], *, seed: int = 0, steps: int = 1, lr: float = 0.3,
                             hidden: Sequence[int] = (8,), activation: str = "tanh", dtype: torch.dtype = torch.float64) -> None:
    """``maml_meta_gradient_one_task(model, params, x_s, y_s, x_q, y_q, lr, steps=...)`` = dL_query(θ′)/dθ.

    Compared with autograd through ``functional.adapt`` (second order); FOMAML, no adaptation, a step
    uphill, the module's own parameters and a single inner step are each recognised and named.
    """
    _check_outer_gradient(maml_meta_gradient_one_task, "maml_meta_gradient_one_task", first_order=False, seed=seed,
                          steps=steps, lr=lr, hidden=hidden, activation=activation, dtype=dtype)
    passed(f"MAML meta-gradient ({steps} inner step{'s' if steps != 1 else ''}) matches autograd through the inner loop")


def check_fomaml_gradient(fomaml_gradient: Callable[..., Params], *, seed: int = 0, steps: int = 1, lr: float = 0.3,
                          hidden: Sequence[int] = (8,), activation: str = "tanh", dtype: torch.dtype = torch.float64) -> None:
    """``fomaml_gradient(model, params, x_s, y_s, x_q, y_q, lr, steps=...)`` = ∇L_query(θ′) with θ′ first order."""
    _check_outer_gradient(fomaml_gradient, "fomaml_gradient", first_order=True, seed=seed, steps=steps, lr=lr,
                          hidden=hidden, activation=activation, dtype=dtype)
    passed(f"FOMAML gradient ({steps} inner step{'s' if steps != 1 else ''}): ∇L_query(θ′), the Hessian term dropped")


# ----------------------------------------------------------------------------------------------
# Q3: the closed form on linear regression


def _linear_variant(theta: Tensor, x_s: Tensor, y_s: Tensor, x_q: Tensor, y_q: Tensor, lr: float, steps: int, *,
                    factor: float = 2.0, hessian: bool = True, at_theta: bool = False, sign: float = 1.0,
                    jacobian_power: int | None = None) -> Tensor:
    """The closed form with one deliberate change (used to recognise common mistakes)."""
    k, d = x_s.shape
    q = x_q.shape[0]
    theta_prime = theta.clone()
    if not at_theta:
        for _ in range(steps):
            theta_prime = theta_prime - sign * lr * (factor / k) * x_s.T @ (x_s @ theta_prime - y_s[:, 0])
    grad_q = (factor / q) * x_q.T @ (x_q @ theta_prime - y_q[:, 0])
    if not hessian:
        return grad_q
    h_s = factor / k * x_s.T @ x_s
    power = steps if jacobian_power is None else jacobian_power
    return torch.linalg.matrix_power(torch.eye(d, dtype=theta.dtype) - sign * lr * h_s, power) @ grad_q


def check_linear_meta_gradient(linear_meta_gradient: Callable[..., Tensor], *, seed: int = 0, dim: int = 3, shots: int = 5,
                               query: int = 8, lr: float = 0.1, steps: int = 1) -> None:
    """``linear_meta_gradient(theta, x_s, y_s, x_q, y_q, lr, steps=...)``: (I − αH_s)^steps ∇L_q(θ′), no autograd.

    Runs under ``torch.no_grad()`` (the closed form needs none); compared with
    ``tasks.linear_maml_meta_gradient``.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = LinearRegressionTasks(dim).sample(1, shots, query, generator)  # float64
    theta = torch.randn(dim, generator=generator, dtype=torch.float64)
    args = (batch.x_support[0], batch.y_support[0], batch.x_query[0], batch.y_query[0])
    label = f"linear_meta_gradient(..., lr={lr}, steps={steps})"
    with torch.no_grad():
        try:
            out = call_student(linear_meta_gradient, "linear_meta_gradient", theta.clone(), *args, lr, steps=steps)
        except CheckFailed as err:
            if err.__cause__ is not None and "grad" in str(err.__cause__):
                raise CheckFailed(err.what, expected=err.expected, got=err.got,
                                  hint="this is the closed-form question: build ∇L = (2/n) Xᵀ(Xθ − y) and "
                                       "H = (2/n) XᵀX with matrix products, no autograd needed") from err.__cause__
            raise
    if not isinstance(out, Tensor):
        raise CheckFailed(label, expected="a torch.Tensor of shape (d,)", got=f"a {type(out).__name__}",
                          hint="return the meta-gradient as a tensor")
    expect_shape(label, out, (dim,), hint="θ has shape (d,); y has shape (n, 1): use y[:, 0] (or squeeze) so the result is (d,)")
    if out.dtype != theta.dtype:
        raise CheckFailed(f"{label}.dtype", expected=str(theta.dtype), got=str(out.dtype),
                          hint="create the identity with torch.eye(d, dtype=theta.dtype)")
    reference = linear_maml_meta_gradient(theta, *args, lr=lr, steps=steps)
    mistakes = [
        (_linear_variant(theta, *args, lr, steps, hessian=False),
         "this is ∇L_query(θ′) alone, the FOMAML gradient: multiply by the Jacobian (I − α H_support) "
         "(to the power steps), with H_support = (2/K) XᵀX"),
        (_linear_variant(theta, *args, lr, steps, at_theta=True),
         "the query gradient was evaluated at θ: evaluate it at the adapted θ′ = θ − α∇L_support(θ)"),
        (_linear_variant(theta, *args, lr, steps, sign=-1.0), HINT_SIGN),
        (_linear_variant(theta, *args, lr, steps, factor=1.0),
         "a factor 2 is missing: for L = (1/n)‖Xθ − y‖², ∇L = (2/n) Xᵀ(Xθ − y) and H = (2/n) XᵀX"),
    ]
    if steps > 1:
        mistakes.append((_linear_variant(theta, *args, lr, steps, jacobian_power=1),
                         f"the Jacobian of {steps} inner steps is the product of {steps} factors: (I − αH)^{steps} "
                         "(torch.linalg.matrix_power)"))
        mistakes.append((_linear_variant(theta, *args, lr, 1),
                         f"this is the one-step answer: with steps={steps}, take {steps} inner steps and raise "
                         f"(I − αH) to the power {steps}"))
    diagnose(label, out, reference, mistakes, atol=1e-9, rtol=1e-7,
             hint="θ′ = θ − α(2/K) X_sᵀ(X_s θ − y_s) (repeat steps times); g_q = (2/Q) X_qᵀ(X_q θ′ − y_q); "
                  "return (I − α(2/K) X_sᵀX_s)^steps g_q")
    passed(f"closed-form meta-gradient on linear regression ({steps} inner step{'s' if steps != 1 else ''}) matches")


# ----------------------------------------------------------------------------------------------
# Q5: the Reptile direction


def check_reptile_direction(reptile_direction: Callable[..., Params], *, seed: int = 0, steps: int = 3, lr: float = 0.1,
                            hidden: Sequence[int] = (8,), activation: str = "tanh", dtype: torch.dtype = torch.float64) -> None:
    """``reptile_direction(model, params, x, y, lr, steps)`` = θ − φ, φ after ``steps`` SGD steps from θ on (x, y)."""
    problem = make_problem(seed, hidden=hidden, activation=activation, dtype=dtype)
    x = torch.cat([problem.x_s, problem.x_q])
    y = torch.cat([problem.y_s, problem.y_q])
    theta = problem.theta()
    out = call_student(reptile_direction, "reptile_direction", problem.model, theta, x, y, lr, steps)
    label = f"reptile_direction(..., lr={lr}, steps={steps})"
    expect_params_like(label, out, theta, hint="return {name: θ − φ} with one entry per parameter")

    def phi_from(start: Params, n_steps: int, step_lr: float = lr) -> Params:
        leaves = {n: p.detach().clone().requires_grad_(True) for n, p in start.items()}
        return detached(adapt(problem.model, leaves, x, y, lr=step_lr, steps=n_steps, first_order=True))

    base = detached(problem.params)
    phi = phi_from(base, steps)
    reference = {n: base[n] - phi[n] for n in base}
    one = phi_from(base, 1)
    own = detached(params_of(problem.model))
    own_phi = phi_from(own, steps)
    mistakes = [
        ({n: phi[n] - base[n] for n in base},
         "wrong sign: the Reptile direction is θ − φ, used like a gradient (θ ← θ − β(θ − φ) moves θ towards φ)"),
        (phi, "this is φ itself: return the difference θ − φ"),
        ({n: base[n] - one[n] for n in base},
         f"only one SGD step was taken: run steps={steps} steps, each from the previous φ_k"),
        ({n: own[n] - own_phi[n] for n in base}, HINT_OWN_PARAMS),
    ]
    atol, rtol = tolerances(dtype)
    diagnose(label, out, reference, mistakes, atol=atol, rtol=rtol,
             hint="φ = θ; repeat steps times: φ ← φ − lr ∇L(φ) on (x, y); return {name: θ − φ}")
    passed(f"Reptile direction θ − φ after {steps} SGD step{'s' if steps != 1 else ''} matches")
