"""Graded checks for notebook 03, first-order trade-offs.

The student fixes two bugs that make "MAML" train silently wrong and writes the FOMAML gradient:

- the *silent FOMAML* bug: the inner ``torch.autograd.grad`` without ``create_graph=True``, so the
  adapted parameters θ′ no longer depend on θ through the inner gradient and the Hessian term is lost;
- the *``.item()`` loop*: task losses turned into Python floats and re-wrapped in a fresh tensor, so
  the meta-loss has no path back to θ and ``backward()`` leaves every ``p.grad`` at ``None``;
- FOMAML: the query gradient at θ′, with the second-order term dropped on purpose.

Each check compares with ``maml.meta_gradient`` on a seeded batch of sinusoid tasks, checks structure
(a differentiable scalar loss, gradients without a graph for first order) and tells apart the usual
wrong answers (MAML vs FOMAML, a query gradient taken at θ instead of θ′, a sum instead of a mean).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metalearn_edu.course.checks.sinusoid import BLANK_HINT, as_tensor_dict, call_student, close, finn_problem
from metalearn_edu.course.feedback import CheckFailed, expect_close, expect_true, passed
from metalearn_edu.functional import Params, forward, mse, params_of
from metalearn_edu.maml import MetaGradient, meta_gradient
from metalearn_edu.tasks import TaskBatch

__all__ = ["check_choice", "check_fomaml_meta_gradient", "check_maml_meta_gradient", "check_outer_loss", "check_speedup"]

SILENT_FOMAML_HINT = (
    "your result equals the FOMAML gradient: this is the silent-FOMAML bug. The inner torch.autograd.grad needs "
    "create_graph=True, otherwise θ′ = θ − α∇L_support(θ) is built from a gradient without a graph and the "
    "Hessian term −α∇²L_support ∇L_query is lost"
)


def _problem(seed: int, tasks: int = 4) -> tuple[nn.Module, Params, TaskBatch]:
    model, batch = finn_problem(seed, tasks, 5, 7)
    return model, params_of(model), batch


def _flat(grads: Params, names: Sequence[str]) -> Tensor:
    return torch.cat([grads[n].detach().reshape(-1) for n in names])


def _references(model: nn.Module, params: Params, batch: TaskBatch, lr: float) -> dict[str, MetaGradient]:
    return {algo: meta_gradient(model, params, batch, algo=algo, lr=lr, batched=False) for algo in ("maml", "fomaml")}


def _query_gradient_at_theta(model: nn.Module, params: Params, batch: TaskBatch) -> Params:
    """1/T Σ_i ∇L_query,i(θ): the gradient without any adaptation (a common wrong FOMAML)."""
    theta = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    loss = torch.stack([mse(forward(model, theta, batch.x_query[i]), batch.y_query[i]) for i in range(batch.num_tasks)]).mean()
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))


def _compare_gradient(name: str, got: Params, want: Params, hint: str) -> None:
    names = list(want)
    expect_close(name, _flat(got, names), _flat(want, names), rtol=1e-3, atol=1e-5, hint=hint)


def check_maml_meta_gradient(maml_meta_gradient: Callable[..., Any], *, seed: int = 0, lr: float = 0.01) -> None:
    """The fixed ``maml_meta_gradient(model, params, batch, lr)`` returns the second-order MAML meta-gradient."""
    name = "maml_meta_gradient(model, params, batch, lr)"
    model, params, batch = _problem(seed)
    refs = _references(model, params, batch, lr)
    got = as_tensor_dict(name, call_student(name, maml_meta_gradient, model, params, batch, lr), params)
    if close(got, refs["maml"].grads, rtol=1e-3, atol=1e-5):
        passed("maml_meta_gradient is second order again: it matches meta_gradient(algo='maml')")
        return
    if close(got, refs["fomaml"].grads, rtol=1e-3, atol=1e-5):
        hint = SILENT_FOMAML_HINT
    elif close(got, {n: g * batch.num_tasks for n, g in refs["maml"].grads.items()}, rtol=1e-3, atol=1e-5):
        hint = "you summed over tasks; the meta-gradient is the mean over the T tasks"
    else:
        hint = ("fix only the bug: keep the inner gradient differentiable (create_graph=True), adapt from θ for every task, "
                "average the query losses, then differentiate with respect to θ")
    _compare_gradient(f"{name} (compared with meta_gradient(algo='maml'))", got, refs["maml"].grads, hint)


def check_outer_loss(outer_loss: Callable[..., Any], *, seed: int = 0, lr: float = 0.01) -> None:
    """The fixed ``outer_loss(model, params, batch, lr)`` is a scalar tensor whose gradient is the MAML meta-gradient."""
    name = "outer_loss(model, params, batch, lr)"
    model, params, batch = _problem(seed)
    refs = _references(model, params, batch, lr)
    loss = call_student(name, outer_loss, model, params, batch, lr)
    if isinstance(loss, (int, float)):
        raise CheckFailed(name, expected="a scalar torch tensor attached to the graph", got=f"a Python {type(loss).__name__}",
                          hint="a float cannot be differentiated: remove .item() / float() and keep the task losses as tensors")
    if not isinstance(loss, Tensor):
        raise CheckFailed(name, expected="a scalar torch tensor", got=f"a {type(loss).__name__}",
                          hint="return torch.stack(task_losses).mean()")
    expect_true(loss.numel() == 1, f"{name} returns a single number (got shape {tuple(loss.shape)})",
                hint="average the task losses: torch.stack(task_losses).mean()")
    if loss.grad_fn is None:
        if loss.requires_grad:
            hint = ("this tensor is a new leaf: torch.tensor(total, requires_grad=True) rebuilds the loss from numbers, so it has "
                    "no path back to θ and backward() leaves every p.grad at None. Keep each task loss as a tensor "
                    "(no .item()) and return torch.stack(losses).mean()")
        else:
            hint = "the loss was detached from the graph (.item(), float(), .detach() or torch.no_grad()); keep it a tensor"
        raise CheckFailed(f"{name}.grad_fn", expected="a graph node (the loss depends on θ)", got="None", hint=hint)
    expect_close(f"the value of {name}", loss, refs["maml"].loss, rtol=1e-4, atol=1e-6,
                 hint="the outer loss is the mean over tasks of the query MSE after adapting from θ on the support set")
    names = list(params)
    grads = torch.autograd.grad(loss.reshape(()), [params[n] for n in names], allow_unused=True)
    unused = [n for n, g in zip(names, grads) if g is None]
    if unused:
        raise CheckFailed(f"the gradient of {name}", expected="a gradient for every parameter", got=f"none for {unused}",
                          hint="compute the loss from the params you were given (adapt(model, params, ...)), not from a copy")
    got = dict(zip(names, grads))
    if close(got, refs["maml"].grads, rtol=1e-3, atol=1e-5):
        passed("outer_loss is a differentiable tensor and its gradient is the MAML meta-gradient")
        return
    hint = SILENT_FOMAML_HINT if close(got, refs["fomaml"].grads, rtol=1e-3, atol=1e-5) else (
        "differentiate through the adaptation: θ′ = adapt(model, params, x_support, y_support, lr=lr) (second order)")
    _compare_gradient(f"the gradient of {name}", got, refs["maml"].grads, hint)


def check_fomaml_meta_gradient(fomaml_meta_gradient: Callable[..., Any], *, seed: int = 0, lr: float = 0.01) -> None:
    """``fomaml_meta_gradient(model, params, batch, lr)`` = 1/T Σ_i ∇L_query,i(θ′_i), as plain tensors without a graph."""
    name = "fomaml_meta_gradient(model, params, batch, lr)"
    model, params, batch = _problem(seed)
    refs = _references(model, params, batch, lr)
    got = as_tensor_dict(name, call_student(name, fomaml_meta_gradient, model, params, batch, lr), params)
    if not close(got, refs["fomaml"].grads, rtol=1e-3, atol=1e-5):
        if close(got, refs["maml"].grads, rtol=1e-3, atol=1e-5):
            hint = ("that is the full MAML meta-gradient: FOMAML drops the second-order term, so the inner gradient must not "
                    "be differentiated (no create_graph, or detach it: adapt(..., first_order=True))")
        elif close(got, _query_gradient_at_theta(model, params, batch), rtol=1e-3, atol=1e-5):
            hint = ("you took the query gradient at θ, without adapting. FOMAML still adapts: it evaluates ∇L_query at θ′ = "
                    "θ − α∇L_support(θ) and only treats ∂θ′/∂θ as the identity")
        elif close(got, {n: g * batch.num_tasks for n, g in refs["fomaml"].grads.items()}, rtol=1e-3, atol=1e-5):
            hint = "you summed over tasks; take the mean over the T tasks"
        else:
            hint = "for each task: θ′ = θ − α∇L_support(θ) (detached gradient), g_i = ∇L_query(θ′); return the mean of the g_i"
        _compare_gradient(f"{name} (compared with meta_gradient(algo='fomaml'))", got, refs["fomaml"].grads, hint)
    carrying = [n for n, g in got.items() if g.requires_grad]
    expect_true(not carrying, "the FOMAML gradients are plain tensors without a graph",
                hint=f"{carrying} still carry a graph: a first-order method needs no create_graph anywhere (or .detach() the result)")
    passed("fomaml_meta_gradient matches meta_gradient(algo='fomaml') and keeps no graph")


def _positive_number(what: str, value: Any) -> float:
    if value is None:
        raise CheckFailed(what, expected="a number", got="None", hint=BLANK_HINT)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CheckFailed(what, expected="a number", got=f"a {type(value).__name__}", hint="store a float") from None
    if not math.isfinite(number) or number <= 0:
        raise CheckFailed(what, expected="a positive finite number", got=f"{number!r}", hint="re-run the timing cell")
    return number


def check_speedup(speedup: Any, t_maml: Any, t_fomaml: Any) -> None:
    """Plausibility of a measured speed-up ``speedup = t_maml / t_fomaml`` (seconds per meta-gradient).

    No number is hard-coded: the check only asks that the three values are consistent, that each time
    is a plausible duration for one meta-gradient on the Finn configuration, and that FOMAML is not
    measured slower than MAML (it does strictly less work).
    """
    t_m = _positive_number("t_maml", t_maml)
    t_f = _positive_number("t_fomaml", t_fomaml)
    ratio = _positive_number("speedup", speedup)
    for what, t in (("t_maml", t_m), ("t_fomaml", t_f)):
        expect_true(1e-5 <= t <= 10.0, f"{what} is a plausible time for one meta-gradient, in seconds (got {t:.3g})",
                    hint="divide the total time by the number of repetitions; time.perf_counter() returns seconds")
    if abs(ratio - t_f / t_m) <= 0.01 * (t_f / t_m) and abs(ratio - t_m / t_f) > 0.01 * (t_m / t_f):
        raise CheckFailed("speedup", expected=f"t_maml / t_fomaml = {t_m / t_f:.3g}", got=f"{ratio:.3g}",
                          hint="you inverted the ratio: the speed-up of FOMAML is MAML's time divided by FOMAML's")
    expect_close("speedup", ratio, t_m / t_f, rtol=0.01, atol=0, hint="speedup = t_maml / t_fomaml, from your two measurements")
    expect_true(ratio >= 0.9, f"FOMAML is not slower than MAML (measured speed-up {ratio:.2f})",
                hint="FOMAML skips the second backward pass, so it cannot be much slower: time more repetitions, take the "
                     "median, warm up first, and time both with the same implementation (batched or loop)")
    expect_true(ratio <= 10.0, f"the speed-up is plausible (measured {ratio:.2f})",
                hint="more than 10× is suspicious for one inner step: time both with the same implementation and batch")
    passed(f"FOMAML measured {ratio:.2f}× faster than MAML per meta-gradient")


def check_choice(answer: Any, *, question: str, options: str = "abcd", correct: str | None = None, hint: str | None = None) -> None:
    """A multiple-choice answer: one of ``options`` (and, in the instructor's hidden test, ``correct``)."""
    if answer is None:
        raise CheckFailed(question, expected=f"one of {', '.join(repr(o) for o in options)}", got="None", hint=BLANK_HINT)
    if not isinstance(answer, str) or answer.strip().lower() not in options:
        raise CheckFailed(question, expected=f"one of {', '.join(repr(o) for o in options)}", got=repr(answer),
                          hint="answer with the letter of one option, as a string")
    if correct is not None and answer.strip().lower() != correct:
        raise CheckFailed(question, expected="the correct option", got=repr(answer), hint=hint)
    passed(f"{question}: answer recorded" if correct is None else f"{question}: correct")
