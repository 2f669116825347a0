"""The graded checks of notebook 08 (limits) accept correct answers and name the usual mistakes.

For each check: the reference implementation and an independent student-style version pass; specific
wrong versions (mode labels that lie, support and query from different tasks, ignored weights or
generator, the error before adaptation, one mean over all modes, an unpaired CI, a verdict from the
sign alone ...) raise CheckFailed with a hint that names the mistake; a blank answer's
NotImplementedError propagates. The reference code itself is tested too (it is what the lecture uses).
"""

from __future__ import annotations

import math

import pytest
import torch

from metalearn_edu.course.checks import limits, limits_mixture
from metalearn_edu.course.checks.limits import LineTasks
from metalearn_edu.evaluate import adaptation_curves
from metalearn_edu.functional import adapt, forward, make_mlp, mse, params_of
from metalearn_edu.tasks import SinusoidTasks, TaskBatch
from check_helpers import blank, fails


# ------------------------------------------------------------------------------------------------
# reference code


def test_line_tasks_shapes_ranges_and_seed():
    batch = LineTasks().sample(50, 4, 6, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (50, 4, 1) and batch.y_query.shape == (50, 6, 1)
    assert batch.x_support.dtype == torch.float32
    x = torch.cat([batch.x_support, batch.x_query], dim=1)
    y = torch.cat([batch.y_support, batch.y_query], dim=1)
    torch.testing.assert_close(y, LineTasks.curve(batch.info, x))
    assert batch.info["slope"].abs().max() <= 1 and batch.info["intercept"].abs().max() <= 2
    again = LineTasks().sample(50, 4, 6, torch.Generator().manual_seed(0))
    assert torch.equal(again.x_query, batch.x_query)
    with pytest.raises(ValueError, match="shots"):
        LineTasks().sample(3, 0, 2)


def test_sample_mixture_reference():
    families = [SinusoidTasks(), LineTasks(), SinusoidTasks(x_range=(5.0, 10.0))]
    batch = limits.sample_mixture(families, 300, 5, 7, torch.Generator().manual_seed(1), weights=(1.0, 1.0, 2.0))
    mode = batch.info["mode"]
    assert mode.shape == (300,) and mode.dtype == torch.int64
    counts = torch.bincount(mode, minlength=3).double() / 300
    assert abs(counts[2] - 0.5) < 0.1
    x_all = torch.cat([batch.x_support, batch.x_query], dim=1)
    y_all = torch.cat([batch.y_support, batch.y_query], dim=1)
    for i in range(300):
        assert limits_mixture._belongs(families[int(mode[i])], x_all[i], y_all[i])[0], i
    assert (batch.x_support[mode == 2] >= 5).all()
    with pytest.raises(ValueError, match="weights"):
        limits.sample_mixture(families, 4, 1, 1, weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="families"):
        limits.sample_mixture([], 4, 1, 1)


def test_per_mode_mse_reference_and_gain_and_verdict():
    torch.manual_seed(0)
    model = make_mlp(1, (8,), 1, "tanh")
    batch = limits.sample_mixture([SinusoidTasks(), LineTasks()], 20, 5, 10, torch.Generator().manual_seed(0))
    out = limits.per_mode_mse(model, params_of(model), batch, 3, lr=0.05, steps=2)
    assert out.shape == (3,) and math.isnan(out[2])
    for m in range(2):  # the same thing with a plain loop over tasks and functional.adapt
        errors = []
        for i in (batch.info["mode"] == m).nonzero()[:, 0].tolist():
            theta = {n: p.detach().clone().requires_grad_(True) for n, p in params_of(model).items()}
            adapted = adapt(model, theta, batch.x_support[i], batch.y_support[i], lr=0.05, steps=2)
            errors.append(mse(forward(model, adapted, batch.x_query[i]), batch.y_query[i]).item())
        assert out[m].item() == pytest.approx(sum(errors) / len(errors), rel=1e-4)

    b = torch.tensor([1.0, 2.0, 3.0, 4.0])
    m = torch.tensor([0.5, 1.0, 2.5, 3.0])
    gain, ci = limits.meta_learning_gain(b, m)
    d = b - m
    assert gain == pytest.approx(float(d.mean())) and ci == pytest.approx(1.96 * float(d.std()) / 2)
    with pytest.raises(ValueError, match="same tasks"):
        limits.meta_learning_gain(b, m[:3])
    assert [limits.verdict(g, c) for g, c in ((1, 0.5), (-1, 0.5), (0.1, 0.5), (0.5, 0.5))] == [
        "helps", "hurts", "no evidence", "no evidence"]


# ------------------------------------------------------------------------------------------------
# Q1: sample_mixture


def student_mixture(families, num_tasks, shots, query, generator, weights=None):
    """A different correct implementation: sample every family for every task, then pick per task."""
    w = torch.ones(len(families)) if weights is None else torch.tensor(weights, dtype=torch.float32)
    mode = torch.multinomial(w, num_tasks, replacement=True, generator=generator)
    parts = [f.sample(num_tasks, shots, query, generator) for f in families]
    pick = torch.arange(num_tasks)

    def field(name):
        stacked = torch.stack([getattr(p, name) for p in parts])  # (M, T, n, 1)
        return stacked[mode, pick]

    return TaskBatch(field("x_support"), field("y_support"), field("x_query"), field("y_query"), {"mode": mode})


def test_sample_mixture_check_passes_and_keeps_global_state(capsys):
    torch.manual_seed(123)
    expected = torch.rand(2)
    torch.manual_seed(123)
    limits.check_sample_mixture(limits.sample_mixture)
    limits.check_sample_mixture(student_mixture)
    limits.check_sample_mixture(student_mixture, seed=3, weights=(1.0, 3.0))
    three = [SinusoidTasks(), LineTasks(), SinusoidTasks(amplitude=(5.0, 10.0))]
    limits.check_sample_mixture(limits.sample_mixture, seed=5, families=three, weights=(0.2, 0.3, 0.5))
    assert torch.equal(torch.rand(2), expected)
    assert "✔" in capsys.readouterr().out


def _wrong_mixture(kind):
    def sample(families, num_tasks, shots, query, generator, weights=None):
        g = None if kind == "global" else generator
        w = torch.ones(len(families)) if (weights is None or kind == "ignore_weights") else torch.tensor(weights)
        if kind == "alternate":
            mode = torch.arange(num_tasks) % len(families)
        else:
            mode = torch.multinomial(w, num_tasks, replacement=True, generator=g)
        if kind == "sorted":
            mode = mode.sort().values
        if kind == "all":
            parts = [f.sample(num_tasks, shots, query, g) for f in families]
            return TaskBatch(*(torch.cat([getattr(p, n) for p in parts]) for n in ("x_support", "y_support", "x_query", "y_query")),
                             {"mode": torch.cat([torch.full((num_tasks,), m) for m in range(len(families))])})
        batch = limits.sample_mixture(families, num_tasks, shots, query, g, None if kind == "ignore_weights" else weights) \
            if kind in ("global", "ignore_weights") else student_mixture(families, num_tasks, shots, query, generator, weights)
        if kind in ("alternate", "sorted"):
            parts = [f.sample(num_tasks, shots, query, generator) for f in families]
            pick = torch.arange(num_tasks)
            fields = [torch.stack([getattr(p, n) for p in parts])[mode, pick]
                      for n in ("x_support", "y_support", "x_query", "y_query")]
            return TaskBatch(*fields, {"mode": mode})
        if kind == "flipped_mode":
            return TaskBatch(batch.x_support, batch.y_support, batch.x_query, batch.y_query, {"mode": 1 - batch.info["mode"]})
        if kind == "float_mode":
            return TaskBatch(batch.x_support, batch.y_support, batch.x_query, batch.y_query, {"mode": batch.info["mode"].float()})
        if kind == "no_mode":
            return TaskBatch(batch.x_support, batch.y_support, batch.x_query, batch.y_query, {})
        if kind == "shuffled_query":
            return TaskBatch(batch.x_support, batch.y_support, batch.x_query.roll(1, 0), batch.y_query.roll(1, 0), batch.info)
        return batch
    return sample


@pytest.mark.parametrize("kind, match, kwargs", [
    ("all", "you kept every family's whole batch", {}),
    ("flipped_mode", "its info['mode'] says", {}),
    ("float_mode", "holds integers", {}),
    ("no_mode", "has the key 'mode'", {}),
    ("shuffled_query", "come from different functions", {}),
    ("ignore_weights", "the weights were ignored", {"weights": (1.0, 4.0)}),
    ("global", "from `generator`", {}),
    ("alternate", "drawn at random", {}),
    ("sorted", "not sorted", {}),
])
def test_sample_mixture_mistakes(kind, match, kwargs):
    fails(limits.check_sample_mixture, _wrong_mixture(kind), match, **kwargs)


def test_sample_mixture_blank_and_crash():
    with pytest.raises(NotImplementedError):
        limits.check_sample_mixture(blank)
    fails(limits.check_sample_mixture, lambda *a, **k: None, "TaskBatch")
    fails(limits.check_sample_mixture, lambda families, n, k, q, g: [f.sample(n, k, q, g) for f in families][0], "mode")
    fails(limits.check_sample_mixture, lambda families, n, k, q, g, weights=None: 1 / 0, "ZeroDivisionError")


# ------------------------------------------------------------------------------------------------
# Q2: per_mode_mse


def per_mode_loop(model, params, batch, num_modes, *, lr, steps):
    """A plain-loop student version with functional.adapt."""
    errors = [[] for _ in range(num_modes)]
    for i in range(batch.num_tasks):
        adapted = adapt(model, params, batch.x_support[i], batch.y_support[i], lr=lr, steps=steps, first_order=True)
        errors[int(batch.info["mode"][i])].append(mse(forward(model, adapted, batch.x_query[i]), batch.y_query[i]))
    return torch.stack([torch.stack(e).mean() if e else torch.tensor(float("nan")) for e in errors]).detach()


def test_per_mode_mse_check_passes():
    limits.check_per_mode_mse(limits.per_mode_mse)
    limits.check_per_mode_mse(per_mode_loop)
    limits.check_per_mode_mse(limits.per_mode_mse, seed=4, steps=5, lr=0.05, num_modes=3)
    limits.check_per_mode_mse(limits.per_mode_mse, seed=2, num_modes=3, empty_mode=True)
    limits.check_per_mode_mse(per_mode_loop, seed=2, num_modes=3, empty_mode=True, steps=2)


def _curves(model, params, batch, lr, steps, query=True):
    xq, yq = (batch.x_query, batch.y_query) if query else (batch.x_support, batch.y_support)
    return adaptation_curves(model, params, batch.x_support, batch.y_support, xq, yq, lr=lr, max_steps=steps)


@pytest.mark.parametrize("wrong, match, kwargs", [
    (lambda m, p, b, n, *, lr, steps: _curves(m, p, b, lr, steps)[:, steps].mean().expand(n), "mean over all tasks", {}),
    (lambda m, p, b, n, *, lr, steps: torch.stack([_curves(m, p, b, lr, steps)[:, 0][b.info["mode"] == k].mean()
                                                   for k in range(n)]), "before adaptation", {}),
    (lambda m, p, b, n, *, lr, steps: torch.stack([_curves(m, p, b, lr, steps)[:, steps - 1][b.info["mode"] == k].mean()
                                                   for k in range(n)]), "after 2 steps: take 3", {"steps": 3}),
    (lambda m, p, b, n, *, lr, steps: torch.stack([_curves(m, p, b, lr, steps)[:, steps][b.info["mode"] == k].sum()
                                                   for k in range(n)]), "sums", {}),
    (lambda m, p, b, n, *, lr, steps: torch.stack([_curves(m, p, b, lr, steps, query=False)[:, steps][b.info["mode"] == k].mean()
                                                   for k in range(n)]), "support set", {}),
    (lambda m, p, b, n, *, lr, steps: limits.per_mode_mse(m, params_of(m), b, n, lr=lr, steps=steps), "params argument", {}),
    (lambda m, p, b, n, *, lr, steps: limits.per_mode_mse(m, p, b, n, lr=lr, steps=steps).nan_to_num(0.0), "NaN",
     {"num_modes": 3, "empty_mode": True}),
    (lambda m, p, b, n, *, lr, steps: limits.per_mode_mse(m, p, b, n, lr=lr, steps=steps)[:1], "shape", {}),
    (lambda m, p, b, n, *, lr, steps: "0.3", "a str", {}),
])
def test_per_mode_mse_mistakes(wrong, match, kwargs):
    fails(limits.check_per_mode_mse, wrong, match, **kwargs)


def test_per_mode_mse_in_place_and_blank():
    def in_place(model, params, batch, num_modes, *, lr, steps):
        out = limits.per_mode_mse(model, params, batch, num_modes, lr=lr, steps=steps)
        with torch.no_grad():
            for p in params.values():
                p.add_(1.0)
        return out

    fails(limits.check_per_mode_mse, in_place, "in place")
    with pytest.raises(NotImplementedError):
        limits.check_per_mode_mse(blank)


# ------------------------------------------------------------------------------------------------
# Q3: meta_learning_gain


def gain_student(baseline_errors, maml_errors):
    if len(baseline_errors) != len(maml_errors):
        raise ValueError("baseline_errors and maml_errors must have the same length")
    d = baseline_errors - maml_errors
    return d.mean().item(), (1.96 * d.std() / len(d) ** 0.5).item()


def _gain_variant(ci, sign=1.0, check_length=True):
    def fn(b, m):
        if check_length and len(b) != len(m):
            raise ValueError("lengths differ")
        d = sign * (b - m)
        return float(d.mean()), float(ci(b, m, b - m))
    return fn


def test_meta_learning_gain_check_passes():
    limits.check_meta_learning_gain(limits.meta_learning_gain)
    limits.check_meta_learning_gain(gain_student)
    limits.check_meta_learning_gain(gain_student, seed=3, n=200)
    limits.check_meta_learning_gain(lambda b, m: tuple(torch.tensor(v) for v in gain_student(b, m)))  # 0-d tensors are fine


@pytest.mark.parametrize("wrong, match", [
    (_gain_variant(lambda b, m, d: 1.96 * d.std() / len(d) ** 0.5, sign=-1.0), "wrong sign"),
    (_gain_variant(lambda b, m, d: 1.96 * (b.var() / len(b) + m.var() / len(m)) ** 0.5), "same tasks"),
    (_gain_variant(lambda b, m, d: 1.96 * d.std(unbiased=False) / len(d) ** 0.5), "unbiased=True"),
    (_gain_variant(lambda b, m, d: d.std() / len(d) ** 0.5), "standard error"),
    (_gain_variant(lambda b, m, d: 1.96 * d.std()), "divide by √N"),
    (_gain_variant(lambda b, m, d: 1.96 * d.std() / len(d)), "not N"),
    (_gain_variant(lambda b, m, d: 1.96 * d.std() / len(d) ** 0.5, check_length=False), "ValueError"),
    (lambda b, m: float((b - m).mean()), "pair"),
    (lambda b, m: (b - m, (b - m).std()), "two numbers"),
])
def test_meta_learning_gain_mistakes(wrong, match):
    fails(limits.check_meta_learning_gain, wrong, match)


def test_meta_learning_gain_blank_and_wrong_error():
    with pytest.raises(NotImplementedError):
        limits.check_meta_learning_gain(blank)

    def type_error_on_mismatch(b, m):
        if len(b) != len(m):
            raise TypeError("lengths differ")
        return gain_student(b, m)

    fails(limits.check_meta_learning_gain, type_error_on_mismatch, "ValueError")


# ------------------------------------------------------------------------------------------------
# Q4: verdict


def verdict_student(gain, ci95):
    low, high = gain - ci95, gain + ci95
    return "helps" if low > 0 else "hurts" if high < 0 else "no evidence"


def test_verdict_check_passes():
    limits.check_verdict(limits.verdict)
    limits.check_verdict(verdict_student, extra_cases=((5.0, 4.0), (-0.5, 0.6)), as_tensors=True)


@pytest.mark.parametrize("wrong, match", [
    (lambda g, c: "helps" if g > 0 else "hurts", "contains 0"),
    (lambda g, c: "hurts" if g - c > 0 else "helps" if g + c < 0 else "no evidence", "swapped"),
    (lambda g, c: "no evidence", "one side of 0"),
    (lambda g, c: True, "one of"),
    (lambda g, c: "Helps" if g - c > 0 else "hurts" if g + c < 0 else "no evidence", "one of"),
    (lambda g, c: "helps" if g - c >= 0 else "hurts" if g + c <= 0 else "no evidence", "no evidence"),
])
def test_verdict_mistakes(wrong, match):
    fails(limits.check_verdict, wrong, match)


def test_verdict_blank():
    with pytest.raises(NotImplementedError):
        limits.check_verdict(blank)
