"""Every trajectory of a small tabular MDP, listed, and the exact expected return it gives.

With S states, A actions and horizon H there are N = (S A)^H trajectories tau = (s_0, a_0, ..., s_{H-1}, a_{H-1}).
Their probability under a tabular softmax policy pi_theta(a | s) = softmax(logits[s])_a factors as

    p_theta(tau) = rho(s_0) prod_{t<H-1} P(s_{t+1} | s_t, a_t)  *  prod_t pi_theta(a_t | s_t)
                   `------------- env_probs (N,) -------------'

so J(theta) = sum_tau p_theta(tau) sum_t gamma^t r_t is an exact, differentiable torch function of the logits.
:mod:`metalearn_edu.rl.exact` builds exact Hessians and meta-gradients on :class:`TrajectoryTable`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from metalearn_edu.envs.navigation import check_horizon
from metalearn_edu.envs.tabular import task_tensors

MAX_TRAJECTORIES = 1_000_000  # enumerate_trajectories refuses more than this


@dataclass(frozen=True)
class TrajectoryTable:
    """Every trajectory of a task, N = (S A)^H of them.

    states, actions: (N, H) long; rewards: (N, H); env_probs: (N,), rho(s_0) prod_t P(s_{t+1} | s_t, a_t)
    (the probability of the trajectory under a policy that picks every action sequence with prob. 1).
    """

    states: Tensor
    actions: Tensor
    rewards: Tensor
    env_probs: Tensor

    def policy_log_probs(self, logits: Tensor) -> Tensor:
        """log pi(a_t | s_t) along every trajectory: (N, H), differentiable in logits (S, A)."""
        return torch.log_softmax(logits, dim=-1)[self.states, self.actions]

    def probabilities(self, logits: Tensor) -> Tensor:
        """p(tau) = env_probs * prod_t pi(a_t | s_t): (N,), sums to 1."""
        return self.env_probs * torch.exp(self.policy_log_probs(logits).sum(dim=1))

    def discounted_returns(self, gamma: float) -> Tensor:
        """sum_t gamma^t r_t of every trajectory: (N,)."""
        discounts = gamma ** torch.arange(self.rewards.shape[1], dtype=self.rewards.dtype)  # (H,)
        return (self.rewards * discounts).sum(dim=1)

    def expected_return(self, logits: Tensor, gamma: float = 1.0) -> Tensor:
        """J(theta) = sum_tau p_theta(tau) sum_t gamma^t r_t: a differentiable scalar of logits (S, A)."""
        return (self.probabilities(logits) * self.discounted_returns(gamma)).sum()


def enumerate_trajectories(task: Mapping[str, Any], horizon: int) -> TrajectoryTable:
    """All (s_0, a_0, ..., s_{H-1}, a_{H-1}) of ``task`` with their rewards and environment probabilities."""
    horizon = check_horizon(horizon)
    transitions, rewards, initial = task_tensors(task)
    num_states, num_actions = rewards.shape
    count = (num_states * num_actions) ** horizon
    if count > MAX_TRAJECTORIES:
        raise ValueError(f"horizon={horizon} gives {count} trajectories, more than {MAX_TRAJECTORIES} to enumerate")
    pairs = torch.tensor(list(itertools.product(range(num_states * num_actions), repeat=horizon)))  # (N, H)
    states, actions = pairs // num_actions, pairs % num_actions  # (N, H)
    env_probs = initial[states[:, 0]]  # (N,)
    for t in range(horizon - 1):
        env_probs = env_probs * transitions[states[:, t], actions[:, t], states[:, t + 1]]
    return TrajectoryTable(states, actions, rewards[states, actions], env_probs)


def expected_return(task: Mapping[str, Any], logits: Tensor, horizon: int, gamma: float = 1.0) -> Tensor:
    """Exact J(theta) = sum_tau p_theta(tau) sum_t gamma^t r_t, a differentiable scalar of logits (S, A)."""
    return enumerate_trajectories(task, horizon).expected_return(logits, gamma)


__all__ = ["MAX_TRAJECTORIES", "TrajectoryTable", "enumerate_trajectories", "expected_return"]
