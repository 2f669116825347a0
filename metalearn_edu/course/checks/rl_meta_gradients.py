"""Graded checks for notebook 05, meta-gradients in RL.

The student writes DiCE's MagicBox, the DiCE surrogate, the LVC surrogate and the differentiable inner
policy-gradient step. A surrogate is judged by its derivatives, not only its value: each check compares,
on seeded time-major inputs with episodes of different lengths, the value, the gradient with respect to
the log-probabilities and a Hessian-vector product with the library (``rl.objectives.magic_box``,
``dice_surrogate``, ``lvc_surrogate``), and then computes the *exact* expected Hessian of the student's
surrogate on a tabular MDP small enough to enumerate (``rl.exact.expected_surrogate_hessian``) and
compares it with the terms of the true Hessian (``rl.exact.hessian_terms``): DiCE must give
H1 + H2 + H12 + H12ᵀ = ∇²J, LVC H1 + H2. When the answer is wrong it is compared with what the usual
mistakes give (MagicBox on each step's log-probability instead of the cumulative sum, the first-order
"x − stop_grad(x) + 1" box, the naive surrogate, a missing discount, a descent step ...) and the
mistake is named.

Problems are tiny (2 states, 2 actions, 3 steps: 64 trajectories) and float64; every check runs in well
under a second and leaves the global random state alone. Q4's check and the tabular problem live in
``checks.rl_inner_step`` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import diagnose
from metalearn_edu.course.checks.rl_data import ATOL, HINT_MASK, RTOL, call_student, episode_mask, expect_tensor
from metalearn_edu.course.checks.rl_inner_step import HORIZON, check_policy_gradient_step, tabular_problem
from metalearn_edu.course.feedback import CheckFailed, expect_close, passed
from metalearn_edu.rl import objectives as reference_objectives
from metalearn_edu.rl.exact import (
    expected_surrogate_hessian,
    hessian_terms,
    reward_to_go_from_start,
)

__all__ = [
    "HORIZON",
    "check_dice_surrogate",
    "check_lvc_surrogate",
    "check_magic_box",
    "check_policy_gradient_step",
    "tabular_problem",
]

HINT_DETACHED = (
    "no gradient reaches log_probs: the surrogate was cut from the graph (.detach() on the wrong tensor, "
    ".item(), torch.no_grad(), or a MagicBox whose value and 'stop-gradient' part are the same detached tensor)"
)


# ----------------------------------------------------------------------------------------------
# derivatives of a surrogate with respect to the log-probabilities


def _surrogate_data(seed: int, horizon: int, batch: Sequence[int]) -> dict[str, Tensor]:
    """log-probabilities (< 0), rewards, advantages and a mask, with nonzero numbers in the padding."""
    generator = torch.Generator().manual_seed(seed)
    mask = episode_mask(generator, horizon, batch)
    shape = mask.shape

    def padded(values: Tensor, offset: float) -> Tensor:
        return torch.where(mask > 0, values, offset + torch.rand(shape, generator=generator, dtype=torch.float64))

    return {
        "mask": mask,
        "log_probs": padded(-0.2 - torch.rand(shape, generator=generator, dtype=torch.float64), -4.0),
        "rewards": padded(torch.randn(shape, generator=generator, dtype=torch.float64), 3.0),
        "advantages": padded(torch.randn(shape, generator=generator, dtype=torch.float64), -3.0),
        "direction": torch.randn(shape, generator=generator, dtype=torch.float64),
    }


def _derivatives(surrogate: Callable[[Tensor], Tensor], log_probs: Tensor, direction: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(value, ∇_lp Σ value, ∇²_lp Σ value · direction) of a reference surrogate; zeros where there is no graph."""
    leaf = log_probs.detach().clone().requires_grad_(True)
    value = surrogate(leaf)
    return (value.detach(), *_grad_and_hvp(value, leaf, direction))


