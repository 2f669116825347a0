"""Graded check of notebook 07's Q3: Finn et al.'s evaluation protocol (re-exported by ``checks.locomotion``).

The student writes ``adaptation_curve(sample, adapt, meta_params, tasks, steps, step_sizes)``: the mean
return over test tasks after 0..K adaptation steps. :func:`check_adaptation_curve` runs it on
:class:`FakeAdaptationProblem`, a tiny stand-in whose ``sample`` and ``adapt`` record every call, so it
can name what went wrong: the pre-update batch reused for every step, a constant step size, adaptation
restarted from θ at every step, a policy re-initialised or carried over from the previous task, the
episodes of all tasks pooled, an off-by-one in the steps. It runs in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import as_checked_array, diagnose_array, plural, show_numbers
from metalearn_edu.course.checks.rl_data import call_student
from metalearn_edu.course.feedback import CheckFailed, expect_close, passed

__all__ = ["FakeAdaptationProblem", "check_adaptation_curve", "protocol_step_size", "reference_adaptation_curve"]


def _steps(k: int) -> str:
    return plural(k, "step")


def protocol_step_size(k: int, step_sizes: Sequence[float]) -> float:
    """α_k of the protocol: ``step_sizes[k]`` while there is one, then the last entry for every later step."""
    return float(step_sizes[min(k, len(step_sizes) - 1)])


class _FakeBatch:
    """What :class:`FakeAdaptationProblem` samples: the episode returns of one task, and where they came from."""

    def __init__(self, serial: int, task_id: int, step: int, params: dict[str, Tensor], returns: Tensor) -> None:
        self.serial, self.task_id, self.step, self.params, self._returns = serial, task_id, step, params, returns

    def episode_returns(self) -> Tensor:
        """(1, B): one row (one task), B episodes, like ``EpisodeBatch.episode_returns`` with T = 1."""
        return self._returns.clone().unsqueeze(0)

    def __repr__(self) -> str:
        return f"<batch #{self.serial}: task {self.task_id}, step {self.step}>"


class FakeAdaptationProblem:
    """A tiny stand-in for "sample episodes" and "one policy-gradient step" that records every call.

    Parameters are ``{"w": (dim,)}`` float64; task i has a goal g_i and its own number of episodes B_i.
    ``sample(params, task, k)`` returns B_i episode returns −‖w − g_i‖² + noise, the noise a deterministic
    function of (task, k, episode) (so "fresh episodes" differ from step to step); ``adapt(params, batch, lr)``
    moves w towards g_i: w + lr · (2 (g_i − w_batch) + noise_batch), with w_batch the parameters the batch was
    sampled with. Both are cheap, so a whole evaluation runs in milliseconds.
    """

    def __init__(self, seed: int = 0, num_tasks: int = 3, dim: int = 2) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.meta_params = {"w": torch.randn(dim, generator=generator, dtype=torch.float64)}
        goals = 2.0 * torch.randn(num_tasks, dim, generator=generator, dtype=torch.float64)
        episodes = [2 + (3 * i) % 5 for i in range(num_tasks)]  # different numbers of episodes per task
        self.tasks = [{"task_id": i, "goal": goals[i].clone(), "episodes": episodes[i]} for i in range(num_tasks)]
        self._goals = goals
        self._seed = seed
        self.samples: list[_FakeBatch] = []
        self.adapts: list[dict[str, Any]] = []

    def _noise(self, *key: int, size: int) -> Tensor:
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self._seed, *key]).generate_state(1)[0]))
        return torch.randn(size, generator=generator, dtype=torch.float64)

    def _task_id(self, task: Any) -> int:
        if not isinstance(task, Mapping) or "task_id" not in task:
            raise CheckFailed("the task passed to sample", expected="one of the tasks you were given", got=repr(task)[:80],
                              hint="call sample(params, task, k) with one task of the tasks list (a dict), not the list itself")
        return int(task["task_id"])

    def _check_params(self, params: Any, what: str) -> dict[str, Tensor]:
        w = params.get("w") if isinstance(params, Mapping) else None
        if set(params if isinstance(params, Mapping) else ()) != {"w"} or not isinstance(w, Tensor) or w.shape != (self.dim,):
            raise CheckFailed(what, expected="a parameter dict like meta_params ({'w': tensor of shape "
                              f"({self.dim},)}})", got=repr(params)[:100],
                              hint="pass parameter dicts as they are: meta_params to start with, then what adapt returned")
        return {"w": params["w"].detach().clone()}

    def sample(self, params: Mapping[str, Tensor], task: Mapping[str, Any], k: int) -> _FakeBatch:
        """Fresh episodes of the policy at ``params`` on ``task``; ``k`` = adaptation steps taken so far."""
        task_id = self._task_id(task)
        params = self._check_params(params, "the params passed to sample")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise CheckFailed("the step index k passed to sample", expected="0, 1, ..., steps", got=repr(k)[:40],
                              hint="pass k, the number of adaptation steps taken so far, as an int")
        count = self.tasks[task_id]["episodes"]
        distance = float(((params["w"] - self._goals[task_id]) ** 2).sum())
        returns = -distance + 0.3 * self._noise(task_id, int(k), 1, size=count)
        batch = _FakeBatch(len(self.samples), task_id, int(k), params, returns)
        self.samples.append(batch)
        return batch

    def adapt(self, params: Mapping[str, Tensor], batch: _FakeBatch, lr: float) -> dict[str, Tensor]:
        """One step: w + lr · (2 (g − w_batch) + noise of the batch); returns new parameters."""
        params = self._check_params(params, "the params passed to adapt")
        if not isinstance(batch, _FakeBatch):
            raise CheckFailed("the batch passed to adapt", expected="a batch returned by sample", got=f"a {type(batch).__name__}",
                              hint="adapt(params, batch, lr) takes the batch that sample returned, as it is")
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not lr > 0:
            raise CheckFailed("the lr passed to adapt", expected="a positive step size", got=repr(lr)[:40],
                              hint="lr is the step size α_k of this step (a float)")
        direction = 2.0 * (self._goals[batch.task_id] - batch.params["w"]) + 0.2 * self._noise(batch.task_id, batch.step, 2, size=self.dim)
        new = {"w": params["w"] + float(lr) * direction}
        self.adapts.append({"params": params, "batch": batch, "lr": float(lr), "out": {"w": new["w"].clone()}})
        return new


def reference_adaptation_curve(sample: Callable[..., Any], adapt: Callable[..., Any], meta_params: Mapping[str, Tensor],
                               tasks: Sequence[Any], steps: int = 3, step_sizes: Sequence[float] = (0.1, 0.05)) -> list[float]:
    """The protocol, as the check expects it (one task at a time)."""
    per_task = []
    for task in tasks:
        params, row = dict(meta_params), []
        for k in range(steps + 1):
            batch = sample(params, task, k)
            row.append(float(batch.episode_returns().mean()))
            if k < steps:
                params = adapt(params, batch, protocol_step_size(k, step_sizes))
        per_task.append(row)
    return np.asarray(per_task).mean(axis=0).tolist()


HINT_PROTOCOL = ("for each task: params = meta_params; for k in 0..steps: batch = sample(params, task, k); record the mean "
                 "of batch.episode_returns(); if k < steps: params = adapt(params, batch, α_k). Then average the "
                 "per-task records over the tasks")


def _same(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> bool:
    return torch.allclose(a["w"], b["w"], atol=1e-12, rtol=0)


def _check_trace(problem: FakeAdaptationProblem, steps: int, step_sizes: Sequence[float], label: str) -> None:
    """Walk each task's recorded calls and name the first departure from the protocol."""
    meta = problem.meta_params
    finals: dict[int, dict[str, Tensor]] = {}
    for task in problem.tasks:
        tid = task["task_id"]
        samples = [b for b in problem.samples if b.task_id == tid]
        adapts = [c for c in problem.adapts if c["batch"].task_id == tid]
        where = f"{label}, task {tid}"
        if not samples:
            raise CheckFailed(f"{where}: calls of sample", expected=f"{steps + 1} (after 0..{steps} steps)", got="none",
                              hint="evaluate every test task: loop over all the tasks you are given")
        first = samples[0]
        if not _same(first.params, meta):
            carried = next((other for other_id, other in finals.items() if _same(first.params, other)), None)
            if carried is not None:
                hint = ("the adaptation of the previous task was carried over: every task starts again from the "
                        "meta-parameters (params = meta_params at the start of each task)")
            else:
                hint = ("adaptation must start from the meta-parameters θ (meta_params), never from a re-initialised or "
                        "otherwise new policy: meta-learning is about where adaptation starts")
            raise CheckFailed(f"{where}: parameters of the first episodes", expected="meta_params",
                              got=f"w = {show_numbers(first.params['w'].numpy())} (meta_params has w = {show_numbers(meta['w'].numpy())})",
                              hint=hint)
        if steps > 0 and adapts and all(c["batch"] is first for c in adapts) and len(adapts) > 1:
            raise CheckFailed(f"{where}: the batches given to adapt", expected="the fresh batch of each step",
                              got=f"the pre-update batch (step 0) for all {len(adapts)} steps",
                              hint="the protocol samples FRESH episodes with the current parameters before every step and "
                                   "adapts on those: reusing the pre-update batch is several steps on one batch, not "
                                   "Finn et al.'s protocol")
        if len(adapts) < steps:
            raise CheckFailed(f"{where}: calls of adapt", expected=f"{steps} (one per step)", got=str(len(adapts)),
                              hint=f"take {steps} adaptation steps per task: adapt after each measurement except the last")
        if len(samples) != steps + 1:
            raise CheckFailed(f"{where}: calls of sample", expected=f"{steps + 1} (after 0, 1, ..., {steps} steps)", got=str(len(samples)),
                              hint="sample once before adaptation and once after each step: steps + 1 batches per task")
        for k in range(steps + 1):
            batch = samples[k]
            if batch.step != k:
                raise CheckFailed(f"{where}: the k passed to sample for its batch number {k}", expected=str(k), got=str(batch.step),
                                  hint="pass k, the number of steps taken so far, so that each step gets fresh episodes")
            if k == steps:
                break
            call = adapts[k]
            if call["batch"] is not batch:
                reused = call["batch"] is first
                raise CheckFailed(f"{where}: the batch of adaptation step {k + 1}",
                                  expected=f"the episodes sampled after {_steps(k)}",
                                  got="the pre-update batch (step 0)" if reused else repr(call["batch"]),
                                  hint=("the protocol samples FRESH episodes with the current parameters before every step and "
                                        "adapts on those; reusing the pre-update batch is not Finn et al.'s protocol") if reused else
                                  "adapt on the batch just sampled with the current parameters")
            if not _same(call["params"], batch.params):
                restarted = k > 0 and _same(call["params"], meta)
                raise CheckFailed(f"{where}: the parameters adaptation step {k + 1} starts from",
                                  expected=f"the parameters after {_steps(k)}",
                                  got="meta_params" if restarted else "other parameters",
                                  hint=("adaptation was restarted from θ at every step, so k steps were never taken: each step "
                                        "continues from the previous step's result, params = adapt(params, batch, α_k)")
                                  if restarted else "each step continues from the previous result: params = adapt(params, batch, α_k)")
            want = protocol_step_size(k, step_sizes)
            if not math.isclose(call["lr"], want, rel_tol=1e-12):
                lrs = [c["lr"] for c in adapts[:steps]]
                if len(set(lrs)) == 1:
                    hint = (f"the step size was {lrs[0]} for every step: the protocol uses {step_sizes[0]} for the first step "
                            f"and {step_sizes[-1]} for every later one")
                else:
                    hint = ("α_k = step_sizes[k] while k < len(step_sizes), then the last entry: "
                            "step_sizes[min(k, len(step_sizes) - 1)]")
                raise CheckFailed(f"{where}: step size of adaptation step {k + 1}", expected=f"{want}", got=f"{call['lr']}",
                                  hint=hint)
            if not _same(samples[k + 1].params, call["out"]):
                raise CheckFailed(f"{where}: parameters of the episodes after {_steps(k + 1)}", expected="what adapt returned",
                                  got="other parameters", hint="sample the next batch with the adapted parameters")
        finals[tid] = samples[-1].params


