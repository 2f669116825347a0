"""Graded check of notebook 05's Q4, the differentiable inner policy-gradient step, and the tabular problem
that notebook 05's checks enumerate (both re-exported by ``checks.rl_meta_gradients``).

``policy_gradient_step(logits, batch, lr, surrogate)`` must return θ' = θ + α∇_θ L(θ; batch) and stay
differentiable in θ. The check compares the value with autograd and the Jacobian through a vector-Jacobian
product, (∂θ'/∂θ)ᵀ v = v + α∇²L v, and names the usual mistakes: a descent step, no step, a detached θ',
a step without ``create_graph`` (first order). Float64, 2 states × 2 actions × 3 steps; well under a second.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import diagnose
from metalearn_edu.course.checks.rl_data import ATOL, RTOL, call_student, expect_tensor
from metalearn_edu.course.feedback import CheckFailed, passed
from metalearn_edu.envs.tabular import TabularSoftmaxPolicy, sample_tabular_episodes, sample_tabular_tasks
from metalearn_edu.rl.batch import EpisodeBatch
from metalearn_edu.rl.exact import trajectory_surrogate

__all__ = ["HORIZON", "check_policy_gradient_step", "tabular_problem"]

HORIZON = 3  # steps of the tabular problem (2 states x 2 actions: 4^3 = 64 trajectories)


def tabular_problem(seed: int = 0, num_states: int = 2) -> tuple[dict[str, np.ndarray], Tensor]:
    """A seeded random tabular task (2 actions) and float64 logits (S, A) where every Hessian term is sizeable."""
    task = sample_tabular_tasks(1, num_states, 2, np.random.default_rng(seed))[0]
    generator = torch.Generator().manual_seed(seed)
    logits = 0.5 * torch.randn(num_states, 2, generator=generator, dtype=torch.float64)
    return task, logits


def _tabular_log_probs(logits: Tensor, batch: EpisodeBatch) -> Tensor:
    return TabularSoftmaxPolicy(*logits.shape).distribution({"logits": logits}, batch.observations).log_prob(batch.actions)


def _reference_step(logits: Tensor, batch: EpisodeBatch, lr: float, surrogate: Callable[..., Tensor], *,
                    create_graph: bool = True, sign: float = 1.0) -> tuple[Tensor, Tensor]:
    """(θ', θ leaf) with θ' = θ + sign · lr ∇L(θ), second order iff create_graph."""
    theta = logits.detach().clone().requires_grad_(True)
    objective = surrogate(_tabular_log_probs(theta, batch), batch.rewards, batch.mask).sum()
    (grad,) = torch.autograd.grad(objective, theta, create_graph=create_graph)
    return theta + sign * lr * grad, theta


def check_policy_gradient_step(policy_gradient_step: Callable[..., Tensor], *, seed: int = 0, lr: float = 0.5,
                               estimator: str = "dice", gamma: float = 1.0, episodes: int = 16) -> None:
    """``policy_gradient_step(logits, batch, lr, surrogate)`` = θ + lr ∇_θ L(θ; batch), differentiable in θ.

    ``surrogate`` is ``rl.exact.trajectory_surrogate(estimator, gamma)``; the batch holds one task's
    episodes of the tabular softmax policy. The value is compared with autograd, and the Jacobian with
    a vector-Jacobian product: (∂θ'/∂θ)ᵀ v = v + lr ∇²L v (the step keeps its second-order term).
    """
    task, logits = tabular_problem(seed)
    generator = torch.Generator().manual_seed(seed + 7)
    batch = sample_tabular_episodes([task], logits, HORIZON, episodes, generator)
    surrogate = trajectory_surrogate(estimator, gamma)
    direction = torch.randn(logits.shape, generator=generator, dtype=logits.dtype)
    label = f"policy_gradient_step(..., lr={lr}) with the {estimator} surrogate"

    theta = logits.detach().clone().requires_grad_(True)
    out = call_student(policy_gradient_step, "policy_gradient_step", theta, batch, lr, surrogate)
    expect_tensor(label, out, logits, hint="return the adapted logits θ' with the shape of logits, (S, A)")
    if not torch.equal(theta.detach(), logits):
        raise CheckFailed("logits after the call", expected="unchanged (θ is needed again for the outer gradient)",
                          got="modified in place", hint="return a new tensor, logits + lr * grad")
    adapted, reference_theta = _reference_step(logits, batch, lr, surrogate)
    diagnose(f"{label}: θ'", out.detach(), adapted.detach(), [
        (_reference_step(logits, batch, lr, surrogate, sign=-1.0)[0].detach(),
         "the step went downhill: in RL the surrogate is a return to MAXIMISE, so the inner step is gradient ASCENT, "
         "θ' = θ + α∇L(θ)"),
        (logits, "θ' equals θ: the gradient step was not applied"),
    ], atol=ATOL, rtol=RTOL, hint="log_probs = log_softmax(logits)[states, actions] (or TabularSoftmaxPolicy(...)"
                                  ".distribution({'logits': logits}, batch.observations).log_prob(batch.actions)); "
                                  "L = surrogate(log_probs, batch.rewards, batch.mask).sum(); θ' = logits + lr * grad")
    if not out.requires_grad:
        raise CheckFailed(f"{label}: θ' connected to θ", expected="a tensor that autograd can trace back to logits",
                          got="a tensor with requires_grad=False (detached)",
                          hint="do not detach θ' (no .detach(), .data or torch.no_grad()): the outer objective must "
                               "differentiate through the inner step")
    (vjp,) = torch.autograd.grad((out * direction).sum(), theta, allow_unused=True)
    vjp = torch.zeros_like(logits) if vjp is None else vjp
    (reference_vjp,) = torch.autograd.grad((adapted * direction).sum(), reference_theta)
    diagnose(f"{label}: (∂θ'/∂θ)ᵀ v", vjp, reference_vjp, [
        (direction, "∂θ'/∂θ is the identity: the gradient was treated as a constant. Pass create_graph=True to "
                    "torch.autograd.grad so that θ' remembers how ∇L depends on θ (otherwise MAML silently becomes "
                    "first order and the estimator's Hessian never matters)"),
    ], atol=ATOL, rtol=RTOL, hint="θ' = θ + lr * g with g = torch.autograd.grad(L, logits, create_graph=True)[0]")
    passed(f"inner policy-gradient step (ascent, {estimator} surrogate) and its Jacobian I + α∇²L match")
