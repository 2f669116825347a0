"""Returns, generalised advantage estimation and the linear feature baseline.

Every function here is time-major: dimension 0 is time (H steps) and the mask marks the steps that
happened (1.0) and the padding after an episode ended (0.0). The usual layout is (H, T, B): H steps,
T tasks, B episodes per task (see :class:`metalearn_edu.rl.batch.EpisodeBatch`). Outputs are zero on
padded steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metalearn_edu.rl.batch import EpisodeBatch


def validate_unit_interval(value: float, name: str) -> float:
    """Check that a discount-like coefficient ``name`` is a real number in [0, 1] and return it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def validate_time_major(mask: Tensor, **tensors: Tensor) -> None:
    """Check that every tensor in ``tensors`` has the shape of ``mask`` and that it has a time dim."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() < 1:
        raise ValueError("mask must be time-major with at least one dimension, got a scalar")
    for name, tensor in tensors.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.shape != mask.shape:
            raise ValueError(
                f"{name} must have the shape of mask {tuple(mask.shape)}, got {tuple(tensor.shape)}"
            )


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go of every step: G_t = sum_{k >= t} gamma^(k - t) r_k m_k.

    Computed backwards with G_t = m_t (r_t + gamma G_{t+1}) and G_H = 0, so a padded step has
    G_t = 0 and nothing flows back across the end of an episode.

    Args:
        rewards: (H, ...) rewards, for example (H, T, B).
        mask: (H, ...) same shape, 1.0 on steps that happened.
        gamma: discount in [0, 1].

    Returns:
        (H, ...) the returns, zero on padded steps.
    """
    gamma = validate_unit_interval(gamma, "gamma")
    validate_time_major(mask, rewards=rewards)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])  # (...,)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = mask[t] * (rewards[t] + gamma * running)
        returns[t] = running
    return returns


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimation (Schulman et al. 2016).

    delta_t = r_t + gamma * m_{t+1} V_{t+1} - V_t           (V_H = 0, m_H = 0)
    A_t     = sum_{k >= 0} (gamma lam)^k delta_{t+k}       = m_t (delta_t + gamma lam A_{t+1})

    The value after the last valid step of an episode is bootstrapped with 0 (whether the episode
    terminated or was cut at the horizon), as in MAML-RL. With lam = 1 the advantage is the
    reward-to-go minus the value, G_t - V_t; with lam = 0 it is the one-step TD error delta_t.

    Args:
        rewards: (H, ...) rewards, for example (H, T, B).
        values: (H, ...) V(s_t), the value estimate of the state each step *starts* in.
        mask: (H, ...) 1.0 on steps that happened.
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1].

    Returns:
        (H, ...) advantages, zero on padded steps.
    """
    gamma = validate_unit_interval(gamma, "gamma")
    lam = validate_unit_interval(lam, "lam")
    validate_time_major(mask, rewards=rewards, values=values)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(values[0])  # (...,) masked V_{t+1}
    running = torch.zeros_like(rewards[0])  # (...,) A_{t+1}
    for t in range(rewards.shape[0] - 1, -1, -1):
        delta = rewards[t] + gamma * next_value - values[t]
        running = mask[t] * (delta + gamma * lam * running)
        advantages[t] = running
        next_value = mask[t] * values[t]
    return advantages


def normalize_advantages(advantages: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Standardise advantages per task over the valid steps: (A - mean) / (std + eps).

    For (H, T, B) inputs the mean and (population) standard deviation are taken over the valid
    steps of each task, dims (0, 2); for inputs of any other rank over all valid steps.

    Returns:
        same shape as ``advantages``, zero on padded steps.
    """
    validate_time_major(mask, advantages=advantages)
    dims = (0, 2) if advantages.dim() == 3 else tuple(range(advantages.dim()))
    count = mask.sum(dim=dims, keepdim=True).clamp_min(1.0)
    mean = (advantages * mask).sum(dim=dims, keepdim=True) / count
    var = (((advantages - mean) * mask) ** 2).sum(dim=dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + eps) * mask


def crowd_spread_advantages(observations: Tensor, mask: Tensor, gamma: float, radius: float = 0.5) -> Tensor:
    """Advantages of an intrinsic reward that pays an episode for leaving its task's crowd (an exploration bonus).

        r_t = min(||s_t - sbar_t||, radius),   sbar_t = the mean of s_t over the task's episodes still running at t
        G_t = sum_{k >= t} gamma^(k - t) r_k       (within the episode, :func:`discounted_returns`)
        A_t = G_t - mean_b G_t over the task's episodes running at t, then standardised per task

    Args:
        observations: (H, T, B, obs_dim) continuous observations (positions, for 2D navigation).
        mask: (H, T, B), 1.0 on steps that happened.
        gamma: discount in [0, 1].
        radius: the reward stops growing at this distance from the crowd's mean.

    Returns:
        (H, T, B) standardised advantages, zero on padded steps.
    """
    if not torch.is_floating_point(observations) or observations.dim() != 4:
        raise ValueError(f"spread_bonus needs continuous (H, T, B, obs_dim) observations, got {observations.dtype} of shape {tuple(observations.shape)}")
    if not radius > 0:
        raise ValueError(f"radius must be a positive number, got {radius!r}")
    if observations.shape[:3] != mask.shape:
        raise ValueError(f"observations must be (H, T, B, obs_dim) with (H, T, B) the mask's shape {tuple(mask.shape)}, got {tuple(observations.shape)}")
    count = mask.sum(dim=2, keepdim=True).clamp_min(1.0)  # (H, T, 1) episodes running at t
    centre = (observations * mask.unsqueeze(-1)).sum(dim=2, keepdim=True) / count.unsqueeze(-1)  # (H, T, 1, obs_dim)
    rewards = (observations - centre).norm(dim=-1).clamp_max(radius) * mask  # (H, T, B)
    returns = discounted_returns(rewards, mask, gamma)  # (H, T, B)
    advantages = (returns - returns.sum(dim=2, keepdim=True) / count) * mask
    return normalize_advantages(advantages, mask)


