"""The one data structure meta-RL code passes around: a time-major batch of episodes.

Shapes use H = horizon (time steps), T = number of tasks, B = episodes per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class EpisodeBatch:
    """B episodes for each of T tasks, stored time-major.

    Attributes:
        observations: (H, T, B, obs_dim) float; for discrete observations (H, T, B) long.
        actions: (H, T, B, act_dim) float for continuous actions, (H, T, B) long for discrete ones.
        rewards: (H, T, B) float; zero after an episode has ended.
        mask: (H, T, B) float, 1.0 for steps that happened (up to and including the terminal step),
            0.0 for padding after the episode ended.
        tasks: the T task descriptions (as returned by ``env.unwrapped.sample_tasks``).
        infos: optional extras (for example the log-probabilities the actions were sampled with).
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    tasks: list[Any] = field(default_factory=list)
    infos: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rewards.dim() != 3:
            raise ValueError(f"rewards must have shape (H, T, B), got {tuple(self.rewards.shape)}")
        head = tuple(self.rewards.shape)
        for name in ("observations", "actions", "mask"):
            shape = tuple(getattr(self, name).shape)
            if shape[:3] != head:
                raise ValueError(f"{name} must start with (H, T, B) = {head}, got {shape}")

    @property
    def horizon(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[1]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[2]

    def task(self, i: int) -> "EpisodeBatch":
        """The episodes of task ``i`` alone, as a batch with T = 1."""
        sl = slice(i, i + 1)
        return replace(
            self,
            observations=self.observations[:, sl],
            actions=self.actions[:, sl],
            rewards=self.rewards[:, sl],
            mask=self.mask[:, sl],
            tasks=self.tasks[i : i + 1],
            infos={k: v[:, sl] for k, v in self.infos.items()},
        )

    def to(self, device: torch.device | str) -> "EpisodeBatch":
        return replace(
            self,
            observations=self.observations.to(device),
            actions=self.actions.to(device),
            rewards=self.rewards.to(device),
            mask=self.mask.to(device),
            infos={k: v.to(device) for k, v in self.infos.items()},
        )

    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode: (T, B)."""
        return (self.rewards * self.mask).sum(dim=0)
