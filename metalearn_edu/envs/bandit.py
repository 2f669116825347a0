"""Bernoulli multi-armed bandits as meta-RL tasks, as a gymnasium env and as a batched tensor env.

Framing. A task is a vector of K arm probabilities p ~ U[0, 1]^K. An episode is ``horizon`` pulls
(10 by default) of the same bandit: at each step the agent picks an arm a in {0, ..., K-1} and receives
r ~ Bernoulli(p_a). The observation is constant (a float32 vector ``[1.0]``), so a feed-forward policy is
simply a distribution over arms: before adaptation it should be close to uniform, and one policy-gradient
step on a few episodes of a new bandit should shift its mass towards that bandit's best arms. Episodes
never terminate; they are truncated after ``horizon`` pulls. ``info`` carries ``p_a`` (the expected
reward of the pulled arm) and the regret ``max_k p_k - p_a``, which are cheaper to average than rewards.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from metalearn_edu.envs.navigation import as_rng, check_horizon

DEFAULT_HORIZON = 10
OBSERVATION = np.ones(1, dtype=np.float32)  # the constant observation


def check_num_arms(num_arms: int) -> int:
    if isinstance(num_arms, bool) or not isinstance(num_arms, (int, np.integer)) or num_arms < 2:
        raise ValueError(f"num_arms must be an integer >= 2, got {num_arms!r}")
    return int(num_arms)


def probs_from_task(task: Any, num_arms: int) -> np.ndarray:
    """The arm probabilities of a bandit ``task`` ``{"probs": (K,)}`` as float64, validated."""
    if not isinstance(task, dict) or "probs" not in task:
        raise ValueError(f"task must be a dict with a 'probs' entry of shape ({num_arms},), got {task!r}")
    probs = np.asarray(task["probs"], dtype=np.float64)
    if probs.shape != (num_arms,) or not np.all((probs >= 0.0) & (probs <= 1.0)):
        raise ValueError(f"task['probs'] must be {num_arms} probabilities in [0, 1], got {task['probs']!r}")
    return probs


class BernoulliBanditEnv(gym.Env):
    """K-armed Bernoulli bandit; one task = one vector of arm probabilities.

    Tasks: ``env.unwrapped.sample_tasks(n, rng=None)`` returns ``n`` dicts ``{"probs": np.ndarray (K,)}``
    with probabilities U[0, 1]; ``rng=None`` uses the env's own ``np_random`` (seeded by ``reset(seed=...)``),
    an int or a ``numpy.random.Generator`` samples independently of the env. ``env.unwrapped.set_task(task)``
    fixes the bandit. Rewards are drawn from the env's ``np_random``, so a seeded reset makes episodes
    reproducible.

    Args:
        num_arms: K.
        horizon: pulls per episode.
        task: the initial task; ``None`` means evenly spaced probabilities 0, 1/(K-1), ..., 1.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_arms: int = 5, horizon: int = DEFAULT_HORIZON, task: dict[str, Any] | None = None) -> None:
        self.num_arms = check_num_arms(num_arms)
        self.horizon = check_horizon(horizon)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.num_arms)
        default = {"probs": np.linspace(0.0, 1.0, self.num_arms)}
        self._probs = probs_from_task(task if task is not None else default, self.num_arms)
        self._steps = 0

    def sample_tasks(self, n: int, rng: np.random.Generator | int | None = None) -> list[dict[str, np.ndarray]]:
        """``n`` tasks ``{"probs": p}``, p ~ U[0, 1]^K, from ``rng`` (default: the env's ``np_random``)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer (number of tasks), got {n!r}")
        probs = as_rng(rng, self.np_random).uniform(0.0, 1.0, size=(int(n), self.num_arms))
        return [{"probs": p} for p in probs]

    def set_task(self, task: dict[str, Any]) -> None:
        self._probs = probs_from_task(task, self.num_arms)

    def get_task(self) -> dict[str, np.ndarray]:
        return {"probs": self._probs.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode of pulls. ``options={"task": task}`` sets the task first."""
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        self._steps = 0
        return OBSERVATION.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        arm = int(action)
        if not 0 <= arm < self.num_arms:
            raise ValueError(f"action must be an arm index in [0, {self.num_arms - 1}], got {action!r}")
        p_arm = float(self._probs[arm])
        reward = float(self.np_random.random() < p_arm)
        self._steps += 1
        info = {"expected_reward": p_arm, "regret": float(self._probs.max()) - p_arm}
        return OBSERVATION.copy(), reward, False, self._steps >= self.horizon, info


class BatchedBernoulliBandit:
    """T bandits x B episodes pulled at once with torch tensors (the sampler's fast path for bandits).

    ``reset()`` returns the constant observations (T, B, 1); ``step(arms (T, B) long)`` returns
    ``(observations (T, B, 1), rewards (T, B), terminated (T, B) bool, truncated (T, B) bool)``.
    Rewards use ``generator`` (a ``torch.Generator``), so they follow the same law as the gymnasium env's
    but not the same random numbers.
    """

    def __init__(
        self,
        tasks: Sequence[dict[str, Any]],
        episodes_per_task: int,
        *,
        num_arms: int = 5,
        horizon: int = DEFAULT_HORIZON,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        if len(tasks) == 0:
            raise ValueError("tasks must be a non-empty list of bandit tasks {'probs': (K,)}")
        if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, int) or episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be a positive integer, got {episodes_per_task!r}")
        self.num_arms = check_num_arms(num_arms)
        self.horizon = check_horizon(horizon)
        self.device = torch.device(device)
        self.generator = generator
        probs = np.stack([probs_from_task(task, self.num_arms) for task in tasks])  # (T, K)
        self.probs = torch.as_tensor(probs, dtype=torch.float32, device=self.device)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.num_arms)
        self.shape = (len(tasks), episodes_per_task)
        self.steps = 0

    def reset(self) -> Tensor:
        self.steps = 0
        return torch.ones(*self.shape, 1, device=self.device)

    def step(self, arms: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """r ~ Bernoulli(p[task, arm]) for every (task, episode)."""
        if tuple(arms.shape) != self.shape:
            raise ValueError(f"arms must have shape (T, B) = {self.shape}, got {tuple(arms.shape)}")
        p_arm = torch.gather(self.probs, 1, arms.to(self.device).long())  # (T, B)
        uniform = torch.rand(self.shape, generator=self.generator, device=self.device)  # (T, B)
        rewards = (uniform < p_arm).float()
        self.steps += 1
        terminated = torch.zeros(self.shape, dtype=torch.bool, device=self.device)
        truncated = torch.full(self.shape, self.steps >= self.horizon, device=self.device)
        return torch.ones(*self.shape, 1, device=self.device), rewards, terminated, truncated
