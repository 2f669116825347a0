"""Graded checks for notebook 00, start here: three warm-up questions.

1. ``sample_tasks(seed)``: seed everything, then draw a reproducible batch of sinusoid tasks.
2. ``count_parameters(model)``: the number of scalar parameters of a network (1761 for Finn's MLP).
3. ``support_mse(model, params, batch, i)``: task ``i``'s support-set MSE with the functional ``forward``.

Each check compares with the library on seeded inputs and names the usual mistakes (a hard-coded
seed, counting tensors instead of numbers, ``model(x)`` instead of ``forward(model, params, x)``,
a loss turned into a Python float with ``.item()`` ...). The checks restore the global random state
they touch, so running a check never changes what the cells after it compute.
"""

from __future__ import annotations

import contextlib
import numbers
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from metalearn_edu.course.checks.diagnosis import call_student
from metalearn_edu.course.feedback import CheckFailed, expect_close, expect_shape, expect_true, passed
from metalearn_edu.functional import forward, make_mlp, mse, params_of
from metalearn_edu.runtime import seed_everything
from metalearn_edu.tasks import SinusoidTasks, TaskBatch

__all__ = ["NUM_TASKS", "QUERY", "SHOTS", "check_count_parameters", "check_sample_tasks", "check_support_mse"]

# The batch that question 1 asks for.
NUM_TASKS, SHOTS, QUERY = 4, 5, 10


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run a block and then put Python's, NumPy's and torch's global random states back as they were."""
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)


# ----------------------------------------------------------------------------------------------
# Q1: a reproducible task batch


def reference_tasks(seed: int) -> TaskBatch:
    """What ``sample_tasks(seed)`` should return."""
    return SinusoidTasks().sample(NUM_TASKS, SHOTS, QUERY, generator=torch.Generator().manual_seed(seed))


def _same_batch(a: TaskBatch, b: TaskBatch) -> bool:
    pairs = [(a.x_support, b.x_support), (a.y_support, b.y_support), (a.x_query, b.x_query), (a.y_query, b.y_query)]
    return all(x.shape == y.shape and bool(torch.equal(x, y)) for x, y in pairs)


def _global_draws() -> tuple[list[float], list[float], float]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def check_sample_tasks(sample_tasks: Callable[[int], TaskBatch], *, seed: int = 0) -> None:
    """``sample_tasks(seed)``: ``seed_everything(seed)`` then ``SinusoidTasks().sample(4, 5, 10, generator)``.

    Checks the type and shapes, that two calls with one seed give the same tasks even when the global
    random state moved in between, that another seed gives other tasks, that the batch is the one
    the instructions describe, and that the global generators were seeded.
    """
    with preserved_global_rng():
        seed_everything(seed + 7919)  # a state that only seeding inside sample_tasks can undo
        batch = call_student(sample_tasks, "sample_tasks", seed)
        after_call = _global_draws()
        if not isinstance(batch, TaskBatch):
            raise CheckFailed("sample_tasks(seed)", expected="a TaskBatch", got=f"a {type(batch).__name__}",
                              hint="return what SinusoidTasks().sample(...) returns")
        for name, shape in (("x_support", (NUM_TASKS, SHOTS, 1)), ("y_support", (NUM_TASKS, SHOTS, 1)),
                            ("x_query", (NUM_TASKS, QUERY, 1)), ("y_query", (NUM_TASKS, QUERY, 1))):
            expect_shape(f"batch.{name}", getattr(batch, name), shape,
                         hint=f"sample num_tasks={NUM_TASKS}, shots={SHOTS}, query={QUERY} (in that order)")

        torch.rand(11), np.random.rand(5), random.random()  # move the global state on, as other cells would
        again = call_student(sample_tasks, "sample_tasks", seed)
        expect_true(isinstance(again, TaskBatch) and _same_batch(batch, again),
                    f"sample_tasks({seed}) called twice gives the same tasks",
                    hint="draw the tasks with their own generator, generator=torch.Generator().manual_seed(seed), "
                         "and create it inside the function, so the result depends on the seed alone")
        other = call_student(sample_tasks, "sample_tasks", seed + 1)
        expect_true(isinstance(other, TaskBatch) and not _same_batch(batch, other),
                    f"sample_tasks({seed + 1}) differs from sample_tasks({seed})",
                    hint="use the seed argument (is a seed hard-coded?)")

        reference = reference_tasks(seed)
        if not _same_batch(batch, reference):
            expect_close("batch.x_support", batch.x_support, reference.x_support, atol=0.0, rtol=0.0,
                         hint="use generator=torch.Generator().manual_seed(seed) and a single call "
                              f"SinusoidTasks().sample({NUM_TASKS}, {SHOTS}, {QUERY}, generator=generator)")
            expect_close("batch.y_query", batch.y_query, reference.y_query, atol=0.0, rtol=0.0,
                         hint=f"draw everything in one call SinusoidTasks().sample({NUM_TASKS}, {SHOTS}, {QUERY}, generator=...)")

        seed_everything(seed)
        expected_draws = _global_draws()
        expect_true(after_call == expected_draws,
                    "the global random generators (Python, NumPy, torch) are seeded by sample_tasks",
                    hint="call seed_everything(seed) at the start of sample_tasks; it seeds random, numpy and torch "
                         "(drawing from the separate generator does not touch them afterwards)")
    passed(f"sample_tasks({seed}) is reproducible and seeds everything")


# ----------------------------------------------------------------------------------------------
# Q2: counting parameters


