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
``check_adaptation_curve`` (in ``checks.locomotion_protocol``, re-exported here) runs the student's function
on a tiny fake problem that records every call, so it can name which part of the protocol went wrong;
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
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import HINT_NONE, as_checked_array, diagnose_array, plural, show_numbers
from metalearn_edu.course.checks.locomotion_protocol import (FakeAdaptationProblem, check_adaptation_curve, protocol_step_size,
                                                             reference_adaptation_curve)
from metalearn_edu.course.checks.rl_data import call_student
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
    "reference_adaptation_curve",
]

VELOCITY = get_family("HalfCheetahVel")

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
        got = as_checked_array(name, out, (transitions,), HINT_REWARD_SHAPE)
        if not (np.array_equal(given[0], v) and np.array_equal(given[1], a)):
            raise CheckFailed("x_velocity and action after the call", expected="unchanged", got="modified in place",
                              hint="compute new arrays (np.abs(v - goal), a**2 ...); do not write into the inputs")
        g = np.broadcast_to(np.asarray(goal, dtype=np.float64), v.shape)
        diagnose_array(name, got, _reference_reward(v, a, g, ctrl_cost_weight), _reward_mistakes(v, a, g, ctrl_cost_weight), hint=HINT_REWARD)

    goal = 1.25
    x_velocity, action, env_reward, weight = _env_step_from_hand_set_state(goal, seed)
    out = call_student(velocity_reward, "velocity_reward", np.array([x_velocity]), action[None].copy(), np.array([goal]), weight)
    name = f"velocity_reward on one step of the HalfCheetahVel env from a hand-set state (v = {x_velocity:.3f}, v* = {goal})"
    got = as_checked_array(name, out, (1,), HINT_REWARD_SHAPE)
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
                          got=f"{show_numbers(first)} then {show_numbers(again)}",
                          hint="draw from the rng argument only (rng.uniform), not from np.random.* (NumPy's global state) "
                               "or another unseeded source: the same generator state must give the same tasks")
    if np.array_equal(first, other):
        raise CheckFailed(f"{label}: with two different seeds", expected="different tasks", got="the same tasks",
                          hint="the rng argument was ignored (a generator with a fixed seed made inside the function?): draw from rng")
    if n > 1 and np.all(first == first[0]):
        raise CheckFailed(f"{label}: the {n} goals", expected="n independent draws", got=f"{n} times {first[0]:.4g}",
                          hint="draw n values (size=n), one per task, instead of one value repeated")
    if high - low > 1.0 and np.all(first == np.round(first)):
        raise CheckFailed(f"{label}: the goals", expected="continuous goal velocities", got=f"whole numbers {show_numbers(first)}",
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
    passed(f"sample_velocity_tasks: {plural(n, 'uniform goal')} in [{low}, {high}] from rng"
           + (", draw for draw the library's sample_tasks" if same else " (valid, though not the library's draw order)"))


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
            got = as_checked_array(label, [float(np.asarray(v)) if np.ndim(v) == 0 else np.nan for v in out], (2,),
                            "return two floats")
            reference = np.asarray(reference_mean_ci95(x.tolist()))
            if n == 1 and not np.allclose(got, reference, atol=1e-9, rtol=1e-9):
                raise CheckFailed(label, expected=f"({x[0]:.6g}, 0.0)", got=f"({got[0]:.6g}, {got[1]:.6g})",
                                  hint="one value says nothing about the spread: return (that value, 0.0), as the library does "
                                       "(x.std(ddof=1) of one value is NaN)")
            diagnose_array(label, got, reference, _ci_mistakes(x), atol=1e-9, rtol=1e-9, hint=HINT_CI)
    passed(f"mean_ci95 matches the library's Student-t interval for n = {', '.join(map(str, (*sizes, 1)))}")
