"""Graded checks for notebook 06, PPO-MAML (ProMP).

The student writes the three pieces that ProMP adds to MAML-RL: the KL penalty between two diagonal
Gaussian policies, KL(π_old ‖ π_new) averaged over the valid steps of each task; the ProMP outer
objective, J = (1/T) Σ_i [J^clip_i − η KL_i] with each task's clipped surrogate averaged over its own
valid steps; and the rule that adapts the penalty coefficient η towards a target KL.

Each check first runs a hand-sized case whose answer is known in closed form, then seeded, time-major
inputs ``(H, T, B)`` whose episodes end at different steps, once with zeros after each episode's end
(as the sampler writes them) and once with nonzero numbers there, and compares the value and the
gradients with the library (``rl.objectives.kl_divergence`` and ``rl.ppo_maml.clipped_objective``).
When the answer is wrong it is compared with what the usual mistakes give (the KL direction swapped,
the mask ignored or the padding counted, a sum instead of a mean, the penalty's sign flipped, the old
log-probabilities not detached, the clip on one side only ...) and the mistake is named.

Inputs are float64 and come from a private ``torch.Generator``: the global random state is never touched.
The KL check lives in ``checks.ppo_maml_kl`` and is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import diagnose
from metalearn_edu.course.checks.ppo_clip import clipped_terms
from metalearn_edu.course.checks.rl_data import ATOL, RTOL, call_student, data_label, episode_mask, expect_tensor, padded
from metalearn_edu.course.checks.ppo_maml_kl import check_gaussian_kl, gradients
from metalearn_edu.course.feedback import CheckFailed, passed
from metalearn_edu.rl.ppo_maml import adapt_kl_coef, clipped_objective

__all__ = [
    "check_adapt_kl_coef",
    "check_gaussian_kl",
    "check_promp_objective",
    "reference_adapt_kl_coef",
]

# ----------------------------------------------------------------------------------------------
# Q2: the ProMP outer objective


def _objective_data(seed: int, horizon: int, batch: Sequence[int], padding: str) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = episode_mask(generator, horizon, batch)
    shape = mask.shape
    old_log_probs = -1.0 - 0.5 * torch.rand(shape, generator=generator, dtype=torch.float64)
    log_probs = old_log_probs + 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)  # ratios ~0.4..2.5
    advantages = torch.randn(shape, generator=generator, dtype=torch.float64)
    kl = 0.02 + 0.08 * torch.rand(shape[1:-1], generator=generator, dtype=torch.float64)  # (T,)
    return {
        "mask": mask,
        "log_probs": padded(log_probs, mask, padding, generator, 1.0),
        "old_log_probs": padded(old_log_probs, mask, padding, generator, -2.0),
        "advantages": padded(advantages, mask, padding, generator, 4.0),
        "kl": kl,
    }


def _objective_variant(d: dict[str, Tensor], clip: float, kl_coef: float, *, combine: str = "min", ratio: str = "exp",
                       reduction: str = "task_steps", use_mask: bool = True, penalty_sign: float = -1.0,
                       coef: bool = True, kl_reduction: str = "mean", overall_sign: float = 1.0) -> Tensor:
    """J with one deliberate change, to recognise a common mistake.

    ``combine``: "min" (right), "max", "clipped", "unclipped", "min_ratio", "upper_only", "lower_only".
    ``reduction`` of the surrogate: "task_steps" (right: per task over its valid steps, mean over tasks), "pooled"
    (over all valid steps of all tasks), "episodes" (sum over time, mean over episodes, mean over tasks),
    "padding_counted" (per task over H·B steps), "task_sum" (per task over its valid steps, SUM over tasks).
    """
    mask = d["mask"]
    m = mask if use_mask else torch.ones_like(mask)
    lp, old, adv = (d[k].detach() * m for k in ("log_probs", "old_log_probs", "advantages"))
    rho = torch.exp(lp - old) if ratio == "exp" else torch.exp(old - lp)
    per_step = clipped_terms(rho, adv, clip, combine) * m
    dims = (0, -1)
    if reduction == "task_steps":
        surrogate = (per_step.sum(dims) / m.sum(dims).clamp_min(1.0)).mean()
    elif reduction == "task_sum":
        surrogate = (per_step.sum(dims) / m.sum(dims).clamp_min(1.0)).sum()
    elif reduction == "pooled":
        surrogate = per_step.sum() / m.sum()
    elif reduction == "episodes":
        surrogate = per_step.sum(0).mean(-1).mean()
    elif reduction == "padding_counted":
        surrogate = (per_step.sum(dims) / (mask.shape[0] * mask.shape[-1])).mean()
    else:
        raise ValueError(reduction)
    kl = d["kl"].detach()
    kl_term = kl.mean() if kl_reduction == "mean" else kl.sum()
    return overall_sign * (surrogate + penalty_sign * (kl_coef if coef else 1.0) * kl_term)


def _objective_mistakes(data: dict[str, Tensor], clip: float, kl_coef: float) -> list[tuple[Tensor, str]]:
    """What the usual mistakes give on ``data``, each with the hint that names it."""
    variant = lambda **change: _objective_variant(data, clip, kl_coef, **change)  # noqa: E731
    return [
        (variant(penalty_sign=1.0), "wrong sign of the penalty: ProMP MAXIMISES J = J_clip − η·KL, so the KL is "
                                    "subtracted (a large KL must lower the objective)"),
        (variant(overall_sign=-1.0), "this is the loss −J: return the objective J = J_clip − η·KL itself (the "
                                     "training code minimises −J)"),
        (variant(coef=False), "the KL was not multiplied by kl_coef (η)"),
        (variant(kl_reduction="sum"), "the KL was summed over tasks: J averages over tasks, so use kl.mean()"),
        (variant(reduction="task_sum"), "sum instead of mean over tasks: J = (1/T) Σ_i (...), the MEAN over tasks, so "
                                        "that the step size does not depend on the meta-batch size"),
        (variant(use_mask=False), "padded steps (mask 0) entered the surrogate: multiply each step by mask and divide by "
                                  "the number of VALID steps (here the mask was not used at all)"),
        (variant(reduction="padding_counted"), "padded steps were zeroed but counted: divide each task's sum by its own "
                                               "number of valid steps mask.sum((0, 2)), not by H·B"),
        (variant(reduction="episodes"), "not a per-step average: each task's sum over its valid steps must be divided by "
                                        "its number of valid steps N_i = Σ mask (here it was summed over time and "
                                        "averaged over episodes, the scale of notebook 04's loss)"),
        (variant(reduction="pooled"), "the valid steps of all tasks were pooled: average each task over ITS OWN valid "
                                      "steps (Σ_{t,b} over dims 0 and 2, divided by that task's mask sum), then take "
                                      "the mean over tasks"),
        (variant(combine="max"), "max instead of min: the clipped objective keeps the smaller (pessimistic) of ρA "
                                 "and clip(ρ)A"),
        (variant(combine="clipped"), "only the clipped term: take min(ρA, clip(ρ, 1−ε, 1+ε)A), so that a ratio that "
                                     "moved the wrong way is not clipped"),
        (variant(combine="unclipped"), "the ratio was never clipped: min(ρA, clip(ρ, 1−ε, 1+ε)A)"),
        (variant(combine="min_ratio"), "the min was taken of the ratios and then multiplied by A: take the min of the "
                                       "two PRODUCTS ρA and clip(ρ)A (for A < 0 the order flips)"),
        (variant(combine="upper_only"), "the clip was applied on one side only (no lower bound 1 − ε): clip the ratio to "
                                        "[1 − ε, 1 + ε], torch.clamp(ratio, 1 - clip, 1 + clip)"),
        (variant(combine="lower_only"), "the clip was applied on one side only (no upper bound 1 + ε): clip the ratio to "
                                        "[1 − ε, 1 + ε], torch.clamp(ratio, 1 - clip, 1 + clip)"),
        (variant(ratio="inverse"), "the ratio is upside down: ρ = π_new / π_old = exp(log_probs − old_log_probs)"),
    ]


HINT_OBJECTIVE = ("ratio = exp(log_probs − old_log_probs.detach()); per step min(ratio·A, clamp(ratio, 1−clip, 1+clip)·A)"
                  "·mask; per task .sum((0, 2)) / mask.sum((0, 2)); then .mean() − kl_coef · kl.mean()")


def _objective_hand_case(promp_objective: Callable[..., Tensor]) -> None:
    """One task, one episode of 4 valid steps and a padded one, clip 0.2, KL 0.4, η = 0.5; every clip case occurs.

    (ratio, A) = (1, 2), (2, 3), (0.5, −2), (2, −1): min(ρA, clip(ρ)A) = 2, 3.6 (clipped), −1.6 (clipped),
    −2 (not clipped: the ratio moved the harmful way); J = (2 + 3.6 − 1.6 − 2)/4 − 0.5·0.4 = 0.3. Every usual
    mistake gives a different number here (except those that need two tasks to show).
    """
    ratios = torch.tensor([1.0, 2.0, 0.5, 2.0], dtype=torch.float64)
    old = torch.tensor([-1.0, -0.5, -2.0, -1.5, 0.0], dtype=torch.float64)
    data = {
        "old_log_probs": old.view(5, 1, 1),
        "log_probs": (old + torch.cat([ratios.log(), torch.zeros(1, dtype=torch.float64)])).view(5, 1, 1),
        "advantages": torch.tensor([2.0, 3.0, -2.0, -1.0, 7.0], dtype=torch.float64).view(5, 1, 1),  # 7.0: padding
        "mask": torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64).view(5, 1, 1),
        "kl": torch.tensor([0.4], dtype=torch.float64),
    }
    args = [data[k].clone() for k in ("log_probs", "old_log_probs", "advantages", "mask", "kl")]
    out = call_student(promp_objective, "promp_objective", *args, 0.2, 0.5)
    label = ("promp_objective on a hand-sized case ((ratio, A) = (1, 2), (2, 3), (0.5, −2), (2, −1), clip 0.2, "
             "KL 0.4, kl_coef 0.5)")
    expected = torch.tensor(0.3, dtype=torch.float64)
    expect_tensor(label, out, expected, hint="J is one number: the mean over tasks of (clipped surrogate − kl_coef · KL)")
    diagnose(label, out, expected, _objective_mistakes(data, 0.2, 0.5), atol=1e-9, rtol=1e-9,
             hint="(min(1·2, 1·2) + min(2·3, 1.2·3) + min(0.5·(−2), 0.8·(−2)) + min(2·(−1), 1.2·(−1))) / 4 valid steps "
                  "= (2 + 3.6 − 1.6 − 2) / 4 = 0.5, minus 0.5 · 0.4 = 0.3")


def check_promp_objective(promp_objective: Callable[..., Tensor], *, seed: int = 0, clip: float = 0.3, kl_coef: float = 0.5,
                          horizon: int = 6, batch: Sequence[int] = (3, 4)) -> None:
    """``promp_objective(log_probs, old_log_probs, advantages, mask, kl, clip, kl_coef)`` = the scalar
    (1/T) Σ_i [ (1/N_i) Σ_{t,b} m min(ρA, clip(ρ, 1−ε, 1+ε)A) − η KL_i ],  ρ = exp(log_probs − old_log_probs).

    Compared with ``rl.ppo_maml.clipped_objective(...) − kl_coef · kl.mean()``: the value, the gradients with respect
    to ``log_probs`` and ``kl`` (the penalty must move θ), and that no gradient reaches ``old_log_probs`` or
    ``advantages`` (constants).
    """
    _objective_hand_case(promp_objective)
    for padding in ("zeros", "garbage"):
        data = _objective_data(seed, horizon, batch, padding)
        mask = data["mask"]
        leaves = {k: data[k].clone().requires_grad_(True) for k in ("log_probs", "old_log_probs", "advantages", "kl")}
        out = call_student(promp_objective, "promp_objective", leaves["log_probs"], leaves["old_log_probs"],
                           leaves["advantages"], mask.clone(), leaves["kl"], clip, kl_coef)
        label = f"promp_objective(..., clip={clip}, kl_coef={kl_coef}) on {data_label(padding)}"
        reference = clipped_objective(leaves["log_probs"], leaves["old_log_probs"].detach(), leaves["advantages"].detach(),
                                      mask, clip) - kl_coef * leaves["kl"].mean()
        expect_tensor(label, out, reference,
                      hint="J is one number: average each task's surrogate over its valid steps, then take the mean over "
                           "tasks (and the mean of the per-task KLs)")
        diagnose(label, out, reference, _objective_mistakes(data, clip, kl_coef), atol=ATOL, rtol=RTOL, hint=HINT_OBJECTIVE)
        if not out.requires_grad:
            raise CheckFailed(f"{label}: gradient", expected="an objective that autograd can differentiate",
                              got="a tensor with requires_grad=False",
                              hint="do not detach log_probs or kl (or use .item(), torch.no_grad()): J must move θ")
        got = dict(zip(leaves, gradients(out, list(leaves.values()))))
        ref_log_probs, ref_kl = gradients(reference, [leaves["log_probs"], leaves["kl"]])
        diagnose(f"{label}: d J / d log_probs", got["log_probs"], ref_log_probs, [
            (torch.zeros_like(ref_log_probs), "the gradient is zero: log_probs was detached on the way to J"),
        ], atol=ATOL, rtol=RTOL, hint="the gradient flows through the ratio where it is not clipped: build J from log_probs "
                                      "with torch operations (exp, clamp, minimum)")
        diagnose(f"{label}: d J / d kl", got["kl"], ref_kl, [
            (torch.zeros_like(ref_kl), "no gradient reaches the KL: it was detached (or turned into a float), so the penalty "
                                       "does not pull θ back towards θ_old; keep kl in the graph"),
            (-ref_kl, "wrong sign of the penalty's gradient: J = J_clip − η·KL"),
        ], atol=ATOL, rtol=RTOL, hint="d J / d KL_i = −kl_coef / T for every task i")
        for name in ("old_log_probs", "advantages"):
            grad = got[name]
            if grad.abs().max() > 0:
                raise CheckFailed(f"{label}: d J / d {name}", expected="no gradient (a constant)",
                                  got=f"a nonzero gradient (max |.| {grad.abs().max().item():.3g})",
                                  hint=f"missing detach: {name} belong to the post-update policy at θ_old, fixed for all "
                                       f"epochs; use {name}.detach() so that J moves θ only through log_probs (in ProMP they "
                                       "are computed at the first epoch through the inner step, so they DO carry a graph "
                                       "until you detach them)")
    passed(f"ProMP objective matches (clip={clip}, kl_coef={kl_coef}): per-step average per task, mean over tasks, "
           "penalty subtracted, constants detached")


# ----------------------------------------------------------------------------------------------
# Q3: adapting the KL coefficient


# η ← 2η if KL > 1.5·target; η ← η/2 if KL < target/1.5; else unchanged: the trainer's own rule (--kl-target)
reference_adapt_kl_coef = adapt_kl_coef


def _kl_coef_cases() -> list[tuple[float, float, float]]:
    """(kl_coef, kl, target) covering: far above, just above 1.5·target, inside the band on both sides of the
    target, just below target/1.5, far below, and KL = 0."""
    cases = []
    for coef, target in ((5e-4, 0.01), (0.2, 0.003), (1.0, 0.05)):
        for factor in (10.0, 1.6, 1.4, 1.1, 0.9, 0.7, 0.6, 0.1, 0.0):
            cases.append((coef, factor * target, target))
    return cases


def _kl_coef_variants(kl_coef: float, kl: float, target: float) -> list[tuple[float, str]]:
    def rule(up: float, down: float, high: float, low: float) -> float:
        if kl > high:
            return kl_coef * up
        if kl < low:
            return kl_coef * down
        return kl_coef

    return [
        (rule(0.5, 2.0, 1.5 * target, target / 1.5), "the update runs the wrong way: when the KL is too LARGE the policy "
                                                     "moved too far, so the penalty must get STRONGER (η doubled)"),
        (rule(2.0, 0.5, target, target), "no tolerance band: η changes only when the KL leaves [target/1.5, 1.5·target]; "
                                         "inside the band it stays as it is"),
        (rule(2.0, 0.5, 1.5 * target, 1.5 * target), "the lower threshold is target / 1.5, not 1.5·target"),
        (rule(2.0, 0.5, target / 1.5, target / 1.5), "the upper threshold is 1.5·target, not target / 1.5"),
        (rule(1.5, 1 / 1.5, 1.5 * target, target / 1.5), "η is doubled or halved (× 2, / 2); 1.5 is the tolerance of the "
                                                         "KL, not the factor of η"),
        (rule(2.0, 0.5, target + 1.5, target - 1.5), "the band is multiplicative: 1.5·target and target / 1.5, not "
                                                     "target ± 1.5"),
    ]


def check_adapt_kl_coef(adapt_kl_coef: Callable[[float, float, float], float]) -> None:
    """``adapt_kl_coef(kl_coef, kl, target)`` = 2η if KL > 1.5·target, η/2 if KL < target/1.5, else η (floats).

    Run on a table of cases with known answers (KL far above, just above, inside the band on both sides of the
    target, just below, far below, zero) for three targets. A wrong answer is compared, over the whole table, with
    what the usual mistakes give (the rule backwards, no tolerance band, the wrong thresholds or factors).
    """
    cases = _kl_coef_cases()
    answers = []
    for kl_coef, kl, target in cases:
        label = f"adapt_kl_coef(kl_coef={kl_coef:g}, kl={kl:.4g}, target={target:g})"
        got = call_student(adapt_kl_coef, "adapt_kl_coef", kl_coef, kl, target)
        expected = reference_adapt_kl_coef(kl_coef, kl, target)
        if got is None:
            raise CheckFailed(label, expected=f"{expected:g}", got="None",
                              hint="the function returns nothing: end it with `return ...`")
        try:
            answers.append(float(got))
        except (TypeError, ValueError):
            raise CheckFailed(label, expected=f"a number ({expected:g})", got=f"a {type(got).__name__}",
                              hint="return the new coefficient as a number") from None

    def same(values: Sequence[float], others: Sequence[float]) -> bool:
        return all(math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) for a, b in zip(values, others))

    expected = [reference_adapt_kl_coef(*case) for case in cases]
    if same(answers, expected):
        passed("KL coefficient rule matches: doubled above 1.5·target, halved below target/1.5, kept in between")
        return
    first = next(i for i, (a, b) in enumerate(zip(answers, expected)) if not same([a], [b]))
    kl_coef, kl, target = cases[first]
    label = f"adapt_kl_coef(kl_coef={kl_coef:g}, kl={kl:.4g}, target={target:g})"
    variants = [_kl_coef_variants(*case) for case in cases]  # per case: [(value, hint), ...]
    for index, (_, explanation) in enumerate(variants[0]):
        if same(answers, [row[index][0] for row in variants]):
            raise CheckFailed(label, expected=f"{expected[first]:g}", got=f"{answers[first]:g}, what a common mistake gives",
                              hint=explanation)
    ratio = kl / target
    where = "above 1.5·target" if ratio > 1.5 else ("below target / 1.5" if ratio < 1 / 1.5 else "inside the band")
    raise CheckFailed(label, expected=f"{expected[first]:g}", got=f"{answers[first]:g}",
                      hint=f"here the KL is {ratio:.2g} × target, {where}: double η above 1.5·target, halve it below "
                           "target / 1.5, keep it inside the band")