def check_adaptation_curve(adaptation_curve: Callable[..., Any], *, seed: int = 0, steps: int = 3,
                           step_sizes: Sequence[float] = (0.1, 0.05), num_tasks: int = 3) -> None:
    """``adaptation_curve(sample, adapt, meta_params, tasks, steps, step_sizes)``: mean return after 0..steps steps.

    Run on :class:`FakeAdaptationProblem` (tasks with different numbers of episodes); every call of
    ``sample`` and ``adapt`` is recorded and compared with the protocol, then the numbers with the mean
    over tasks of each task's mean episode return.
    """
    step_sizes = tuple(float(a) for a in step_sizes)
    label = f"adaptation_curve(..., steps={steps}, step_sizes={step_sizes}) on {num_tasks} fake tasks"
    problem = FakeAdaptationProblem(seed, num_tasks)
    meta_copy = {"w": problem.meta_params["w"].clone()}
    tasks = [dict(t) for t in problem.tasks]
    out = call_student(adaptation_curve, "adaptation_curve", problem.sample, problem.adapt, meta_copy, tasks, steps, step_sizes)
    if not torch.equal(meta_copy["w"], problem.meta_params["w"]):
        raise CheckFailed("meta_params after the call", expected="unchanged", got="modified in place",
                          hint="the meta-parameters are shared by every task: never write into them; adapt returns new parameters")
    if out is None:
        raise CheckFailed(label, expected=f"{steps + 1} numbers", got="None", hint="return the list of mean returns")
    try:
        length = len(out)
    except TypeError:
        length = None
    if length != steps + 1:
        got = f"{length} numbers" if length is not None else f"a {type(out).__name__}"
        hint = (f"return one number per number of steps, 0, 1, ..., {steps}: {steps + 1} in all (the first is before "
                "any adaptation)") if length in (steps, steps + 2) else (
            f"return a list of {steps + 1} floats: the mean over tasks after 0, 1, ..., {steps} steps")
        raise CheckFailed(label, expected=f"{steps + 1} numbers (after 0, 1, ..., {steps} steps)", got=got, hint=hint)
    got = as_checked_array(label, out, (steps + 1,), f"return a list of {steps + 1} floats")
    _check_trace(problem, steps, step_sizes, label)

    per_task = np.array([[float(b.episode_returns().mean()) for b in problem.samples if b.task_id == t["task_id"]]
                         for t in problem.tasks])  # (N, K + 1)
    pooled = np.array([np.concatenate([b._returns.numpy() for b in problem.samples if b.step == k]).mean() for k in range(steps + 1)])
    reference = per_task.mean(axis=0)
    mistakes = [
        (pooled, "the episodes of all tasks were pooled: a task with more episodes then counts more. Average each task's "
                 "episodes first, then take the mean over tasks (every test task weighs the same)"),
        (per_task.sum(axis=0), "this is the sum over tasks: take the mean over tasks"),
        (per_task[-1], "this is the last task's curve alone: average the per-task curves over all tasks"),
        (per_task[0], "this is the first task's curve alone: average the per-task curves over all tasks"),
        (np.median(per_task, axis=0), "this is the median over tasks: the protocol reports the mean"),
    ]
    # float32 answers (torch.tensor of Python floats) are fine: the mistakes differ by far more
    diagnose_array(label, got, reference, mistakes, atol=1e-6, rtol=1e-6, hint=HINT_PROTOCOL)
    fresh = FakeAdaptationProblem(seed, num_tasks)
    expected = reference_adaptation_curve(fresh.sample, fresh.adapt, fresh.meta_params, fresh.tasks, steps, step_sizes)
    expect_close(label + " against the protocol", got, np.asarray(expected), atol=1e-6, rtol=1e-6, hint=HINT_PROTOCOL)
    passed(f"adaptation_curve follows the protocol for {plural(steps, 'step')} on {plural(num_tasks, 'task')}: from θ for every "
           f"task, fresh episodes before every step, step sizes {step_sizes}, mean over tasks")