def _networks() -> list[tuple[str, nn.Module]]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return [
            ("make_mlp() (Finn et al.: 1 → 40 → 40 → 1)", make_mlp()),
            ("make_mlp(2, (10,), 3, 'tanh')", make_mlp(2, (10,), 3, "tanh")),
            ("nn.Linear(5, 1)", nn.Linear(5, 1)),
        ]


def check_count_parameters(count_parameters: Callable[[nn.Module], int], *, extra: bool = False) -> None:
    """``count_parameters(model)`` = number of scalar parameters, as a Python int (1761 for Finn's MLP)."""
    networks = _networks()
    if extra:
        networks.append(("make_mlp(3, (7, 5, 4), 2)", make_mlp(3, (7, 5, 4), 2)))
    for description, model in networks:
        got = call_student(count_parameters, "count_parameters", model)
        expected = sum(p.numel() for p in model.parameters())
        what = f"count_parameters({description})"
        if isinstance(got, Tensor):
            raise CheckFailed(what, expected="a Python int", got=f"a tensor ({got!r})",
                              hint="convert the count to a number with int(...): here a plain number is what we want")
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            raise CheckFailed(what, expected="an int", got=f"a {type(got).__name__} ({got!r})",
                              hint="sum the integer p.numel() over model.parameters()")
        got = int(got)
        if got == expected:
            continue
        tensors = len(list(model.parameters()))
        weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
        if got == tensors:
            hint = "you counted parameter tensors; count the numbers inside them: sum of p.numel()"
        elif got == weights:
            hint = "the biases are parameters too: sum p.numel() over all of model.parameters()"
        else:
            hint = "sum p.numel() over model.parameters() (a weight matrix of nn.Linear(i, o) has i·o entries, its bias o)"
        raise CheckFailed(what, expected=str(expected), got=str(got), hint=hint)
    passed("count_parameters: the Finn et al. network has 1761 parameters")


# ----------------------------------------------------------------------------------------------
# Q3: the support-set MSE with the functional forward


def check_support_mse(support_mse: Callable[..., Tensor], *, seed: int = 0, tasks: tuple[int, ...] = (1, 2)) -> None:
    """``support_mse(model, params, batch, i)``: mse(forward(model, params, x_support[i]), y_support[i]).

    The params differ from the module's own, so ``model(x)`` is caught; the result must be a 0-dim
    tensor still connected to ``params`` (so that MAML could differentiate it).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_mlp()
    own = params_of(model)
    batch = SinusoidTasks().sample(3, 5, 10, generator)
    for i in tasks:
        params = {n: (p.detach() + 0.2 * torch.randn(p.shape, generator=generator)).requires_grad_(True)
                  for n, p in own.items()}
        got = call_student(support_mse, "support_mse", model, params, batch, i)
        what = f"support_mse(model, params, batch, {i})"
        if isinstance(got, (float, int)) and not isinstance(got, bool):
            raise CheckFailed(what, expected="a 0-dim torch.Tensor", got=f"a Python {type(got).__name__}",
                              hint=".item() (or float()) turns the loss into a plain number that autograd cannot "
                                   "differentiate, and MAML must differentiate it: return the tensor")
        if not isinstance(got, Tensor):
            raise CheckFailed(what, expected="a 0-dim torch.Tensor", got=f"a {type(got).__name__}",
                              hint="return mse(forward(model, params, x), y)")
        expect_shape(what, got, (), hint="the MSE is one number, the mean over the K support points: use mse(...)")
        with torch.no_grad():
            x_s, y_s = batch.x_support[i], batch.y_support[i]
            reference = mse(forward(model, params, x_s), y_s)
            mistakes = [
                (mse(model(x_s), y_s), "use forward(model, params, x), not model(x): model(x) uses the module's own "
                                       "parameters, and in MAML the same network is evaluated at θ and at θ′"),
                (mse(forward(model, params, batch.x_query[i]), batch.y_query[i]),
                 "this is the query-set MSE: use batch.x_support[i] and batch.y_support[i]"),
                (mse(forward(model, params, batch.x_support), batch.y_support),
                 "this averages over every task in the batch: take task i only, batch.x_support[i]"),
                (((forward(model, params, x_s) - y_s) ** 2).sum(),
                 "this is a sum of squares: the MSE is the mean (use mse from metalearn_edu.functional)"),
            ]
        if not torch.allclose(got.detach().float(), reference, atol=1e-6, rtol=1e-5):
            for wrong, hint in mistakes:
                if torch.allclose(got.detach().float(), wrong, atol=1e-6, rtol=1e-5):
                    raise CheckFailed(what, expected=f"{reference.item():.6g}", got=f"{got.item():.6g}", hint=hint)
            expect_close(what, got, reference, atol=1e-6, rtol=1e-5,
                         hint="mse(forward(model, params, batch.x_support[i]), batch.y_support[i])")
        if got.grad_fn is None:
            raise CheckFailed(f"{what} connected to params", expected="a tensor with a grad_fn (autograd can differentiate it)",
                              got="a detached tensor",
                              hint="do not use .detach(), .item() or torch.no_grad() around the computation")
        grads = torch.autograd.grad(got, tuple(params.values()), allow_unused=True)
        if any(g is None for g in grads):
            raise CheckFailed(f"{what} connected to params", expected="a loss that depends on every parameter in params",
                              got="a loss computed from other tensors", hint="compute it with forward(model, params, x)")
    passed("support_mse: a differentiable support-set MSE computed at the params you pass")