def _grad_and_hvp(value: Tensor, leaf: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
    if not value.requires_grad:
        return torch.zeros_like(leaf), torch.zeros_like(leaf)
    (grad,) = torch.autograd.grad(value.sum(), leaf, create_graph=True, allow_unused=True)
    if grad is None:
        return torch.zeros_like(leaf), torch.zeros_like(leaf)
    if not grad.requires_grad:
        return grad.detach(), torch.zeros_like(leaf)
    (hvp,) = torch.autograd.grad((grad * direction).sum(), leaf, allow_unused=True)
    return grad.detach(), torch.zeros_like(leaf) if hvp is None else hvp.detach()


def _student_derivatives(fn: Callable[..., Tensor], name: str, label: str, log_probs: Tensor, direction: Tensor,
                         args: tuple, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Call the student's surrogate on a fresh leaf; check the output; return its value, gradient and HVP."""
    leaf = log_probs.detach().clone().requires_grad_(True)
    value = call_student(fn, name, leaf, *args)
    expect_tensor(label, value, like, hint="one number per task: sum over time (dim 0), then the mean over episodes "
                                           "(the last dim): (H, T, B) -> (T,)")
    try:
        grad, hvp = _grad_and_hvp(value, leaf, direction)
    except Exception as err:  # an operation autograd cannot differentiate twice
        raise CheckFailed(f"{label}: derivatives", expected="autograd to differentiate the surrogate twice",
                          got=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}",
                          hint="build the surrogate from torch operations on log_probs (no in-place updates, no NumPy)") from err
    return value.detach(), grad, hvp


def _compare_derivatives(label: str, got: tuple[Tensor, Tensor, Tensor], reference: tuple[Tensor, Tensor, Tensor],
                         mistakes: Sequence[tuple[tuple[Tensor, Tensor, Tensor], str]], hints: Sequence[str]) -> None:
    """Value, then gradient, then Hessian-vector product: the first that differs names the likely mistake."""
    parts = ("value", "gradient d/d log_probs", "Hessian-vector product d²/d log_probs² · v")
    for index, (part, hint) in enumerate(zip(parts, hints)):
        known = [(m[index], why) for m, why in mistakes]
        diagnose(f"{label}: {part}", got[index], reference[index], known, atol=ATOL, rtol=RTOL, hint=hint)


def _exact_hessian_check(label: str, surrogate: Callable[[Tensor, Tensor, Tensor], Tensor], name: str, seed: int, gamma: float,
                         target: str) -> None:
    """Compare sum_tau p(tau) ∇²L(θ; tau) of the student's surrogate with the exact Hessian terms on a tabular MDP."""
    task, logits = tabular_problem(seed)
    terms = hessian_terms(task, logits, HORIZON, gamma)
    candidates = {
        "dice": (terms.total(), "H1 + H2 + H12 + H12ᵀ (the exact Hessian of J)"),
        "lvc": (terms.score_outer + terms.log_prob_curvature, "H1 + H2 (LVC)"),
        "naive": (terms.log_prob_curvature, "H2 only (the naive score-function surrogate)"),
        "none": (torch.zeros_like(terms.total()), "zero (a first-order surrogate)"),
    }
    try:
        expected_hessian = expected_surrogate_hessian(surrogate, task, logits, HORIZON)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as err:
        raise CheckFailed(f"calling {name} on every trajectory of a tabular MDP",
                          expected="it to accept log_probs of shape (H, N, 1) (N trajectories, one episode each)",
                          got=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}",
                          hint="do not assume a particular number of dims: time is dim 0, episodes the last dim") from err
    want, want_label = candidates[target]
    mistakes = [(matrix, f"your expected Hessian is {what}, not {want_label}: " + _TERM_HINTS[target][key])
                for key, (matrix, what) in candidates.items() if key != target]
    diagnose(label, expected_hessian, want, mistakes, atol=1e-9, rtol=1e-7,
             hint=f"E[∇²L] must be {want_label}; recheck which log-probabilities each MagicBox / ratio contains")


_TERM_HINTS = {
    "dice": {
        "lvc": "each reward r_t must be multiplied by MagicBox of the SUM of the log-probabilities of all actions up to t "
               "(torch.cumsum over dim 0), not of log π_t alone; the cross-time products give H12",
        "naive": "this is what log π · return gives; DiCE uses MagicBox(cumulative log-probabilities) × reward",
        "none": "the box has the right value and gradient but no curvature: use exp(x − x.detach())",
    },
    "lvc": {
        "dice": "the ratio of step t must contain log π_t only (no cumulative sum over earlier steps)",
        "naive": "log π_t · A_t has no score outer product: use the ratio exp(log π_t − stop_grad(log π_t)) · A_t",
        "none": "the ratio has the right value and gradient but no curvature: use exp(log π − log π.detach())",
    },
}


# ----------------------------------------------------------------------------------------------
# Q1: MagicBox


