"""Graded checks for notebook 02, MAML on sinusoids.

Each check calls the student's function on seeded inputs, compares the result with the library's
reference (``tasks.SinusoidTasks``, ``maml.meta_gradient``, ``evaluate.adaptation_curves`` and
``evaluate.evaluate_sinusoid``) and, when something is off, raises
:class:`~metalearn_edu.course.feedback.CheckFailed` naming the most likely mistake: a missing
``create_graph=True`` (MAML silently turned first order), a meta-loss turned into a float with
``.item()``, a network re-initialised or copied per task, a task that does not start from the
meta-parameters, stale gradients, a sum instead of a mean.

The helpers :func:`call_student`, :func:`as_tensor_dict` and :func:`close` are shared with
``checks.first_order``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from metalearn_edu.course.feedback import CheckFailed, expect_close, expect_shape, expect_true, passed
from metalearn_edu.evaluate import adaptation_curves, evaluate_sinusoid
from metalearn_edu.functional import Params, make_mlp, params_of
from metalearn_edu.maml import meta_gradient
from metalearn_edu.tasks import SinusoidTasks, TaskBatch

__all__ = [
    "as_tensor_dict",
    "call_student",
    "check_evaluate_after_steps",
    "check_maml_step",
    "check_one_step_ratio",
    "check_sample_sinusoid_tasks",
    "close",
    "finn_problem",
]

BLANK_HINT = "replace `raise NotImplementedError()` with your code, run that cell, then run this check again"

# Substrings of torch error messages and the mistake they usually mean in these exercises.
_ERROR_HINTS = (
    ("does not require grad and does not have a grad_fn",
     "a tensor on the way to the loss was cut from the graph: a `.item()`, a `float(...)`, a `.detach()` or a "
     "`torch.tensor(...)` rebuilt from numbers. Keep the losses as tensors until the final backward"),
    ("backward through the graph a second time",
     "call backward once per meta-iteration, on the mean of the task losses (or pass create_graph=True to "
     "the inner torch.autograd.grad, which keeps the inner graph alive)"),
    ("One of the differentiated Tensors appears to not have been used in the graph",
     "the loss does not depend on the parameters you differentiate: compute it from those same tensors"),
    ("must match the size", "check the shapes: x is (K, 1) for one task and (T, K, 1) for a batch"),
)


def call_student(name: str, fn: Any, *args: Any, hint: str | None = None, **kwargs: Any) -> Any:
    """Call the student's ``fn``; turn a blank or a crash into a :class:`CheckFailed` that says why."""
    if not callable(fn):
        raise CheckFailed(name, expected="a function", got=f"a {type(fn).__name__}",
                          hint="run the cell that defines it (and do not reuse its name for a value)")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(name, expected="your implementation", got="NotImplementedError (the blank is not filled in)",
                          hint=BLANK_HINT) from None
    except CheckFailed:
        raise
    except Exception as err:  # a student's bug: report it, never crash the grader
        message = f"{type(err).__name__}: {err}".strip()
        known = next((h for key, h in _ERROR_HINTS if key in message), None)
        raise CheckFailed(name, expected="a call that runs without an error", got=message.splitlines()[0][:300],
                          hint=known or hint) from err


def as_tensor_dict(name: str, value: Any, like: Params, hint: str | None = None) -> dict[str, Tensor]:
    """Check that ``value`` is a dict of tensors with the names and shapes of ``like``; return it."""
    if not isinstance(value, Mapping):
        raise CheckFailed(name, expected=f"a dict {{parameter name: tensor}} with keys {list(like)}",
                          got=f"a {type(value).__name__}", hint=hint or "return one gradient per parameter, keyed like params")
    if set(value) != set(like):
        raise CheckFailed(name, expected=f"keys {sorted(like)}", got=f"keys {sorted(map(str, value))}",
                          hint=hint or "use the parameter names of params (dict(zip(params, grads)))")
    out = {}
    for key, ref in like.items():
        item = value[key]
        if not isinstance(item, Tensor):
            raise CheckFailed(f"{name}[{key!r}]", expected="a tensor", got=f"a {type(item).__name__}", hint=hint)
        expect_shape(f"{name}[{key!r}]", item, tuple(ref.shape), hint=hint)
        out[key] = item
    return out


