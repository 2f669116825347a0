"""Exact expectations, Hessians and meta-gradients of a tabular softmax policy, by enumeration.

On a task small enough to list all N trajectories (:mod:`metalearn_edu.envs.tabular_trajectories`), the objective

    J(theta) = sum_tau p_theta(tau) R(tau),     R(tau) = sum_t gamma^t r_t

is a differentiable function of the logits theta (S, A), and so are its gradient, its Hessian and the
MAML meta-gradient d/dtheta J(theta + alpha grad J(theta)). The Hessian splits into four terms
(Rothfuss et al. 2019, ProMP, appendix), with g_t = grad log pi(a_t | s_t), the reward-to-go from the
episode start G_t = sum_{k >= t} gamma^k r_k and q_t(s, a) = E[G_t | s_t = s, a_t = a] (which depends on
theta through the policy after step t):

    H1  = E[ sum_t g_t g_t^T G_t ]                  (per-step score outer product)
    H2  = E[ sum_t grad^2 log pi(a_t | s_t) G_t ]   (curvature of log pi)
    H12 = E[ sum_t g_t (grad_theta q_t(s_t, a_t))^T ] (how the future returns move with theta)
    grad^2 J = H1 + H2 + H12 + H12^T

Derivation: grad J = E[sum_t g_t q_t]; differentiating the expectation brings the score of the whole
trajectory, whose steps t' > t average out and whose steps t' < t give H12^T; differentiating g_t gives
H2 and differentiating q_t gives H12; the remaining t' = t term is H1.

The expected Hessian of an estimator's surrogate, sum_tau p(tau) grad^2 L(theta; tau), is computed
here exactly too, so that the estimators can be compared with these terms with no sampling noise.
Matrices are over the flattened logits, P = S * A; everything runs in the dtype of the logits
(float64 recommended).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from metalearn_edu.envs.tabular import task_tensors
from metalearn_edu.envs.tabular_trajectories import TrajectoryTable, enumerate_trajectories
from metalearn_edu.rl.advantages import validate_unit_interval
from metalearn_edu.rl.objectives import dice_surrogate, loaded_dice_surrogate, lvc_surrogate, pg_surrogate

Surrogate = Callable[[Tensor, Tensor, Tensor], Tensor]


def reward_to_go_from_start(rewards: Tensor, gamma: float) -> Tensor:
    """G_t = sum_{k >= t} gamma^k r_k (discounted from the episode start): (H, ...) -> (H, ...).

    With these weights the score-function estimate sum_t g_t G_t is unbiased for grad J when gamma < 1.
    """
    gamma = validate_unit_interval(gamma, "gamma")
    horizon = rewards.shape[0]
    discounts = gamma ** torch.arange(horizon, dtype=rewards.dtype, device=rewards.device)
    weighted = rewards * discounts.view(horizon, *([1] * (rewards.dim() - 1)))
    return weighted.flip(0).cumsum(0).flip(0)


def trajectory_surrogate(estimator: str, gamma: float, lam: float = 1.0) -> Surrogate:
    """The surrogate L(log_probs, rewards, mask) -> (T,) of ``estimator`` ("naive", "lvc", "dice", "loaded-dice"),
    weighting naive, LVC and Loaded DiCE with :func:`reward_to_go_from_start` so all of them target grad J;
    ``lam`` is Loaded DiCE's discount of the earlier actions' scores."""
    gamma = validate_unit_interval(gamma, "gamma")
    if estimator == "naive":
        return lambda lp, r, m: pg_surrogate(lp, reward_to_go_from_start(r, gamma), m)
    if estimator == "lvc":
        return lambda lp, r, m: lvc_surrogate(lp, reward_to_go_from_start(r, gamma), m)
    if estimator == "dice":
        return lambda lp, r, m: dice_surrogate(lp, r, m, gamma)
    if estimator == "loaded-dice":
        return lambda lp, r, m: loaded_dice_surrogate(lp, reward_to_go_from_start(r, gamma), m, lam)
    raise ValueError(f"estimator must be one of naive, lvc, dice, loaded-dice, got {estimator!r}")


def state_action_values(task: Mapping[str, Any], logits: Tensor, horizon: int, gamma: float = 1.0) -> Tensor:
    """q_t(s, a) = E[sum_{k >= t} gamma^k r_k | s_t = s, a_t = a]: (H, S, A), differentiable in logits.

    Backward recursion: q_{H-1} = gamma^(H-1) R;  q_t = gamma^t R + sum_s' P[., ., s'] sum_a' pi(a'|s') q_{t+1}(s', a').
    """
    gamma = validate_unit_interval(gamma, "gamma")
    transitions, rewards, _ = task_tensors(task, logits.dtype)
    policy = torch.softmax(logits, dim=-1)  # (S, A)
    values = [gamma ** (horizon - 1) * rewards]
    for t in range(horizon - 2, -1, -1):
        next_state_values = (policy * values[0]).sum(-1)  # (S,) V_{t+1}(s')
        values.insert(0, gamma**t * rewards + transitions @ next_state_values)  # (S, A)
    return torch.stack(values)  # (H, S, A)


def exact_hessian(task: Mapping[str, Any], logits: Tensor, horizon: int, gamma: float = 1.0) -> Tensor:
    """grad^2 J by autograd on the enumerated expectation: (P, P)."""
    table = enumerate_trajectories(task, horizon)
    shape = logits.shape
    return torch.autograd.functional.hessian(
        lambda flat: table.expected_return(flat.view(shape), gamma), logits.detach().flatten()
    )


@dataclass(frozen=True)
class HessianTerms:
    """The terms of grad^2 J (module docstring), each (P, P)."""

    score_outer: Tensor  # H1
    log_prob_curvature: Tensor  # H2
    mixed: Tensor  # H12

    def total(self) -> Tensor:
        """H1 + H2 + H12 + H12^T = grad^2 J."""
        return self.score_outer + self.log_prob_curvature + self.mixed + self.mixed.T


def hessian_terms(task: Mapping[str, Any], logits: Tensor, horizon: int, gamma: float = 1.0) -> HessianTerms:
    """H1, H2 and H12 of the module docstring, as exact probability-weighted sums over trajectories."""
    table = enumerate_trajectories(task, horizon)
    shape, flat = logits.shape, logits.detach().flatten()
    probs = table.probabilities(flat.view(shape))  # (N,)
    step_log_probs = lambda theta: table.policy_log_probs(theta.view(shape))  # (P,) -> (N, H)
    scores = torch.func.jacrev(step_log_probs)(flat)  # (N, H, P)
    curvatures = torch.func.jacrev(torch.func.jacrev(step_log_probs))(flat)  # (N, H, P, P)
    reward_to_go = reward_to_go_from_start(table.rewards.T, gamma).T  # (N, H)
    q_jacobian = torch.func.jacrev(lambda theta: state_action_values(task, theta.view(shape), horizon, gamma))(flat)
    time = torch.arange(table.states.shape[1])
    q_scores = q_jacobian[time, table.states, table.actions]  # (N, H, P) grad q_t(s_t, a_t)
    return HessianTerms(
        score_outer=torch.einsum("n,nt,nti,ntj->ij", probs, reward_to_go, scores, scores),
        log_prob_curvature=torch.einsum("n,nt,ntij->ij", probs, reward_to_go, curvatures),
        mixed=torch.einsum("n,nti,ntj->ij", probs, scores, q_scores),
    )


def _expected_surrogate(surrogate: Surrogate, table: TrajectoryTable, shape: torch.Size) -> Callable[[Tensor], Tensor]:
    """theta -> sum_tau p_theta(tau) (fixed) L(theta; tau): each trajectory is its own task, B = 1."""

    def expectation(flat: Tensor) -> Tensor:
        logits = flat.view(shape)
        weights = table.probabilities(logits).detach()  # (N,), the sampling distribution: not differentiated
        log_probs = table.policy_log_probs(logits).T.unsqueeze(-1)  # (H, N, 1)
        rewards = table.rewards.T.unsqueeze(-1)  # (H, N, 1)
        per_trajectory = surrogate(log_probs, rewards, torch.ones_like(rewards))  # (N,)
        return (weights * per_trajectory).sum()

    return expectation


def expected_surrogate_gradient(surrogate: Surrogate, task: Mapping[str, Any], logits: Tensor, horizon: int) -> Tensor:
    """sum_tau p(tau) grad L(theta; tau): the mean of the estimator's gradient, (P,)."""
    table = enumerate_trajectories(task, horizon)
    flat = logits.detach().flatten().requires_grad_(True)
    (grad,) = torch.autograd.grad(_expected_surrogate(surrogate, table, logits.shape)(flat), flat)
    return grad


