"""Graded checks for notebook 08, the limits of meta-learning, and the reference code they compare with.

Notebook 08 measures when MAML helps little: out-of-distribution tasks, a task distribution with two
very different modes (sinusoids and lines), and what a few adaptation steps on a few examples cannot
fix. Students write four small tools whose reference versions live in :mod:`metalearn_edu.task_mixtures`
(the lecture notebook imports them from there):

    LineTasks            a second task family, y = a·x + b (a mode very unlike a sinusoid)
    sample_mixture       a task batch whose tasks come from several families, with info["mode"]
    per_mode_mse         query MSE after adaptation, averaged separately over each mode's tasks
    meta_learning_gain   paired gain (baseline error − MAML error) over the same test tasks, with a 95% CI
    verdict              "helps" / "hurts" / "no evidence" from a gain and its CI

Each ``check_*`` function calls the student's version on seeded inputs, compares it with the reference
(and with ``evaluate.adaptation_curves``, ``tasks.SinusoidTasks``) and, when something is off, raises
:class:`~metalearn_edu.course.feedback.CheckFailed` naming the likely mistake: a mode label that does
not say where a task came from, support and query points from different tasks, ignored weights or
generator, the error before adaptation or after the wrong number of steps, one mean over all modes,
the sign of the gain, an unpaired or biased confidence interval, a verdict that ignores the interval.
A blank answer's ``NotImplementedError`` propagates unchanged. Every check leaves torch's global
random state as it found it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metalearn_edu.course.checks.diagnosis import call_student, diagnose
from metalearn_edu.course.checks.limits_mixture import check_sample_mixture
from metalearn_edu.course.checks.maml_problem import HINT_OWN_PARAMS
from metalearn_edu.course.feedback import CheckFailed, expect_close, expect_shape, expect_true, passed
from metalearn_edu.evaluate import adaptation_curves
from metalearn_edu.functional import Params, make_mlp, params_of
from metalearn_edu.task_mixtures import VERDICTS, LineTasks, meta_learning_gain, per_mode_mse, sample_mixture, verdict
from metalearn_edu.tasks import SinusoidTasks, TaskBatch

__all__ = [
    "VERDICTS",
    "LineTasks",
    "check_meta_learning_gain",
    "check_per_mode_mse",
    "check_sample_mixture",
    "check_verdict",
    "meta_learning_gain",
    "per_mode_mse",
    "sample_mixture",
    "verdict",
]

_reference_verdict = verdict  # the check's argument has the same name


# ----------------------------------------------------------------------------------------------
# Q2: per_mode_mse


def _small_problem(seed: int, num_tasks: int, shots: int, query: int, families: Sequence[Any]) -> tuple[nn.Module, Params, TaskBatch]:
    """A small tanh network (float32), θ moved away from the module's own parameters, and a mixture batch."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make_mlp(1, (16,), 1, "tanh")
    params = {n: (p.detach() + 0.2 * torch.randn(p.shape, generator=generator)).requires_grad_(True)
              for n, p in params_of(model).items()}
    batch = sample_mixture(families, num_tasks, shots, query, generator)
    return model, params, batch


def _by_mode(values: Tensor, mode: Tensor, num_modes: int, reduce: str = "mean") -> Tensor:
    parts = [values[mode == m] for m in range(num_modes)]
    return torch.stack([p.mean() if reduce == "mean" else p.sum() for p in parts])


