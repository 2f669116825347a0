"""Graded checks for notebook 07, locomotion adaptation.

The student writes four small pieces of a locomotion meta-RL experiment:

    velocity_reward          the reward of the HalfCheetah goal-velocity family, −|v − v*| − c‖a‖²
    sample_velocity_tasks    n goal-velocity tasks {"velocity": v*}, v* ~ U[low, high], from a NumPy Generator
    adaptation_curve         Finn et al.'s evaluation protocol: mean return over test tasks after 0..K steps
    mean_ci95                mean and Student-t 95% confidence half-width of a few numbers

``check_velocity_reward`` compares with :func:`metalearn_edu.envs.locomotion.task_reward` on seeded
transitions and with the gymnasium env's own reward after one step from a hand-set state;
``check_sample_velocity_tasks`` checks the structure, the range, the distribution and that every draw
comes from the generator it is given (reproducible, independent of NumPy's global state), and says
whether the draws equal the library's :func:`~metalearn_edu.envs.locomotion.sample_tasks` one for one;
``check_adaptation_curve`` runs the student's function on a tiny fake problem whose ``sample`` and
``adapt`` record every call, so it can name what went wrong: the pre-update batch reused for every step,
a constant step size, adaptation restarted from θ at every step, a policy re-initialised or carried over
from the previous task, the episodes of all tasks pooled, an off-by-one in the steps;
``check_mean_ci95`` compares with :func:`metalearn_edu.rl.evaluate.mean_ci95`. When an answer is wrong,
it is compared with what the usual mistakes give, and the mistake is named. A blank answer's
``NotImplementedError`` propagates unchanged. Every check runs in well under a second (the reward check
makes one small MuJoCo env) and leaves the global random states of Python, NumPy and torch alone.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalearn_edu.course.checks.policy_gradients import call_student
from metalearn_edu.course.checks.start import preserved_global_rng
from metalearn_edu.course.feedback import CheckFailed, expect_close, passed
from metalearn_edu.envs.locomotion import get_family, make_config, sample_tasks, task_reward
from metalearn_edu.rl.evaluate import mean_ci95 as reference_mean_ci95
from metalearn_edu.rl.evaluate import t_critical

__all__ = [
    "check_adaptation_curve",
    "check_mean_ci95",
    "check_sample_velocity_tasks",
    "check_velocity_reward",
    "FakeAdaptationProblem",
    "protocol_step_size",
]

VELOCITY = get_family("HalfCheetahVel")
ATOL, RTOL = 1e-9, 1e-7
HINT_NONE = "the function returns nothing: end it with `return ...`"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _steps(k: int) -> str:
    return _count(k, "step")


def _as_array(name: str, got: Any, shape: tuple[int, ...], hint: str) -> np.ndarray:
    """``got`` (array, tensor, list or number) as a float64 array of ``shape``, or a CheckFailed."""
    if got is None:
        raise CheckFailed(name, expected=f"an array of shape {shape}", got="None", hint=HINT_NONE)
    try:
        value = got.detach().cpu().double().numpy() if isinstance(got, Tensor) else np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailed(name, expected=f"numbers, shape {shape}", got=f"a {type(got).__name__}", hint=hint) from None
    if value.shape != shape:
        raise CheckFailed(name, expected=f"shape {shape}", got=f"shape {value.shape}", hint=hint)
    return value


def _numbers(values: np.ndarray, count: int = 4) -> str:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    head = ", ".join(f"{v:.5g}" for v in flat[:count])
    return f"[{head}{', ...' if flat.size > count else ''}]"


def _diagnose(name: str, got: np.ndarray, reference: np.ndarray, mistakes: Sequence[tuple[np.ndarray, str]], *,
              atol: float = ATOL, rtol: float = RTOL, hint: str) -> None:
    """Pass if ``got`` matches ``reference``; else name the first known mistake it matches, else show the numbers."""
    if np.allclose(got, reference, atol=atol, rtol=rtol):
        return
    for wrong, explanation in mistakes:
        wrong = np.asarray(wrong, dtype=np.float64)
        if wrong.shape == got.shape and np.allclose(got, wrong, atol=atol, rtol=rtol):
            raise CheckFailed(name, expected=_numbers(reference), got=f"{_numbers(got)}, what a common mistake gives", hint=explanation)
    expect_close(name, got, reference, atol=atol, rtol=rtol, hint=hint)


# ----------------------------------------------------------------------------------------------
# Q1: the reward of the goal-velocity family

HINT_REWARD = "r = −|v − v*| − c · Σ_j a_j², one number per transition: -np.abs(v - goal) - c * np.sum(a**2, axis=1)"
HINT_REWARD_SHAPE = ("one reward per transition: x_velocity (N,) and actions (N, act_dim) give (N,); sum the squared "
                     "actions over the action dim only (axis=1), and keep the batch dim")


def _reference_reward(x_velocity: np.ndarray, action: np.ndarray, goal: np.ndarray, weight: float) -> np.ndarray:
    config = make_config(VELOCITY, ctrl_cost_weight=weight)
    goals = np.broadcast_to(np.asarray(goal, dtype=np.float64), x_velocity.shape).reshape(-1, 1)
    return task_reward(VELOCITY, config, goals, x_velocity, action)[0]


def _reward_mistakes(v: np.ndarray, a: np.ndarray, g: np.ndarray, c: float) -> list[tuple[np.ndarray, str]]:
    d = v - g
    squares = np.sum(a**2, axis=1)
    tracking = -np.abs(d)
    mistakes = [
        (-d - c * squares, "the velocity term has no absolute value: −(v − v*) rewards running FASTER than the goal without "
                           "limit; the penalty is the distance to the goal either way, −|v − v*|"),
        (d - c * squares, "the velocity term has no absolute value and the wrong sign: the penalty is −|v − v*|"),
        (-d**2 - c * squares, "the velocity error is squared; Finn et al.'s reward uses the absolute error −|v − v*|"),
        (tracking - c * np.sum(np.abs(a), axis=1), "the control cost is the sum of SQUARED actions, c · Σ a_j², not of their "
                                                   "absolute values"),
        (tracking - c * np.sqrt(squares), "the control cost is c · ‖a‖² (the squared norm, Σ a_j²), not the norm ‖a‖"),
        (tracking - c * np.sum(a, axis=1) ** 2, "the control cost is the sum of the squares Σ a_j², not the square of the sum"),
        (tracking + c * squares, "the control cost is a cost: subtract it, −c‖a‖²"),
        (tracking, "the control cost −c‖a‖² is missing"),
        (np.abs(d) + c * squares, "wrong sign: the reward is MINUS the velocity error and minus the control cost"),
        (tracking - c * np.mean(a**2, axis=1), "the squared actions were averaged over the action dims; the cost sums them, Σ_j a_j²"),
        (tracking - c * np.sum(np.clip(a, -1, 1) ** 2, axis=1), "the actions were clipped before the cost; the cost uses the "
                                                                "action as given to the env (MuJoCo clamps the controls itself)"),
    ]
    for weight, why in ((0.1, "this is gymnasium's default control weight 0.1"), (0.05, "this is the weight 0.05 hard-coded")):
        if not math.isclose(weight, c):
            mistakes.append((tracking - weight * squares, f"{why}: use the ctrl_cost_weight argument (here {c})"))
    return mistakes


def _env_step_from_hand_set_state(goal: float, seed: int) -> tuple[float, float, np.ndarray, float]:
    """One step of the gymnasium HalfCheetahVel env from a hand-set state: (x_velocity, action, reward, weight)."""
    import gymnasium as gym

    import metalearn_edu.envs  # noqa: F401  (registers the meta-envs; quiets MuJoCo)

    rng = np.random.default_rng([seed, 70])
    env = gym.make("metalearn_edu/HalfCheetahVel-v0", preset="fast", disable_env_checker=True)
    try:
        base = env.unwrapped
        base.set_task({"velocity": goal})
        env.reset(seed=seed)
        qpos = base.init_qpos + rng.uniform(-0.3, 0.3, size=base.model.nq)
        qvel = rng.normal(0.0, 1.0, size=base.model.nv)
        qvel[0] = rng.uniform(0.0, 3.0)  # running forward
        base.set_state(qpos, qvel)
        action = rng.uniform(-1.0, 1.0, size=base.action_space.shape)
        _, reward, _, _, info = env.step(action)
        return float(info["x_velocity"]), action, float(reward), float(base.config.ctrl_cost_weight)
    finally:
        env.close()


def check_velocity_reward(velocity_reward: Callable[..., Any], *, seed: int = 0, ctrl_cost_weight: float = 0.05,
                          transitions: int = 7, act_dim: int = 6) -> None:
    """``velocity_reward(x_velocity, action, goal_velocity, ctrl_cost_weight)`` = −|v − v*| − c Σ_j a_j², shape (N,).

    Compared with the library's ``task_reward`` of HalfCheetahVel on seeded transitions (one goal per
    transition, then one goal for all), and with the gymnasium env's reward after one step from a hand-set
    state.
    """
    rng = np.random.default_rng([seed, 7])
    v = rng.uniform(-1.0, 3.0, size=transitions)
    a = rng.uniform(-1.3, 1.3, size=(transitions, act_dim))  # a few beyond ±1: the cost uses the action as given
    goals = rng.uniform(0.0, 2.0, size=transitions)
    cases = [("one goal per transition", goals), ("one goal for all transitions (a float)", float(goals[0]))]
    for label, goal in cases:
        given = (v.copy(), a.copy(), np.array(goal, copy=True) if isinstance(goal, np.ndarray) else goal)
        out = call_student(velocity_reward, "velocity_reward", *given, ctrl_cost_weight)
        name = f"velocity_reward(...) with ctrl_cost_weight={ctrl_cost_weight}, {label}"
        got = _as_array(name, out, (transitions,), HINT_REWARD_SHAPE)
        if not (np.array_equal(given[0], v) and np.array_equal(given[1], a)):
            raise CheckFailed("x_velocity and action after the call", expected="unchanged", got="modified in place",
                              hint="compute new arrays (np.abs(v - goal), a**2 ...); do not write into the inputs")
        g = np.broadcast_to(np.asarray(goal, dtype=np.float64), v.shape)
        _diagnose(name, got, _reference_reward(v, a, g, ctrl_cost_weight), _reward_mistakes(v, a, g, ctrl_cost_weight), hint=HINT_REWARD)

    goal = 1.25
    x_velocity, action, env_reward, weight = _env_step_from_hand_set_state(goal, seed)
    out = call_student(velocity_reward, "velocity_reward", np.array([x_velocity]), action[None].copy(), np.array([goal]), weight)
    name = f"velocity_reward on one step of the HalfCheetahVel env from a hand-set state (v = {x_velocity:.3f}, v* = {goal})"
    got = _as_array(name, out, (1,), HINT_REWARD_SHAPE)
    expect_close(name + " against the env's own reward", got, np.array([env_reward]), atol=1e-9, rtol=1e-9, hint=HINT_REWARD)
    passed(f"velocity_reward (ctrl_cost_weight={ctrl_cost_weight}) matches task_reward and the env's reward on a hand-set state")


# ----------------------------------------------------------------------------------------------
# Q2: sampling goal-velocity tasks

HINT_TASKS = ('return a list of n dicts {"velocity": v*} with one float each, as env.unwrapped.sample_tasks(n) does: '
              '[{"velocity": float(v)} for v in rng.uniform(low, high, size=n)]')


def _velocities(name: str, out: Any, n: int) -> np.ndarray:
    """The goal velocities of a list of task dicts, or a CheckFailed naming what is wrong with its structure."""
    if out is None:
        raise CheckFailed(name, expected=f"a list of {n} task dicts", got="None", hint=HINT_NONE)
    if isinstance(out, (np.ndarray, Tensor)) or not isinstance(out, Sequence) or isinstance(out, (str, bytes)):
        raise CheckFailed(name, expected=f"a list of {n} dicts", got=f"a {type(out).__name__}", hint=HINT_TASKS)
    if len(out) != n:
        raise CheckFailed(name, expected=f"{n} tasks", got=f"{len(out)}", hint=f"one task per draw: exactly n = {n}")
    values = []
    for i, task in enumerate(out):
        if not isinstance(task, Mapping):
            raise CheckFailed(f"{name}[{i}]", expected='a dict {"velocity": v*}', got=f"a {type(task).__name__}", hint=HINT_TASKS)
        if "velocity" not in task:
            raise CheckFailed(f"{name}[{i}]", expected="a dict with the key 'velocity'", got=f"keys {sorted(map(str, task))}",
                              hint="the task key of HalfCheetahVel is 'velocity' (set_task and the reward read task['velocity'])")
        value = task["velocity"]
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, bool) or np.ndim(value) != 0 or not isinstance(np.asarray(value).item(), numbers.Real):
            raise CheckFailed(f"{name}[{i}]['velocity']", expected="one number (a float)", got=repr(value)[:80],
                              hint="one goal velocity per task: float(v), not an array or a list")
        values.append(float(np.asarray(value).item()))
    return np.asarray(values)


def _expect_in_range(label: str, values: np.ndarray, low: float, high: float) -> None:
    outside = (values < low) | (values > high)
    if not outside.any():
        return
    unit = bool(np.all((values >= 0.0) & (values < 1.0)))
    hint = ("the goals lie in [0, 1): the range was ignored (rng.random(n)); draw rng.uniform(low, high, size=n)" if unit else
            "every goal must lie in [low, high]: draw rng.uniform(low, high, size=n) (not rng.normal, which has no bounds)")
    raise CheckFailed(f"{label}: goals in [{low}, {high}]", expected="all inside",
                      got=f"{int(outside.sum())} of {values.size} outside, e.g. {values[outside][0]:.4g}", hint=hint)


def _call_tasks(fn: Callable[..., Any], n: int, rng: np.random.Generator, low: float, high: float, name: str) -> np.ndarray:
    return _velocities(name, call_student(fn, "sample_velocity_tasks", n, rng, low, high), n)


def check_sample_velocity_tasks(sample_velocity_tasks: Callable[..., Any], *, seed: int = 0, low: float = 0.0, high: float = 2.0,
                                n: int = 6) -> None:
    """``sample_velocity_tasks(n, rng, low, high)``: n tasks {"velocity": v*}, v* ~ U[low, high], drawn from ``rng``.

    Checked: structure, range, uniformity (on 20 000 draws), that the draws come from ``rng`` alone
    (the same seed gives the same tasks whatever NumPy's global state, another seed other tasks), that
    the n tasks are independent draws and that they are not whole numbers.
    """
    label = f"sample_velocity_tasks({n}, rng, low={low}, high={high})"
    with preserved_global_rng():
        np.random.seed(1)
        first = _call_tasks(sample_velocity_tasks, n, np.random.default_rng(seed), low, high, label)
        np.random.seed(2)
        again = _call_tasks(sample_velocity_tasks, n, np.random.default_rng(seed), low, high, label)
        other = _call_tasks(sample_velocity_tasks, n, np.random.default_rng(seed + 1000), low, high, label)
        wide = _call_tasks(sample_velocity_tasks, 20000, np.random.default_rng([seed, 11]), low, high,
                           f"sample_velocity_tasks(20000, rng, low={low}, high={high})")

    _expect_in_range(label, first, low, high)
    if not np.array_equal(first, again):
        raise CheckFailed(f"{label}: twice with np.random.default_rng({seed})", expected="the same tasks twice",
                          got=f"{_numbers(first)} then {_numbers(again)}",
                          hint="draw from the rng argument only (rng.uniform), not from np.random.* (NumPy's global state) "
                               "or another unseeded source: the same generator state must give the same tasks")
    if np.array_equal(first, other):
        raise CheckFailed(f"{label}: with two different seeds", expected="different tasks", got="the same tasks",
                          hint="the rng argument was ignored (a generator with a fixed seed made inside the function?): draw from rng")
    if n > 1 and np.all(first == first[0]):
        raise CheckFailed(f"{label}: the {n} goals", expected="n independent draws", got=f"{n} times {first[0]:.4g}",
                          hint="draw n values (size=n), one per task, instead of one value repeated")
    if high - low > 1.0 and np.all(first == np.round(first)):
        raise CheckFailed(f"{label}: the goals", expected="continuous goal velocities", got=f"whole numbers {_numbers(first)}",
                          hint="rng.integers draws whole numbers; the goal velocity is continuous: rng.uniform(low, high, size=n)")
    _expect_in_range(f"sample_velocity_tasks(20000, rng, low={low}, high={high})", wide, low, high)
    quarters = np.histogram(wide, bins=4, range=(low, high))[0] / wide.size
    if np.any(np.abs(quarters - 0.25) > 0.02):
        raise CheckFailed(f"sample_velocity_tasks(20000, ...): share of goals in each quarter of [{low}, {high}]",
                          expected="about 0.25 each (uniform)", got=", ".join(f"{q:.3f}" for q in quarters),
                          hint="the goals must be uniform on [low, high]: rng.uniform(low, high, size=n), not a normal or a "
                               "sum of uniforms")
    library = sample_tasks(VELOCITY, make_config(VELOCITY, velocity_range=(low, high)), n, np.random.default_rng(seed))
    same = np.allclose(first, [t["velocity"] for t in library], atol=1e-12, rtol=0)
    passed(f"sample_velocity_tasks: {_count(n, 'uniform goal')} in [{low}, {high}] from rng"
           + (", draw for draw the library's sample_tasks" if same else " (valid, though not the library's draw order)"))


# ----------------------------------------------------------------------------------------------
# Q3: Finn et al.'s evaluation protocol


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
                              got=f"w = {_numbers(first.params['w'].numpy())} (meta_params has w = {_numbers(meta['w'].numpy())})",
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
    got = _as_array(label, out, (steps + 1,), f"return a list of {steps + 1} floats")
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
    _diagnose(label, got, reference, mistakes, atol=1e-6, rtol=1e-6, hint=HINT_PROTOCOL)
    fresh = FakeAdaptationProblem(seed, num_tasks)
    expected = reference_adaptation_curve(fresh.sample, fresh.adapt, fresh.meta_params, fresh.tasks, steps, step_sizes)
    expect_close(label + " against the protocol", got, np.asarray(expected), atol=1e-6, rtol=1e-6, hint=HINT_PROTOCOL)
    passed(f"adaptation_curve follows the protocol for {_count(steps, 'step')} on {_count(num_tasks, 'task')}: from θ for every "
           f"task, fresh episodes before every step, step sizes {step_sizes}, mean over tasks")


# ----------------------------------------------------------------------------------------------
# Q4: Student-t 95% confidence interval

HINT_CI = "mean = x.mean(); half-width = t_critical(n − 1) · x.std(ddof=1) / √n (and 0.0 when n = 1)"


def _ci_mistakes(x: np.ndarray) -> list[tuple[np.ndarray, str]]:
    n = x.size
    if n < 2:
        return []
    mean, sd, sd0 = x.mean(), x.std(ddof=1), x.std(ddof=0)
    t = t_critical(n - 1)

    def pair(width: float) -> np.ndarray:
        return np.array([mean, width])

    mistakes = [
        (pair(1.96 * sd / math.sqrt(n)), f"this uses the normal quantile 1.96; with n = {n} values the standard deviation is "
                                         f"itself uncertain, and the Student-t quantile t_(0.975, n−1) = {t} is wider"),
        (pair(t * sd0 / math.sqrt(n)), "this uses the population standard deviation (ddof=0); use the sample standard "
                                       "deviation, x.std(ddof=1) (NumPy's default is ddof=0, torch's is unbiased)"),
        (pair(t * sd), "this is t · std, the spread of single values: divide by √n for the uncertainty of their mean"),
        (pair(t * sd / n), "divide the standard deviation by √n, not by n"),
        (pair(sd / math.sqrt(n)), "this is the standard error of the mean; the 95% half-width is t_(0.975, n−1) standard errors"),
        (pair(2 * t * sd / math.sqrt(n)), "this is the full width of the interval; return the half-width (mean ± half-width)"),
        (np.array([mean, sd]), "the second number must be the half-width of the 95% CI of the mean, not the standard deviation"),
    ]
    mistakes.append((pair(t_critical(n) * sd / math.sqrt(n)), f"the degrees of freedom are n − 1 = {n - 1}, not n"))
    return mistakes


def check_mean_ci95(mean_ci95: Callable[..., Any], *, seed: int = 0, sizes: Sequence[int] = (3, 5, 10, 21)) -> None:
    """``mean_ci95(values)`` → (mean, half-width of the Student-t 95% CI of the mean); half-width 0.0 for one value.

    Compared with :func:`metalearn_edu.rl.evaluate.mean_ci95` on seeded samples of the given sizes (passed as
    a list, then as a NumPy array).
    """
    rng = np.random.default_rng([seed, 95])
    for n in (*sizes, 1):
        x = rng.normal(-80.0, 25.0, size=n)
        for kind, values in (("a list", x.tolist()), ("a NumPy array", x.copy())):
            label = f"mean_ci95 of {n} value{'s' if n > 1 else ''} given as {kind}"
            out = call_student(mean_ci95, "mean_ci95", values)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise CheckFailed(label, expected="a pair (mean, half_width)", got=f"a {type(out).__name__}"
                                  + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""),
                                  hint="return mean, half_width (two floats)")
            got = _as_array(label, [float(np.asarray(v)) if np.ndim(v) == 0 else np.nan for v in out], (2,),
                            "return two floats")
            reference = np.asarray(reference_mean_ci95(x.tolist()))
            if n == 1 and not np.allclose(got, reference, atol=1e-9, rtol=1e-9):
                raise CheckFailed(label, expected=f"({x[0]:.6g}, 0.0)", got=f"({got[0]:.6g}, {got[1]:.6g})",
                                  hint="one value says nothing about the spread: return (that value, 0.0), as the library does "
                                       "(x.std(ddof=1) of one value is NaN)")
            _diagnose(label, got, reference, _ci_mistakes(x), atol=1e-9, rtol=1e-9, hint=HINT_CI)
    passed(f"mean_ci95 matches the library's Student-t interval for n = {', '.join(map(str, (*sizes, 1)))}")