def check_magic_box(magic_box: Callable[[Tensor], Tensor], *, seed: int = 0, size: int = 6) -> None:
    """``magic_box(x)`` = exp(x − stop_grad(x)): value 1, and d^k/dx^k MagicBox(x) = MagicBox(x) · (d/dx)^k ... .

    Checked elementwise on a seeded vector: the value (ones), the gradient (ones) and the second derivative
    (ones), and on x = cumsum(y): the gradient with respect to y.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, generator=generator, dtype=torch.float64).requires_grad_(True)
    weights = torch.rand(size, generator=generator, dtype=torch.float64) + 0.5
    before = x.detach().clone()
    out = call_student(magic_box, "magic_box", x)
    expect_tensor("magic_box(x)", out, x.detach())
    if not torch.equal(x.detach(), before):
        raise CheckFailed("x after magic_box(x)", expected="unchanged", got="modified in place",
                          hint="compute a new tensor: torch.exp(x - x.detach())")
    ones = torch.ones_like(before)
    diagnose("magic_box(x): value", out.detach(), ones, [
        (torch.exp(before), "this is exp(x): the value of MagicBox must be exactly 1, so subtract stop_grad(x) inside the "
                            "exp: exp(x − x.detach())"),
        (torch.zeros_like(before), "this is x − stop_grad(x), whose value is 0: exponentiate it"),
    ], atol=ATOL, rtol=RTOL, hint="MagicBox(x) = torch.exp(x - x.detach()); its value is 1")
    if not out.requires_grad:
        raise CheckFailed("magic_box(x): gradient", expected="d MagicBox / dx = 1 (it carries the gradient of x)",
                          got="no gradient (the output is not connected to x)",
                          hint="detach only the subtracted copy: exp(x − x.detach()); not exp(x.detach() − x.detach()), "
                               "not torch.ones_like(x), not a detached output")
    (grad,) = torch.autograd.grad((out * weights).sum(), x, create_graph=True, allow_unused=True)
    grad = torch.zeros_like(before) if grad is None else grad
    diagnose("magic_box(x): first derivative (weighted)", grad.detach(), weights, [
        (-weights, "the gradient has the wrong sign: exp(x − x.detach()), not exp(x.detach() − x)"),
        (torch.zeros_like(weights), "the gradient is zero: detach only the subtracted copy, exp(x − x.detach())"),
    ], atol=ATOL, rtol=RTOL, hint="d/dx exp(x − stop_grad(x)) = exp(0) · 1 = 1")
    second = torch.zeros_like(before)
    if grad.requires_grad:
        (hessian_diagonal,) = torch.autograd.grad(grad.sum(), x, allow_unused=True)
        second = second if hessian_diagonal is None else hessian_diagonal.detach()
    diagnose("magic_box(x): second derivative (weighted)", second, weights, [
        (torch.zeros_like(weights), "the second derivative is zero: x − x.detach() + 1 has the right value and gradient "
                                    "but no curvature. DiCE needs every order of derivative, which exp gives: "
                                    "d²/dx² exp(x − stop_grad(x)) = 1"),
    ], atol=ATOL, rtol=RTOL, hint="use torch.exp(x - x.detach())")
    # through a sum: MagicBox(Σ_{k<=t} y_k) must pass the gradient to every y_k with k <= t
    y = torch.randn(size, generator=generator, dtype=torch.float64).requires_grad_(True)
    boxed = call_student(magic_box, "magic_box", torch.cumsum(y, dim=0))
    (grad_y,) = torch.autograd.grad((boxed * weights).sum(), y, allow_unused=True)
    reference = weights.flip(0).cumsum(0).flip(0)
    expect_close("magic_box(cumsum(y)): gradient with respect to y", torch.zeros_like(y) if grad_y is None else grad_y,
                 reference, atol=ATOL, rtol=RTOL, hint="MagicBox must be applied to the tensor it is given, elementwise")
    passed("MagicBox: value 1, first and second derivatives 1 (exp(x − stop_grad(x)))")


# ----------------------------------------------------------------------------------------------
# Q2: the DiCE surrogate


def _dice_variant(log_probs: Tensor, rewards: Tensor, mask: Tensor, gamma: float, *, box: str = "cumulative",
                  discount: bool = True, use_mask: bool = True, reduction: str = "episodes") -> Tensor:
    """The DiCE surrogate with one deliberate change.

    ``box``: "cumulative" (right), "per_step" (MagicBox of log π_t alone), "future" (cumsum from the end),
    "first_order" (x − stop_grad(x) + 1), "none" (exp(cumsum) without stop-gradient).
    """
    m = mask if use_mask else torch.ones_like(mask)
    lp = torch.where(m > 0, log_probs, torch.zeros_like(log_probs))
    horizon = lp.shape[0]
    discounts = (gamma if discount else 1.0) ** torch.arange(horizon, dtype=lp.dtype)
    discounts = discounts.view(horizon, *([1] * (lp.dim() - 1)))
    cumulative = {"cumulative": torch.cumsum(lp, 0), "per_step": lp, "future": lp.flip(0).cumsum(0).flip(0),
                  "first_order": torch.cumsum(lp, 0), "none": torch.cumsum(lp, 0)}[box]
    if box == "first_order":
        boxed = cumulative - cumulative.detach() + 1.0
    elif box == "none":
        boxed = torch.exp(cumulative)
    else:
        boxed = reference_objectives.magic_box(cumulative)
    per_step = boxed * discounts * rewards.detach() * m
    return per_step.sum(0).mean(-1) if reduction == "episodes" else (per_step.sum(0).sum(-1) if reduction == "sum"
                                                                        else per_step.mean(0).mean(-1))


def check_dice_surrogate(dice_surrogate: Callable[..., Tensor], *, seed: int = 0, gamma: float = 0.9, horizon: int = 5,
                         batch: Sequence[int] = (2, 3)) -> None:
    """``dice_surrogate(log_probs, rewards, mask, gamma)`` = mean_b Σ_t m_t γ^t r_t MagicBox(Σ_{t'≤t} log π_t').

    Value, gradient and a Hessian-vector product with respect to ``log_probs`` are compared with
    ``rl.objectives.dice_surrogate`` (rewards and log-probabilities are nonzero after each episode's end);
    then its exact expected Hessian on a tabular MDP must be the full ∇²J = H1 + H2 + H12 + H12ᵀ.
    """
    data = _surrogate_data(seed, horizon, batch)
    mask, rewards, log_probs, direction = data["mask"], data["rewards"], data["log_probs"], data["direction"]
    label = f"dice_surrogate(..., gamma={gamma})"
    got = _student_derivatives(dice_surrogate, "dice_surrogate", label, log_probs, direction,
                               (rewards.clone(), mask.clone(), gamma), like=mask.sum(0).mean(-1))

    def variant(**change: Any) -> tuple[Tensor, Tensor, Tensor]:
        return _derivatives(lambda lp: _dice_variant(lp, rewards, mask, gamma, **change), log_probs, direction)

    reference = _derivatives(lambda lp: reference_objectives.dice_surrogate(lp, rewards, mask, gamma), log_probs, direction)
    mistakes = [
        (variant(discount=False), "the rewards were not discounted: weight r_t by γ^t (gamma ** torch.arange(H), "
                                  "reshaped to broadcast over the batch dims)"),
        (variant(use_mask=False), HINT_MASK.split(":")[0] + ": multiply each step by mask (rewards after the end are "
                                                           "not part of the episode)"),
        (variant(reduction="sum"), "reduction: sum over time, then the MEAN over episodes (last dim), not the sum"),
        (variant(reduction="mean"), "reduction: SUM over time (dim 0), then the mean over episodes (last dim)"),
        (variant(box="none"), "exp(Σ log π) without the stop-gradient is the probability of the trajectory, not 1: "
                              "use MagicBox(x) = exp(x − x.detach())"),
        (variant(box="per_step"), "MagicBox was applied to each step's log π_t alone: reward r_t depends on ALL the "
                                  "actions up to t, so it needs MagicBox(Σ_{t'≤t} log π_t') = torch.cumsum(log_probs, 0)"),
        (variant(box="future"), "the cumulative sum ran backwards: r_t depends on the actions BEFORE it (t' ≤ t), "
                                "torch.cumsum(log_probs, dim=0)"),
        (variant(box="first_order"), "the box x − x.detach() + 1 has the right value and gradient but no second "
                                     "derivative: DiCE needs MagicBox = exp(x − x.detach())"),
        ((reference[0], torch.zeros_like(log_probs), torch.zeros_like(log_probs)), HINT_DETACHED),
    ]
    _compare_derivatives(label, got, reference, mistakes, hints=(
        "value: mean over episodes of Σ_t m_t γ^t r_t (every MagicBox is 1)",
        "d/d log π_t = Σ_{k≥t} γ^k r_k m_k: each log-probability gets the discounted rewards that come after it",
        "build it as (magic_box(torch.cumsum(log_probs * mask, 0)) * γ^t * rewards * mask).sum(0).mean(-1)",
    ))
    _exact_hessian_check(f"{label}: exact expected Hessian on a tabular MDP",
                         lambda lp, r, m: dice_surrogate(lp, r, m, gamma), "dice_surrogate", seed, gamma, "dice")
    passed(f"DiCE surrogate (gamma={gamma}): value, gradient and curvature match; E[∇²L] = H1 + H2 + H12 + H12ᵀ = ∇²J")


# ----------------------------------------------------------------------------------------------
# Q3: the LVC surrogate


def _lvc_variant(log_probs: Tensor, advantages: Tensor, mask: Tensor, *, form: str = "ratio", use_mask: bool = True,
                 reduction: str = "episodes") -> Tensor:
    """The LVC surrogate with one deliberate change.

    ``form``: "ratio" (right), "naive" (log π · A), "exp" (π · A without stop-gradient), "first_order"
    (log π − stop_grad(log π) + 1), "cumulative" (DiCE-like: the ratio of the cumulative log-probabilities).
    """
    m = mask if use_mask else torch.ones_like(mask)
    lp = torch.where(m > 0, log_probs, torch.zeros_like(log_probs))
    term = {
        "ratio": lambda: reference_objectives.magic_box(lp),
        "naive": lambda: lp,
        "exp": lambda: torch.exp(lp),
        "first_order": lambda: lp - lp.detach() + 1.0,
        "cumulative": lambda: reference_objectives.magic_box(torch.cumsum(lp, 0)),
    }[form]()
    per_step = term * advantages.detach() * m
    return per_step.sum(0).mean(-1) if reduction == "episodes" else (per_step.sum(0).sum(-1) if reduction == "sum"
                                                                        else per_step.mean(0).mean(-1))


def check_lvc_surrogate(lvc_surrogate: Callable[..., Tensor], *, seed: int = 0, gamma: float = 0.9, horizon: int = 5,
                        batch: Sequence[int] = (2, 3)) -> None:
    """``lvc_surrogate(log_probs, advantages, mask)`` = mean_b Σ_t m_t [π_t / stop_grad(π_t)] A_t.

    Value, gradient and a Hessian-vector product with respect to ``log_probs`` are compared with
    ``rl.objectives.lvc_surrogate``; then its exact expected Hessian on a tabular MDP (with the
    reward-to-go from the start, discount ``gamma``, as advantages) must be H1 + H2.
    """
    data = _surrogate_data(seed + 100, horizon, batch)
    mask, advantages, log_probs, direction = data["mask"], data["advantages"], data["log_probs"], data["direction"]
    label = "lvc_surrogate(...)"
    got = _student_derivatives(lvc_surrogate, "lvc_surrogate", label, log_probs, direction,
                               (advantages.clone(), mask.clone()), like=mask.sum(0).mean(-1))

    def variant(**change: Any) -> tuple[Tensor, Tensor, Tensor]:
        return _derivatives(lambda lp: _lvc_variant(lp, advantages, mask, **change), log_probs, direction)

    reference = _derivatives(lambda lp: reference_objectives.lvc_surrogate(lp, advantages, mask), log_probs, direction)
    mistakes = [
        (variant(form="naive"), "this is the naive surrogate Σ log π_t A_t: same gradient, but no curvature from the "
                                "score. LVC multiplies A_t by the ratio π_t / stop_grad(π_t) = exp(log π_t − log π_t.detach())"),
        (variant(form="exp"), "π_t · A_t without the stop-gradient: divide by stop_grad(π_t), i.e. "
                              "exp(log_probs − log_probs.detach()), whose value is 1"),
        (variant(use_mask=False), HINT_MASK.split(":")[0] + ": multiply each step by mask"),
        (variant(reduction="sum"), "reduction: sum over time, then the MEAN over episodes (last dim), not the sum"),
        (variant(reduction="mean"), "reduction: SUM over time (dim 0), then the mean over episodes (last dim)"),
        (variant(form="cumulative"), "the ratio of step t must contain log π_t only: the cumulative sum belongs to "
                                     "DiCE; LVC drops exactly those cross-time terms to lower the variance"),
        (variant(form="first_order"), "log π − stop_grad(log π) + 1 has the right value and gradient but no curvature: "
                                      "use the ratio exp(log π − stop_grad(log π))"),
        ((reference[0], torch.zeros_like(log_probs), torch.zeros_like(log_probs)), HINT_DETACHED),
    ]
    _compare_derivatives(label, got, reference, mistakes, hints=(
        "value: mean over episodes of Σ_t m_t A_t (every ratio is 1 at the sampling policy)",
        "d/d log π_t = m_t A_t (the REINFORCE weights)",
        "build it as (torch.exp(log_probs - log_probs.detach()) * advantages * mask).sum(0).mean(-1)",
    ))
    _exact_hessian_check(f"{label}: exact expected Hessian on a tabular MDP",
                         lambda lp, r, m: lvc_surrogate(lp, reward_to_go_from_start(r, gamma), m), "lvc_surrogate",
                         seed, gamma, "lvc")
    passed("LVC surrogate: value, gradient and curvature match; E[∇²L] = H1 + H2 (the cross-time H12 terms dropped)")