def check_per_mode_mse(per_mode_mse: Callable[..., Any], *, seed: int = 0, steps: int = 1, lr: float = 0.01,
                       num_modes: int = 2, empty_mode: bool = False) -> None:
    """``per_mode_mse(model, params, batch, num_modes, lr=..., steps=...)`` → (num_modes,) query MSE per mode.

    Compared with ``evaluate.adaptation_curves`` grouped by ``batch.info['mode']``. With
    ``empty_mode=True`` the batch has no task of the last mode, whose entry must be NaN.
    """
    families: list[Any] = [SinusoidTasks(), LineTasks(), SinusoidTasks(amplitude=(5.0, 10.0))][:num_modes]
    with torch.random.fork_rng(devices=[]):
        model, params, batch = _small_problem(seed, 30, 5, 20, families[:-1] if empty_mode else families)
        theta = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        label = f"per_mode_mse(model, params, batch, {num_modes}, lr={lr}, steps={steps})"
        out = call_student(per_mode_mse, "per_mode_mse", model, theta, batch, num_modes, lr=lr, steps=steps)
        if isinstance(out, (list, tuple)):
            try:
                out = torch.as_tensor([float(v) for v in out])
            except (TypeError, ValueError):
                raise CheckFailed(label, expected="a tensor of numbers (num_modes,)", got=f"a {type(out).__name__} of "
                                  "something else", hint="return torch.stack([...]) of one mean error per mode") from None
        if not isinstance(out, Tensor):
            raise CheckFailed(label, expected=f"a tensor of shape ({num_modes},)", got=f"a {type(out).__name__}",
                              hint="return one mean query MSE per mode, e.g. torch.stack([...]) or torch.tensor([...])")
        expect_shape(label, out, (num_modes,), hint="one number per mode (per family), in mode order 0, 1, ...")
        out = out.detach().double()

        def curves(start: Params, x_s: Tensor, y_s: Tensor, n: int) -> Tensor:
            return adaptation_curves(model, start, x_s, y_s, batch.x_query, batch.y_query, lr=lr, max_steps=n).double()

        mode = batch.info["mode"]
        c = curves(params, batch.x_support, batch.y_support, steps + 1)  # (T, steps + 2)
        reference = _by_mode(c[:, steps], mode, num_modes)
        present = ~torch.isnan(reference)
        if empty_mode:
            expect_true(bool(torch.isnan(out[-1])), f"{label}[{num_modes - 1}] is NaN (no task of that mode in the batch)",
                        hint=f"got {float(out[-1]):.4g}; the mean of no values is undefined: tensor[mask].mean() gives NaN "
                             "by itself, so do not replace it by 0 or skip the mode")
        mistakes: list[tuple[Tensor, str]] = [
            (c[:, 0].mean().expand(num_modes)[present], "this is one mean over every task, before adaptation"),
            (c[:, steps].mean().expand(num_modes)[present],
             "every mode got the same number, the mean over all tasks: average separately over the tasks of each mode "
             "(after[batch.info['mode'] == m].mean())"),
            (_by_mode(c[:, 0], mode, num_modes)[present],
             "this is the error before adaptation (0 steps): take the query MSE after `steps` inner steps"),
            (_by_mode(c[:, steps + 1], mode, num_modes)[present], f"this is the error after {steps + 1} steps: take {steps}"),
            (_by_mode(c[:, steps], mode, num_modes, "sum")[present],
             "these are sums over each mode's tasks: divide by the number of tasks of the mode (use .mean())"),
        ]
        if steps > 1:
            mistakes.append((_by_mode(c[:, steps - 1], mode, num_modes)[present], f"this is the error after {steps - 1} "
                             f"steps: take {steps} (adaptation_curves returns steps 0..max_steps, so column `steps`)"))
        support_mse = adaptation_curves(model, params, batch.x_support, batch.y_support, batch.x_support, batch.y_support,
                                        lr=lr, max_steps=steps)[:, steps].double()
        mistakes.append((_by_mode(support_mse, mode, num_modes)[present],
                         "this is the error on the support set, which the model adapted on: measure it on the query set"))
        own = {n: p.detach() for n, p in params_of(model).items()}
        mistakes.append((_by_mode(curves(own, batch.x_support, batch.y_support, steps)[:, steps], mode, num_modes)[present],
                         HINT_OWN_PARAMS))
        diagnose(label, out[present], reference[present], mistakes, atol=1e-5, rtol=1e-4,
                 hint="curves = adaptation_curves(model, params, batch.x_support, batch.y_support, batch.x_query, "
                      "batch.y_query, lr=lr, max_steps=steps); after = curves[:, steps]; return "
                      "torch.stack([after[batch.info['mode'] == m].mean() for m in range(num_modes)])")
        again = call_student(per_mode_mse, "per_mode_mse", model, theta, batch, num_modes, lr=lr, steps=steps)
        expect_close(f"{label}, called a second time", torch.as_tensor(again).detach().double()[present],
                     reference[present], atol=1e-5, rtol=1e-4,
                     hint="the first call changed params in place: adapt copies (θ′ = θ − α g builds new tensors), "
                          "the meta-parameters θ must stay as they were")
    passed(f"per_mode_mse: query MSE after {steps} step{'s' if steps != 1 else ''}, averaged separately over each mode's tasks")