def close(a: Params | Tensor, b: Params | Tensor, *, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """True when two tensors (or two dicts of tensors with the same keys) agree within tolerance."""
    if isinstance(a, Mapping):
        return all(close(a[k], b[k], rtol=rtol, atol=atol) for k in b)
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def finn_problem(seed: int, tasks: int, shots: int, query: int) -> tuple[nn.Module, TaskBatch]:
    """The Finn 40-40 ReLU network and a seeded batch of sinusoid tasks (float32)."""
    torch.manual_seed(seed)
    model = make_mlp()
    batch = SinusoidTasks().sample(tasks, shots, query, torch.Generator().manual_seed(seed))
    return model, batch


# --- sample_sinusoid_tasks ------------------------------------------------------------------------


def _uniform_ok(name: str, values: Tensor, low: float, high: float, hint: str) -> None:
    """Range, mean and spread of a sample that should be U[low, high] (a few thousand draws)."""
    v = values.detach().double().reshape(-1)
    lo, hi, mean, std = float(v.min()), float(v.max()), float(v.mean()), float(v.std())
    width = high - low
    expect_true(lo >= low - 1e-6 and hi <= high + 1e-6, f"{name} lies in [{low:g}, {high:g}]",
                hint=f"{hint}; your values range over [{lo:.3g}, {hi:.3g}]")
    expect_true(lo < low + 0.05 * width and hi > high - 0.05 * width, f"{name} covers all of [{low:g}, {high:g}]",
                hint=f"{hint}; your values only range over [{lo:.3g}, {hi:.3g}]")
    se = width / math.sqrt(12 * v.numel())
    expect_close(f"mean of {name}", mean, (low + high) / 2, atol=6 * se, rtol=0,
                 hint=f"{hint}; a uniform draw has mean (low + high) / 2")
    expect_close(f"standard deviation of {name}", std, width / math.sqrt(12), atol=0, rtol=0.05,
                 hint=f"{hint}; a uniform draw has standard deviation (high − low) / √12 (torch.rand is uniform, torch.randn is not)")


def check_sample_sinusoid_tasks(sample_sinusoid_tasks: Callable[..., TaskBatch], *, seed: int = 0) -> None:
    """``sample_sinusoid_tasks(num_tasks, shots, query, generator)`` samples Finn et al.'s sinusoid tasks.

    Checked: a TaskBatch with the right shapes and dtype; y = A sin(x − φ) on support and query; the
    distribution of A, φ and x over 2000 tasks; that every draw comes from ``generator``; and, last,
    bit-for-bit agreement with ``SinusoidTasks().sample`` on a seed (same order of draws).
    """
    name = "sample_sinusoid_tasks(7, 5, 3, generator)"
    batch = call_student(name, sample_sinusoid_tasks, 7, 5, 3, torch.Generator().manual_seed(seed))
    if not isinstance(batch, TaskBatch):
        raise CheckFailed(name, expected="a TaskBatch", got=f"a {type(batch).__name__}",
                          hint="return TaskBatch(x_support, y_support, x_query, y_query, {'amplitude': A, 'phase': phase})")
    for field, shape in (("x_support", (7, 5, 1)), ("y_support", (7, 5, 1)), ("x_query", (7, 3, 1)), ("y_query", (7, 3, 1))):
        value = getattr(batch, field)
        expect_true(isinstance(value, Tensor), f"batch.{field} is a tensor")
        expect_shape(f"batch.{field}", value, shape, hint="shapes are (num_tasks, points, 1): keep the trailing feature dimension")
        expect_true(value.dtype == torch.float32, f"batch.{field} has dtype float32",
                    hint=f"got {value.dtype}; the network's parameters are float32")
    info = batch.info
    expect_true(isinstance(info, Mapping) and {"amplitude", "phase"} <= set(info),
                "batch.info has the keys 'amplitude' and 'phase'", hint="info={'amplitude': A, 'phase': phase}")
    expect_shape("batch.info['amplitude']", info["amplitude"], (7,), hint="one amplitude per task")
    expect_shape("batch.info['phase']", info["phase"], (7,), hint="one phase per task")

    amp, phase = info["amplitude"][:, None, None], info["phase"][:, None, None]
    for xs, ys, where in ((batch.x_support, batch.y_support, "support"), (batch.x_query, batch.y_query, "query")):
        truth = amp * torch.sin(xs - phase)
        if not close(ys, truth, atol=1e-5):
            if close(ys, amp * torch.sin(xs + phase), atol=1e-5):
                hint = "the sign of the phase: Finn et al. use y = A sin(x − φ)"
            elif close(ys, torch.sin(xs - phase), atol=1e-5):
                hint = "multiply by the amplitude A"
            else:
                hint = (f"y must be A sin(x − φ) with the A and φ of its own task (broadcast A[:, None, None]); the {where} "
                        "points of a task share its A and φ")
            expect_close(f"batch.y_{where}", ys, truth, atol=1e-5, hint=hint)

    big = call_student("sample_sinusoid_tasks(2000, 5, 5, generator)", sample_sinusoid_tasks, 2000, 5, 5,
                       torch.Generator().manual_seed(seed + 1))
    _uniform_ok("the amplitudes", big.info["amplitude"], 0.1, 5.0, "Finn et al.: amplitude A ~ U[0.1, 5]")
    _uniform_ok("the phases", big.info["phase"], 0.0, math.pi, "Finn et al.: phase φ ~ U[0, π]")
    _uniform_ok("the inputs x", torch.cat([big.x_support, big.x_query], dim=1), -5.0, 5.0, "Finn et al.: x ~ U[−5, 5]")

    torch.manual_seed(seed + 12345)
    again = call_student(name, sample_sinusoid_tasks, 7, 5, 3, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed + 54321)
    twice = call_student(name, sample_sinusoid_tasks, 7, 5, 3, torch.Generator().manual_seed(seed))
    expect_true(torch.equal(again.x_support, twice.x_support) and torch.equal(again.info["amplitude"], twice.info["amplitude"]),
                "the same generator seed gives the same tasks",
                hint="draw every random number from `generator` (e.g. tensor.uniform_(low, high, generator=generator)), "
                     "not from torch's global random stream")
    other = call_student(name, sample_sinusoid_tasks, 7, 5, 3, torch.Generator().manual_seed(seed + 1))
    expect_true(not torch.equal(other.x_support, again.x_support), "different generator seeds give different tasks",
                hint="draw the random numbers from `generator`; do not seed it yourself inside the function")

    reference = SinusoidTasks().sample(7, 5, 3, torch.Generator().manual_seed(seed))
    order_hint = ("the distribution is right but the draws come in a different order than the reference: draw the "
                  "amplitudes (T,), then the phases (T,), then all inputs as one (T, K + Q, 1) tensor, each with "
                  ".uniform_(low, high, generator=generator); the first K inputs of each task are the support set")
    for field in ("amplitude", "phase"):
        expect_close(f"batch.info[{field!r}] on seed {seed}", batch.info[field], reference.info[field], atol=1e-6, hint=order_hint)
    expect_close(f"batch.x_support on seed {seed}", batch.x_support, reference.x_support, atol=1e-6, hint=order_hint)
    expect_close(f"batch.x_query on seed {seed}", batch.x_query, reference.x_query, atol=1e-6, hint=order_hint)
    passed("sample_sinusoid_tasks draws Finn et al.'s tasks and matches SinusoidTasks().sample on the seed")


# --- maml_step ------------------------------------------------------------------------------------


class _RecordingSGD(torch.optim.SGD):
    """Plain SGD that also records every parameter's ``.grad`` at each ``step()`` (what the check compares)."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        self._named = list(model.named_parameters())
        super().__init__([p for _, p in self._named], lr=lr)
        self.records: list[dict[str, Tensor | None]] = []

    def step(self, closure: Any = None) -> Any:  # noqa: D102 - documented in the class docstring
        self.records.append({n: None if p.grad is None else p.grad.detach().clone() for n, p in self._named})
        return super().step(closure)


def check_maml_step(maml_step: Callable[..., Any], *, seed: int = 0, inner_lr: float = 0.01, tasks: int = 4) -> None:
    """``maml_step(model, optimizer, batch, inner_lr)`` does one MAML meta-training iteration.

    The gradients it leaves in ``p.grad`` when it calls ``optimizer.step()`` must equal
    ``meta_gradient(..., algo="maml")``; it must take exactly one step, clear stale gradients, and
    return the mean query loss after adaptation.
    """
    name = "maml_step(model, optimizer, batch, inner_lr)"
    model, batch = finn_problem(seed, tasks, 5, 7)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference = meta_gradient(model, params_of(model), batch, algo="maml", lr=inner_lr, batched=False)
    first_order = meta_gradient(model, params_of(model), batch, algo="fomaml", lr=inner_lr, batched=False)
    stale_gen = torch.Generator().manual_seed(seed + 7)
    stale = {n: torch.randn(p.shape, generator=stale_gen) for n, p in theta.items()}
    for n, p in model.named_parameters():
        p.grad = stale[n].clone()  # left over from a previous iteration: the step must clear it
    outer_lr = 0.1
    optimizer = _RecordingSGD(model, lr=outer_lr)
    returned = call_student(name, maml_step, model, optimizer, batch, inner_lr)

    steps = len(optimizer.records)
    expect_true(steps == 1, f"{name} calls optimizer.step() exactly once (it called it {steps} times)",
                hint="one meta-iteration = one outer update, after the losses of all tasks are averaged; "
                     "never step inside the loop over tasks" if steps > 1 else "finish with optimizer.step()")
    grads = optimizer.records[0]
    missing = [n for n, g in grads.items() if g is None or not bool(g.abs().sum() > 0)]
    if missing:
        raise CheckFailed("the meta-gradient in p.grad at optimizer.step()", expected="a non-zero gradient on every parameter",
                          got=f"no gradient on {missing}",
                          hint="no gradient reached the model's own parameters. Adapt from θ = params_of(model) (not a "
                               "fresh make_mlp() or a deepcopy per task), keep the task losses as tensors (no .item()) and "
                               "call backward on their mean")
    if close(grads, {n: stale[n] + reference.grads[n] for n in grads}):
        raise CheckFailed("the meta-gradient in p.grad", expected="the gradient of this meta-iteration only",
                          got="it plus the gradient left over in p.grad", hint="call optimizer.zero_grad() before backward")
    if not close(grads, reference.grads, rtol=1e-3, atol=1e-5):
        if close(grads, first_order.grads, rtol=1e-3, atol=1e-5):
            hint = ("your gradient is the FOMAML gradient: MAML became first order without telling you. Pass "
                    "create_graph=True to the inner torch.autograd.grad so θ′ = θ − α∇L_support(θ) stays differentiable in θ")
        elif close(grads, {n: g * batch.num_tasks for n, g in reference.grads.items()}, rtol=1e-3, atol=1e-5):
            hint = "you summed the task losses; MAML averages them over the T tasks (torch.stack(losses).mean())"
        else:
            hint = ("for each task adapt from θ (θ′ = θ − α∇L_support(θ), with create_graph=True), score θ′ on that task's "
                    "query set, average over tasks, then backward. Each task starts from the same θ: do not change the "
                    "model's weights inside the task loop or carry θ′ over to the next task")
        expect_close("the meta-gradient in p.grad at optimizer.step()", torch.cat([grads[n].reshape(-1) for n in theta]),
                     torch.cat([reference.grads[n].reshape(-1) for n in theta]), rtol=1e-3, atol=1e-5, hint=hint)
    for n, p in model.named_parameters():
        expect_close(f"model parameter {n!r} after the step", p, theta[n] - outer_lr * grads[n], rtol=1e-4, atol=1e-6,
                     hint="only optimizer.step() may change the model's weights; adapt a dict of tensors, not the model")
    if isinstance(returned, Tensor):
        expect_true(returned.numel() == 1, "maml_step returns one number (the mean query loss)")
    elif not isinstance(returned, (int, float)):
        raise CheckFailed(f"the value returned by {name}", expected="the mean query loss (a float)", got=f"a {type(returned).__name__}",
                          hint="return loss.item() (after backward: a float is fine for logging)")
    expect_close(f"the value returned by {name}", float(returned), float(reference.loss), rtol=1e-4, atol=1e-6,
                 hint="return the meta-loss: the query loss after adaptation, averaged over the tasks")
    passed("maml_step computes the MAML meta-gradient (second order) and takes one optimizer step")


# --- evaluate_after_steps -------------------------------------------------------------------------


def check_evaluate_after_steps(evaluate_after_steps: Callable[..., Any], *, seed: int = 0, inner_lr: float = 0.01, max_steps: int = 3) -> None:
    """``evaluate_after_steps(model, batch, inner_lr, max_steps)`` -> query MSE after 0..max_steps steps.

    The result (max_steps + 1 numbers, averaged over tasks) must equal the library's
    ``adaptation_curves(...).mean(0)``; every task must start from the meta-parameters and the model's
    weights must not change.
    """
    name = "evaluate_after_steps(model, batch, inner_lr, max_steps)"
    model, batch = finn_problem(seed, 5, 5, 20)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}

    def reference(b: TaskBatch) -> Tensor:
        return adaptation_curves(model, theta, b.x_support, b.y_support, b.x_query, b.y_query, lr=inner_lr, max_steps=max_steps).mean(0)

    got = call_student(name, evaluate_after_steps, model, batch, inner_lr, max_steps)
    for n, p in model.named_parameters():
        expect_true(torch.equal(p.detach(), theta[n]), f"{name} leaves the model's weight {n!r} unchanged",
                    hint="evaluation must not train the meta-parameters: adapt a copy (a dict of tensors), not the model in place")
    try:
        got_t = torch.as_tensor(got if not isinstance(got, Tensor) else got.detach(), dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(f"the value returned by {name}", expected=f"{max_steps + 1} numbers", got=f"a {type(got).__name__}",
                          hint="return a tensor (or list) of the mean query MSE after 0, 1, ..., max_steps steps") from None
    expect_shape(f"the value returned by {name}", got_t, (max_steps + 1,),
                 hint="one number for each s = 0, 1, ..., max_steps (s = 0 is the meta-parameters before any step)")
    want = reference(batch)
    if close(got_t, want, rtol=1e-4, atol=1e-6):
        passed("evaluate_after_steps matches the library's adaptation curves")
        return
    one = batch.task(0)
    single = call_student(name, evaluate_after_steps, model, one, inner_lr, max_steps)
    try:
        single_ok = close(torch.as_tensor(single if not isinstance(single, Tensor) else single.detach(), dtype=torch.float64).reshape(-1),
                          reference(one), rtol=1e-4, atol=1e-6)
    except (TypeError, ValueError, RuntimeError):
        single_ok = False
    if single_ok:
        hint = ("right for a single task but not for several: every task must start from the meta-parameters θ; "
                "do not carry the adapted parameters of one task over to the next")
    elif not close(got_t[:1], want[:1], rtol=1e-4, atol=1e-6):
        hint = ("the value after 0 steps is the query MSE of the meta-parameters themselves, averaged over tasks: start "
                "every task from θ (the model's trained weights, not a fresh initialisation) and score it on the query set")
    else:
        hint = ("take each step on the task's support set, θ_{s+1} = θ_s − α∇L_support(θ_s), and record the query MSE "
                "after every step; average over tasks")
    expect_close(f"the value returned by {name}", got_t, want, rtol=1e-4, atol=1e-6, hint=hint)


# --- interpreting Table 2 -------------------------------------------------------------------------


def check_one_step_ratio(answer: Any, maml_model: nn.Module, pretrained_model: nn.Module, *, tasks: int = 600, shots: int = 5,
                         lr: float = 0.01, seed: int = 0, rtol: float = 0.1) -> None:
    """``answer`` = (pretrained MSE after one step) / (MAML MSE after one step), 5-shot, checked by re-evaluating."""
    what = "ratio_after_one_step"
    if answer is None:
        raise CheckFailed(what, expected="a number", got="None", hint=BLANK_HINT)
    try:
        value = float(answer)
    except (TypeError, ValueError):
        raise CheckFailed(what, expected="a number", got=f"a {type(answer).__name__}", hint="compute it from the table above") from None
    maml = evaluate_sinusoid(maml_model, tasks=tasks, shots=shots, max_steps=10, lr=lr, seed=seed)
    pre = evaluate_sinusoid(pretrained_model, tasks=tasks, shots=shots, max_steps=10, lr=lr, seed=seed)
    want = pre.mean[1] / maml.mean[1]
    if math.isfinite(value) and value > 0 and abs(1 / value - want) <= rtol * want:
        hint = "you inverted the ratio: divide the pretrained model's MSE by MAML's"
    elif math.isfinite(value) and abs(value - pre.mean[10] / maml.mean[10]) <= rtol * abs(want) and abs(value - want) > rtol * want:
        hint = "that is the ratio after 10 steps; the question asks about one step"
    else:
        hint = ("read the 1-step column of the 5-shot table: the pretrained model's MSE divided by MAML's "
                "(both evaluated on the same 600 test tasks, seed 0)")
    expect_close(what, value, want, rtol=rtol, atol=0, hint=hint)
    passed(f"after one step the pretrained model's error is {want:.1f}× MAML's")