class LinearFeatureBaseline:
    """The linear feature baseline of Duan et al. 2016, fitted per task to the returns.

    Features of a step at time t with observation o (flattened; one-hot for discrete observations):
    phi = [o, o^2, t/100, (t/100)^2, (t/100)^3, 1]. Per task, the weights solve the ridge problem
    w = argmin_w sum_valid (phi^T w - G)^2 + reg ||w||^2, i.e. (Phi^T Phi + reg I) w = Phi^T G.
    If that solve is not finite, reg is multiplied by 10 (up to 5 tries).

    Args:
        reg_coeff: the ridge coefficient reg > 0.
        num_observations: the number of discrete observations (needed to one-hot long observations).
    """

    def __init__(self, reg_coeff: float = 1e-5, num_observations: int | None = None) -> None:
        if isinstance(reg_coeff, bool) or not isinstance(reg_coeff, (int, float)) or reg_coeff <= 0:
            raise ValueError(f"reg_coeff must be a positive float, got {reg_coeff!r}")
        if num_observations is not None and (
            isinstance(num_observations, bool) or not isinstance(num_observations, int) or num_observations < 1
        ):
            raise ValueError(f"num_observations must be a positive int or None, got {num_observations!r}")
        self.reg_coeff = float(reg_coeff)
        self.num_observations = num_observations
        self.weights: Tensor | None = None  # (T, F) after fit

    def features(self, batch: EpisodeBatch) -> Tensor:
        """The feature tensor phi of every step: (H, T, B, F), zero on padded steps."""
        obs = batch.observations
        if not torch.is_floating_point(obs):
            if self.num_observations is None:
                raise ValueError(
                    "num_observations must be given to LinearFeatureBaseline for discrete (long) observations"
                )
            obs = torch.nn.functional.one_hot(obs.long(), self.num_observations).to(batch.rewards.dtype)
        elif obs.dim() == 3:
            obs = obs.unsqueeze(-1)  # (H, T, B, 1) scalar observations
        obs = obs.flatten(start_dim=3).to(batch.rewards.dtype)  # (H, T, B, D)
        horizon = obs.shape[0]
        time = torch.arange(horizon, dtype=obs.dtype, device=obs.device) / 100.0  # (H,)
        time = time.view(horizon, 1, 1, 1).expand(*obs.shape[:3], 1)  # (H, T, B, 1)
        ones = torch.ones_like(time)
        phi = torch.cat([obs, obs**2, time, time**2, time**3, ones], dim=-1)  # (H, T, B, F)
        return phi * batch.mask.unsqueeze(-1)

    def fit(self, batch: EpisodeBatch, returns: Tensor) -> "LinearFeatureBaseline":
        """Fit one weight vector per task to ``returns`` (H, T, B) on the valid steps; returns self."""
        validate_time_major(batch.mask, returns=returns)
        phi = self.features(batch).detach()  # (H, T, B, F)
        targets = (returns.detach() * batch.mask).to(phi.dtype)  # (H, T, B)
        phi_t = phi.permute(1, 0, 2, 3).flatten(1, 2)  # (T, H*B, F)
        targets_t = targets.permute(1, 0, 2).flatten(1, 2)  # (T, H*B)
        # solved in float64: in float32 reg = 1e-5 is lost next to Gram entries of order H*B, and near-identical
        # episodes (a nearly deterministic policy) make the system exactly singular
        phi_t, targets_t = phi_t.double(), targets_t.double()
        gram = phi_t.transpose(1, 2) @ phi_t  # (T, F, F)
        rhs = (phi_t.transpose(1, 2) @ targets_t.unsqueeze(-1)).squeeze(-1)  # (T, F)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        reg = self.reg_coeff
        for _ in range(5):
            weights, info = torch.linalg.solve_ex(gram + reg * eye, rhs)  # (T, F); info != 0 when singular
            if not info.any() and torch.isfinite(weights).all():
                break
            reg *= 10.0
        self.weights = weights.to(phi.dtype)
        return self

    def predict(self, batch: EpisodeBatch) -> Tensor:
        """Baseline values V(s_t) = phi^T w_task: (H, T, B), zero on padded steps (no gradient)."""
        if self.weights is None:
            raise ValueError("LinearFeatureBaseline.predict was called before fit(batch, returns)")
        phi = self.features(batch).detach()  # (H, T, B, F)
        if self.weights.shape[0] != phi.shape[1] or self.weights.shape[1] != phi.shape[-1]:
            raise ValueError(
                f"batch has {phi.shape[1]} tasks and {phi.shape[-1]} features but the baseline was fitted "
                f"with {self.weights.shape[0]} tasks and {self.weights.shape[1]} features"
            )
        return torch.einsum("htbf,tf->htb", phi, self.weights) * batch.mask
