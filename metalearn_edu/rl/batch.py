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
        return self.select(slice(i, i + 1))

    def select(self, tasks: slice) -> "EpisodeBatch":
        """The episodes of the tasks in the slice ``tasks`` (views, not copies): (H, T, B, ...) -> (H, T', B, ...)."""
        return replace(
            self,
            observations=self.observations[:, tasks],
            actions=self.actions[:, tasks],
            rewards=self.rewards[:, tasks],
            mask=self.mask[:, tasks],
            tasks=self.tasks[tasks],
            infos={k: v[:, tasks] for k, v in self.infos.items()},
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "EpisodeBatch":
        """The same batch on ``device``, its floating-point tensors in ``dtype`` (integer ones, e.g. discrete actions, kept)."""

        def convert(tensor: Tensor) -> Tensor:
            return tensor.to(device=device, dtype=dtype if dtype is not None and tensor.is_floating_point() else None)

        return replace(
            self,
            observations=convert(self.observations),
            actions=convert(self.actions),
            rewards=convert(self.rewards),
            mask=convert(self.mask),
            infos={k: convert(v) for k, v in self.infos.items()},
        )

    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode: (T, B)."""
        return (self.rewards * self.mask).sum(dim=0)

    def last_steps(self) -> Tensor:
        """The index of each episode's last valid step: (T, B) long (0 for an episode masked out whole)."""
        return (self.mask.sum(dim=0).long() - 1).clamp_min(0)

    def last_observations(self) -> Tensor:
        """Each episode's observation at its last valid step: (H, T, B, obs_dim) -> (T, B, obs_dim), as float."""
        last = self.last_steps()  # (T, B)
        obs = self.observations.float()
        index = last.view(1, *last.shape, 1).expand(1, *last.shape, obs.shape[-1])
        return obs.gather(0, index).squeeze(0)

    def episode_weights(self) -> Tensor:
        """1.0 for each episode with at least one step, 0.0 for an episode masked out whole: (T, B)."""
        return (self.mask.sum(dim=0) > 0).to(self.rewards.dtype)

    def mean_over_episodes(self, values: Tensor) -> Tensor:
        """Mean of per-episode ``values`` (T, B) over each task's episodes that happened: (T,)."""
        weights = self.episode_weights()
        return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def first_episodes_reaching(self, steps: int) -> "EpisodeBatch":
        """Keep, per task, the first episodes whose lengths sum to at least ``steps``; mask the later ones out.

        This is rllab's ``batch_size`` in environment steps with whole paths (Finn et al.'s test scripts):
        episodes are taken in order until the count of steps reaches ``steps``, the last one whole. The
        shapes stay (H, T, B); a task whose B episodes fall short keeps them all.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        lengths = self.mask.sum(dim=0)  # (T, B)
        before = lengths.cumsum(dim=1) - lengths  # (T, B) steps of the episodes before this one
        keep = (before < steps).to(self.mask.dtype).unsqueeze(0)  # (1, T, B)
        return replace(self, rewards=self.rewards * keep, mask=self.mask * keep)


def concat_episodes(batches: list[EpisodeBatch]) -> EpisodeBatch:
    """The episodes of several batches of the same tasks and horizon, side by side: B = sum of their B."""
    if not batches:
        raise ValueError("batches must hold at least one EpisodeBatch")
    first = batches[0]
    for other in batches[1:]:
        if other.rewards.shape[:2] != first.rewards.shape[:2] or len(other.tasks) != len(first.tasks):
            raise ValueError(f"batches must share (H, T) = {tuple(first.rewards.shape[:2])}, got {tuple(other.rewards.shape[:2])}")

    def cat(name: str) -> Tensor:
        return torch.cat([getattr(b, name) for b in batches], dim=2)

    infos = {key: torch.cat([b.infos[key] for b in batches], dim=2) for key in first.infos if all(key in b.infos for b in batches)}
    return EpisodeBatch(observations=cat("observations"), actions=cat("actions"), rewards=cat("rewards"), mask=cat("mask"),
                        tasks=first.tasks, infos=infos)
