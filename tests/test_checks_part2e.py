"""The graded checks of notebook 07 (locomotion adaptation) accept correct answers and reject the usual mistakes.

For each check: a correct implementation (written here independently of the library, the way a student
would) passes, also with other seeds and parameters; specific wrong ones (no absolute value, the L1
control cost, gymnasium's default weight, the range ignored, NumPy's global random state, the pre-update
batch reused for every step, a constant step size, adaptation restarted from θ, a re-initialised or
carried-over policy, pooled episodes, the normal quantile instead of Student's t ...) raise CheckFailed
with a hint that names the mistake; a blank answer's NotImplementedError propagates; the global random
state is left alone.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from metalearn_edu.course.checks import locomotion as lc
from metalearn_edu.rl.evaluate import t_critical
from check_helpers import assert_leaves_random_state, blank, fails


# ------------------------------------------------------------------------------------------------
# Q1: the goal-velocity reward


def velocity_reward(x_velocity, action, goal_velocity, ctrl_cost_weight=0.05):
    return -np.abs(x_velocity - goal_velocity) - ctrl_cost_weight * np.sum(np.square(action), axis=1)


def test_velocity_reward_passes(capsys):
    lc.check_velocity_reward(velocity_reward)
    lc.check_velocity_reward(velocity_reward, seed=3, ctrl_cost_weight=0.2, transitions=4, act_dim=3)
    lc.check_velocity_reward(lambda v, a, g, c: torch.as_tensor(velocity_reward(v, a, g, c)), seed=1)  # a tensor is fine
    assert "✔" in capsys.readouterr().out


def test_velocity_reward_mistakes():
    def with_weight(weight):
        return lambda v, a, g, c: -np.abs(v - g) - weight * np.sum(a**2, axis=1)

    check = lc.check_velocity_reward
    fails(check, lambda v, a, g, c: -(v - g) - c * np.sum(a**2, axis=1), "no absolute value")
    fails(check, lambda v, a, g, c: -((v - g) ** 2) - c * np.sum(a**2, axis=1), "squared")
    fails(check, lambda v, a, g, c: -np.abs(v - g) - c * np.sum(np.abs(a), axis=1), "SQUARED actions")
    fails(check, lambda v, a, g, c: -np.abs(v - g) - c * np.linalg.norm(a, axis=1), "not the norm")
    fails(check, lambda v, a, g, c: -np.abs(v - g) + c * np.sum(a**2, axis=1), "subtract it")
    fails(check, lambda v, a, g, c: -np.abs(v - g), "missing")
    fails(check, lambda v, a, g, c: np.abs(v - g) + c * np.sum(a**2, axis=1), "wrong sign")
    fails(check, lambda v, a, g, c: -np.abs(v - g) - c * np.mean(a**2, axis=1), "averaged")
    fails(check, lambda v, a, g, c: -np.abs(v - g) - c * np.sum(np.clip(a, -1, 1) ** 2, axis=1), "clipped")
    fails(check, with_weight(0.1), "gymnasium's default")
    fails(check, with_weight(0.05), "hard-coded", ctrl_cost_weight=0.2)
    fails(check, lambda v, a, g, c: velocity_reward(v, a, g, c).sum(), "shape")
    fails(check, lambda v, a, g, c: -np.abs(v - g) - c * np.sum(a**2), "shape")  # the cost summed over the whole batch
    fails(check, lambda v, a, g, c: None, "return")

    def in_place(v, a, g, c):
        a **= 2
        return -np.abs(v - g) - c * a.sum(axis=1)

    fails(check, in_place, "in place")
    fails(check, lambda v, a, g, c: v["velocity"], "calling velocity_reward")
    with pytest.raises(NotImplementedError):
        check(blank)


# ------------------------------------------------------------------------------------------------
# Q2: sampling goal-velocity tasks


def sample_velocity_tasks(n, rng, low=0.0, high=2.0):
    return [{"velocity": float(v)} for v in rng.uniform(low, high, size=n)]


def test_sample_velocity_tasks_passes(capsys):
    lc.check_sample_velocity_tasks(sample_velocity_tasks)
    assert "draw for draw" in capsys.readouterr().out
    lc.check_sample_velocity_tasks(sample_velocity_tasks, seed=4, low=2.5, high=3.5, n=3)
    lc.check_sample_velocity_tasks(sample_velocity_tasks, seed=5, low=-2.0, high=2.0, n=10)

    def one_at_a_time(n, rng, low=0.0, high=2.0):  # other draws than the library's, still right
        return [{"velocity": low + (high - low) * rng.random()} for _ in range(n)][::-1]

    lc.check_sample_velocity_tasks(one_at_a_time)
    assert "not the library's draw order" in capsys.readouterr().out
    lc.check_sample_velocity_tasks(lambda n, rng, lo, hi: [{"velocity": np.float64(v)} for v in rng.uniform(lo, hi, n)])


def test_sample_velocity_tasks_mistakes():
    check = lc.check_sample_velocity_tasks
    fails(check, lambda n, rng, lo, hi: [{"velocity": float(v)} for v in rng.random(n)], "range was ignored", low=2.5, high=3.0)
    fails(check, lambda n, rng, lo, hi: [{"velocity": float(v)} for v in rng.normal(1.0, 0.5, n)], "[low, high]")
    fails(check, lambda n, rng, lo, hi: [{"velocity": float(v)} for v in np.random.uniform(lo, hi, n)], "np.random")
    fails(check, lambda n, rng, lo, hi: sample_velocity_tasks(n, np.random.default_rng(0), lo, hi), "ignored", seed=3)
    fails(check, lambda n, rng, lo, hi: [{"velocity": float(rng.uniform(lo, hi))}] * n, "repeated")
    fails(check, lambda n, rng, lo, hi: [{"velocity": float(v)} for v in rng.integers(lo, hi + 1, n)], "whole numbers",
          low=0.0, high=3.0)
    fails(check, lambda n, rng, lo, hi: [{"velocity": float(v)} for v in (rng.uniform(lo, hi, n) + rng.uniform(lo, hi, n)) / 2],
          "uniform")
    fails(check, lambda n, rng, lo, hi: rng.uniform(lo, hi, n), "list of")
    fails(check, lambda n, rng, lo, hi: [float(v) for v in rng.uniform(lo, hi, n)], "dict")
    fails(check, lambda n, rng, lo, hi: [{"goal": float(v)} for v in rng.uniform(lo, hi, n)], "'velocity'")
    fails(check, lambda n, rng, lo, hi: [{"velocity": rng.uniform(lo, hi, 1)} for _ in range(n)], "one number")
    fails(check, lambda n, rng, lo, hi: sample_velocity_tasks(n + 1, rng, lo, hi), "exactly n")
    with pytest.raises(NotImplementedError):
        check(blank)


# ------------------------------------------------------------------------------------------------
# Q3: the evaluation protocol


def adaptation_curve(sample, adapt, meta_params, tasks, steps=3, step_sizes=(0.1, 0.05)):
    curves = []
    for task in tasks:
        params, curve = meta_params, []
        for k in range(steps + 1):
            batch = sample(params, task, k)
            curve.append(batch.episode_returns().mean().item())
            if k < steps:
                params = adapt(params, batch, step_sizes[min(k, len(step_sizes) - 1)])
        curves.append(curve)
    return np.mean(curves, axis=0).tolist()


def steps_outside(sample, adapt, meta_params, tasks, steps=3, step_sizes=(0.1, 0.05)):
    """Another correct order: the step loop outside, one parameter set per task."""
    params = [meta_params for _ in tasks]
    out = []
    for k in range(steps + 1):
        batches = [sample(p, t, k) for p, t in zip(params, tasks)]
        out.append(float(np.mean([b.episode_returns().mean().item() for b in batches])))
        if k < steps:
            alpha = step_sizes[0] if k == 0 else step_sizes[-1]
            params = [adapt(p, b, alpha) for p, b in zip(params, batches)]
    return torch.tensor(out)


def test_adaptation_curve_passes(capsys):
    lc.check_adaptation_curve(adaptation_curve)
    lc.check_adaptation_curve(adaptation_curve, seed=2, steps=1, num_tasks=5)
    lc.check_adaptation_curve(adaptation_curve, seed=3, steps=0)
    lc.check_adaptation_curve(adaptation_curve, seed=4, steps=4, step_sizes=(0.3, 0.2, 0.1))
    lc.check_adaptation_curve(steps_outside)
    assert "✔" in capsys.readouterr().out


def _variant(*, reuse=False, lr="protocol", restart=False, init=None, carry=False, pooled=False, k_arg="k", extra_adapt=False,
             skip_first=False, in_place=False):
    """The protocol with one deliberate change."""

    def curve(sample, adapt, meta_params, tasks, steps=3, step_sizes=(0.1, 0.05)):
        rows, episodes, params = [], {}, meta_params
        for task in tasks:
            if not carry:
                params = meta_params
            if init == "zeros":
                params = {n: torch.zeros_like(p) for n, p in meta_params.items()}
            row, first = [], None
            for k in range(steps + 1):
                if reuse and first is not None:
                    batch_for_step = first
                    batch = sample(params, task, k)
                else:
                    batch = sample(params, task, {"k": k, "zero": 0}[k_arg])
                    batch_for_step = batch
                first = first or batch
                if not (skip_first and k == 0):
                    row.append(batch.episode_returns().mean().item())
                episodes.setdefault(k, []).append(batch.episode_returns().flatten())
                if k < steps or extra_adapt:
                    alpha = {"protocol": step_sizes[min(k, len(step_sizes) - 1)], "first": step_sizes[0],
                             "last": step_sizes[-1], "index": step_sizes[k % len(step_sizes)]}[lr]
                    start = meta_params if restart else params
                    params = adapt(start, batch_for_step, alpha)
                    if in_place:
                        meta_params["w"].copy_(params["w"])
            rows.append(row)
        if pooled:
            return [torch.cat(episodes[k]).mean().item() for k in range(steps + 1)]
        return np.mean(rows, axis=0).tolist()

    return curve


def test_adaptation_curve_mistakes():
    check = lc.check_adaptation_curve
    fails(check, _variant(reuse=True), "reusing the pre-update batch")
    fails(check, _variant(lr="first"), "for every step")
    fails(check, _variant(lr="last"), "for every step")
    fails(check, _variant(lr="index"), "step_sizes[min(k", step_sizes=(0.3, 0.2, 0.1), steps=4)
    fails(check, _variant(restart=True), "restarted from θ")
    fails(check, _variant(init="zeros"), "re-initialised")
    fails(check, _variant(carry=True), "carried over")
    fails(check, _variant(pooled=True), "pooled")
    fails(check, _variant(k_arg="zero"), "fresh episodes")
    fails(check, _variant(skip_first=True), "the first is before any adaptation")
    fails(check, _variant(in_place=True), "in place")
    fails(check, lambda s, a, m, tasks, *rest: np.asarray(adaptation_curve(s, a, m, tasks, *rest)) * len(tasks), "sum over tasks")

    def first_task_only(sample, adapt, meta_params, tasks, steps=3, step_sizes=(0.1, 0.05)):
        return adaptation_curve(sample, adapt, meta_params, tasks[:1], steps, step_sizes)

    fails(check, first_task_only, "every test task")

    def several_steps_on_one_batch(sample, adapt, meta_params, tasks, steps=3, step_sizes=(0.1, 0.05)):
        rows = []
        for task in tasks:
            batch = sample(meta_params, task, 0)
            row, params = [batch.episode_returns().mean().item()], meta_params
            for k in range(steps):
                params = adapt(params, batch, step_sizes[min(k, len(step_sizes) - 1)])
                row.append(sample(params, task, k + 1).episode_returns().mean().item())
            rows.append(row)
        return np.mean(rows, axis=0).tolist()

    fails(check, several_steps_on_one_batch, "pre-update batch")
    fails(check, lambda s, a, m, tasks, steps, sizes: adaptation_curve(s, a, m, tasks, steps, sizes)[-1], "list of")
    fails(check, lambda s, a, m, tasks, steps, sizes: adaptation_curve(s, a, m, tasks, steps, sizes)[1:], "the first is before")
    fails(check, lambda s, a, m, tasks, steps, sizes: adaptation_curve(s, a, m, tasks, steps, sizes) + [0.0], "steps")
    fails(check, lambda s, a, m, tasks, steps, sizes: s(m, tasks, 0), "the task passed to sample")
    with pytest.raises(NotImplementedError):
        check(blank)


def test_extra_adapt_after_the_last_measurement_is_harmless():
    lc.check_adaptation_curve(_variant(extra_adapt=True))


def test_fake_problem_reference_improves_with_steps():
    problem = lc.FakeAdaptationProblem(0, 4)
    curve = lc.reference_adaptation_curve(problem.sample, problem.adapt, problem.meta_params, problem.tasks, 3)
    assert curve[0] < curve[1] < curve[3]  # adaptation moves towards each task's goal


# ------------------------------------------------------------------------------------------------
# Q4: Student-t CI


def mean_ci95(values):
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(t_critical(x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def test_mean_ci95_passes(capsys):
    lc.check_mean_ci95(mean_ci95)
    lc.check_mean_ci95(mean_ci95, seed=3, sizes=(3, 6, 41))

    def with_torch(values):
        x = torch.as_tensor(np.asarray(values), dtype=torch.float64)
        if x.numel() == 1:
            return x.mean(), torch.tensor(0.0)
        return x.mean(), t_critical(x.numel() - 1) * x.std() / x.numel() ** 0.5

    lc.check_mean_ci95(with_torch)
    assert "✔" in capsys.readouterr().out


def test_mean_ci95_mistakes():
    def variant(width):
        def fn(values):
            x = np.asarray(values, dtype=np.float64)
            if x.size < 2:
                return float(x.mean()), 0.0
            return float(x.mean()), float(width(x, x.size))
        return fn

    check = lc.check_mean_ci95
    fails(check, variant(lambda x, n: 1.96 * x.std(ddof=1) / np.sqrt(n)), "normal quantile 1.96")
    fails(check, variant(lambda x, n: t_critical(n - 1) * x.std() / np.sqrt(n)), "ddof=0")
    fails(check, variant(lambda x, n: t_critical(n - 1) * x.std(ddof=1)), "divide by √n")
    fails(check, variant(lambda x, n: t_critical(n - 1) * x.std(ddof=1) / n), "not by n")
    fails(check, variant(lambda x, n: x.std(ddof=1) / np.sqrt(n)), "standard error")
    fails(check, variant(lambda x, n: 2 * t_critical(n - 1) * x.std(ddof=1) / np.sqrt(n)), "full width")
    fails(check, variant(lambda x, n: t_critical(n) * x.std(ddof=1) / np.sqrt(n)), "degrees of freedom")
    fails(check, variant(lambda x, n: x.std(ddof=1)), "not the standard deviation")

    def nan_for_one(values):
        x = np.asarray(values, dtype=np.float64)
        return float(x.mean()), float(t_critical(max(x.size - 1, 1)) * x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")

    fails(check, nan_for_one, "one value")
    fails(check, lambda values: np.asarray(values).mean(), "pair")
    with pytest.raises(NotImplementedError):
        check(blank)


def test_checks_leave_global_random_state_alone():
    assert_leaves_random_state(
        lambda: lc.check_velocity_reward(velocity_reward),
        lambda: lc.check_sample_velocity_tasks(sample_velocity_tasks),
        lambda: lc.check_adaptation_curve(adaptation_curve),
        lambda: lc.check_mean_ci95(mean_ci95),
    )