# ----------------------------------------------------------------------------------------------
# Q3: meta_learning_gain


def _paired_errors(seed: int, n: int) -> tuple[Tensor, Tensor]:
    """Per-task errors of a baseline and of MAML that share the tasks' difficulty (strongly correlated)."""
    generator = torch.Generator().manual_seed(seed)
    difficulty = torch.rand(n, generator=generator, dtype=torch.float64) * 4.0 + 0.5
    baseline = difficulty * (1.0 + 0.2 * torch.rand(n, generator=generator, dtype=torch.float64))
    maml = 0.5 * difficulty + 0.3 * torch.rand(n, generator=generator, dtype=torch.float64)
    return baseline, maml


def check_meta_learning_gain(meta_learning_gain: Callable[..., Any], *, seed: int = 0, n: int = 12) -> None:
    """``meta_learning_gain(baseline_errors, maml_errors)`` → (mean of baseline − MAML, 1.96·std/√N), paired.

    Also: a ValueError when the two hold different numbers of tasks.
    """
    baseline, maml = _paired_errors(seed, n)
    label = f"meta_learning_gain(baseline_errors, maml_errors) on {n} tasks"
    out = call_student(meta_learning_gain, "meta_learning_gain", baseline.clone(), maml.clone())
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(label, expected="a pair (gain, ci95)", got=f"a {type(out).__name__}"
                          + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""),
                          hint="return gain, ci95 (two numbers)")
    try:
        got = torch.tensor([float(out[0]), float(out[1])], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(label, expected="two numbers (gain, ci95)", got=f"({type(out[0]).__name__}, {type(out[1]).__name__})",
                          hint="return floats, or 0-dimensional tensors: use .mean() and .std(), not per-task values") from None
    diff = baseline - maml
    sd, sd_biased = float(diff.std(unbiased=True)), float(diff.std(unbiased=False))
    gain, root = float(diff.mean()), math.sqrt(n)
    reference = torch.tensor([gain, 1.96 * sd / root], dtype=torch.float64)
    unpaired = 1.96 * math.sqrt(float(baseline.var()) / n + float(maml.var()) / n)

    def pair(g: float, c: float) -> Tensor:
        return torch.tensor([g, c], dtype=torch.float64)

    mistakes = [
        (pair(-gain, reference[1].item()), "wrong sign: the gain is baseline error − MAML error (positive when MAML's error "
                                           "is lower)"),
        (pair(gain, unpaired), "this CI treats the two sets of errors as independent samples; they are errors on the same "
                               "tasks, so take the CI of the per-task differences: 1.96 · (b − m).std() / √N"),
        (pair(gain, 1.96 * sd_biased / root), "this uses the population standard deviation (divides by N): use the sample "
                                              "standard deviation, .std() with its default unbiased=True (divides by N − 1)"),
        (pair(gain, sd / root), "this is the standard error; the 95% interval is 1.96 standard errors wide on each side"),
        (pair(gain, 1.96 * sd), "this is 1.96 standard deviations of the task-level differences: divide by √N for the "
                                "uncertainty of their mean"),
        (pair(gain, 1.96 * sd / n), "divide the standard deviation by √N, not N"),
        (pair(gain / float(baseline.mean()), reference[1].item()), "this is a relative gain: return the mean difference "
                                                                   "itself"),
    ]
    diagnose(label, got, reference, mistakes, atol=1e-9, rtol=1e-7,
             hint="d = baseline_errors − maml_errors (per task); return d.mean(), 1.96 · d.std() / √len(d)")
    try:
        meta_learning_gain(torch.ones(3, dtype=torch.float64), torch.ones(4, dtype=torch.float64))
    except NotImplementedError:
        raise
    except ValueError:
        pass
    except Exception as err:  # noqa: BLE001 - any other error is a wrong answer, not a crash of the check
        raise CheckFailed("meta_learning_gain(3 errors, 4 errors)", expected="a ValueError",
                          got=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                          hint="check len(baseline_errors) == len(maml_errors) first and raise ValueError(...) naming both "
                               "arguments: errors of different tasks cannot be paired") from err
    else:
        raise CheckFailed("meta_learning_gain(3 errors, 4 errors)", expected="a ValueError", got="a result",
                          hint="errors of different tasks cannot be paired: raise ValueError when the lengths differ")
    passed("meta_learning_gain: mean paired difference and its 95% CI, 1.96 · std / √N of the per-task differences")


# ----------------------------------------------------------------------------------------------
# Q4: verdict

_VERDICT_CASES = (
    (2.0, 0.5), (-1.0, 0.3), (0.2, 0.5), (-0.2, 0.5), (0.0, 0.0), (1e-3, 1e-4), (-1e-3, 1e-4), (3.0, 2.9), (-3.0, 3.1),
)


def check_verdict(verdict: Callable[..., str], *, extra_cases: Sequence[tuple[float, float]] = (), as_tensors: bool = False) -> None:
    """``verdict(gain, ci95)``: 'helps' if gain − ci95 > 0, 'hurts' if gain + ci95 < 0, else 'no evidence'.

    With ``as_tensors=True`` the numbers are passed as 0-dimensional tensors (as a gain computed with
    torch may be).
    """
    for gain, ci in (*_VERDICT_CASES, *extra_cases):
        args = (torch.tensor(gain, dtype=torch.float64), torch.tensor(ci, dtype=torch.float64)) if as_tensors else (gain, ci)
        out = call_student(verdict, "verdict", *args)
        want = _reference_verdict(gain, ci)
        label = f"verdict(gain={gain:g}, ci95={ci:g})"
        if out not in VERDICTS:
            raise CheckFailed(label, expected=f"one of {list(VERDICTS)}", got=repr(out),
                              hint="return exactly one of the strings 'helps', 'hurts', 'no evidence'")
        if out == want:
            continue
        if (gain > 0 and out == "helps") or (gain < 0 and out == "hurts"):
            hint = (f"the interval [{gain - ci:g}, {gain + ci:g}] contains 0: the data are compatible with no gain at all, "
                    "so the answer is 'no evidence'; look at gain − ci95 and gain + ci95, not at the sign of the gain")
        elif out == "no evidence" and want != "no evidence":
            hint = (f"the whole interval [{gain - ci:g}, {gain + ci:g}] is on one side of 0, so the difference is "
                    "significant at 95%")
        elif {out, want} == {"helps", "hurts"}:
            hint = "helps and hurts are swapped: a positive gain means MAML's error is lower (baseline − MAML)"
        else:
            hint = "'helps' if gain − ci95 > 0, 'hurts' if gain + ci95 < 0, otherwise 'no evidence'"
        raise CheckFailed(label, expected=repr(want), got=repr(out), hint=hint)
    passed("verdict: 'helps' / 'hurts' only when the whole 95% interval is on one side of zero")