def expected_surrogate_hessian(surrogate: Surrogate, task: Mapping[str, Any], logits: Tensor, horizon: int) -> Tensor:
    """sum_tau p(tau) grad^2 L(theta; tau): the mean of the estimator's Hessian, (P, P).

    The weights p(tau) are constants, so this is the Hessian of the weighted sum (linearity).
    """
    table = enumerate_trajectories(task, horizon)
    expectation = _expected_surrogate(surrogate, table, logits.shape)
    return torch.autograd.functional.hessian(expectation, logits.detach().flatten())


def exact_meta_gradient(
    task: Mapping[str, Any], logits: Tensor, horizon: int, alpha: float, gamma: float = 1.0
) -> Tensor:
    """d/dtheta J(theta + alpha grad J(theta)) by autograd through the exact inner step: (S, A)."""
    table = enumerate_trajectories(task, horizon)
    theta = logits.detach().clone().requires_grad_(True)
    (inner_grad,) = torch.autograd.grad(table.expected_return(theta, gamma), theta, create_graph=True)
    (meta_grad,) = torch.autograd.grad(table.expected_return(theta + alpha * inner_grad, gamma), theta)
    return meta_grad


def meta_gradient_with_curvature(
    task: Mapping[str, Any], logits: Tensor, horizon: int, alpha: float, curvature: Tensor, gamma: float = 1.0
) -> Tensor:
    """(I + alpha C)^T grad J(theta'), theta' = theta + alpha grad J(theta): (S, A).

    The limit of a Monte-Carlo meta-gradient whose inner step has the exact gradient on average and
    expected Hessian C (P, P); C = grad^2 J gives :func:`exact_meta_gradient`.
    """
    table = enumerate_trajectories(task, horizon)
    theta = logits.detach().clone().requires_grad_(True)
    (inner_grad,) = torch.autograd.grad(table.expected_return(theta, gamma), theta)
    adapted = (theta.detach() + alpha * inner_grad).requires_grad_(True)
    (outer_grad,) = torch.autograd.grad(table.expected_return(adapted, gamma), adapted)
    eye = torch.eye(curvature.shape[0], dtype=curvature.dtype)
    return ((eye + alpha * curvature).T @ outer_grad.flatten()).view(logits.shape)
