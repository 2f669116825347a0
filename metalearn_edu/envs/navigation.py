"""2D navigation (Finn, Abbeel, Levine 2017, section 5.3), as a gymnasium env and as a batched tensor env.

A point starts at the origin and must reach a goal g drawn from U[-0.5, 0.5]^2 (the task):

    s_0 = (0, 0)
    s_{t+1} = s_t + clip(a_t, -0.1, 0.1)          (element-wise clip)
    r_t = -||s_{t+1} - g||_2
    terminated when |s_{t+1} - g| < 0.01 in both coordinates;  truncated after ``horizon`` steps (100 in the paper).

The termination test is that of Finn et al.'s released environment (``maml_examples/point_env_randgoal.py``
in cbfinn/maml_rl: ``abs(x) < 0.01 and abs(y) < 0.01`` on the offset), a square of half-width 0.01 around
the goal, not the disc that "within 0.01 of the goal" could also mean; the reward is the Euclidean distance.

The observation is the position s (float32, shape (2,)); the goal is not observed, so a policy can only
find it by adapting to rewards. All arithmetic is done in float32 in both implementations, so that
:class:`BatchedNavigation2D` reproduces :class:`Navigation2DEnv` exactly, step for step.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

MAX_STEP = 0.1  # each action coordinate is clipped to [-MAX_STEP, MAX_STEP]
GOAL_LOW, GOAL_HIGH = -0.5, 0.5  # goals are U[GOAL_LOW, GOAL_HIGH]^2
SUCCESS_TOLERANCE = 0.01  # terminated when both coordinates of s - g are below this in absolute value
DEFAULT_HORIZON = 100


def check_horizon(horizon: int) -> int:
    """Return ``horizon`` if it is a positive int, else raise a ValueError naming it."""
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be a positive integer (steps per episode), got {horizon!r}")
    return int(horizon)


def goal_from_task(task: Any) -> np.ndarray:
    """The goal of a navigation ``task`` ``{"goal": array of shape (2,)}`` as float32, validated."""
    if not isinstance(task, dict) or "goal" not in task:
        raise ValueError(f"task must be a dict with a 'goal' entry of shape (2,), got {task!r}")
    goal = np.asarray(task["goal"], dtype=np.float32)
    if goal.shape != (2,) or not np.all(np.isfinite(goal)):
        raise ValueError(f"task['goal'] must be 2 finite numbers, got {task['goal']!r}")
    return goal


def goals_from_tasks(tasks: Sequence[Any]) -> np.ndarray:
    """The goals of navigation ``tasks`` stacked as a float32 array (T, 2), each validated by ``goal_from_task``."""
    return np.stack([goal_from_task(task) for task in tasks])


def sample_goals(n: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """``n`` navigation tasks ``{"goal": g}`` with g ~ U[-0.5, 0.5]^2 (float32, shape (2,)) drawn from ``rng``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of tasks), got {n!r}")
    goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(int(n), 2)).astype(np.float32)
    return [{"goal": goal} for goal in goals]


def as_rng(rng: np.random.Generator | int | None, default: np.random.Generator) -> np.random.Generator:
    """Turn the ``rng`` argument of ``sample_tasks`` into a Generator (None means ``default``)."""
    if rng is None:
        return default
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")


class Navigation2DEnv(gym.Env):
    """Point-mass navigation to an unobserved goal; one task = one goal.

    Tasks (the pytorch-maml-rl / Meta-World convention):
        ``env.unwrapped.sample_tasks(n, rng=None)`` returns ``n`` dicts ``{"goal": np.ndarray (2,)}``. With
        ``rng=None`` the env's own ``np_random`` is used, so ``reset(seed=s)`` followed by ``sample_tasks(n)``
        is reproducible; pass an int or a ``numpy.random.Generator`` to sample independently of the env.
        ``env.unwrapped.set_task(task)`` fixes the goal for the following episodes.

    Args:
        horizon: steps before the episode is truncated (the env truncates itself, no TimeLimit needed).
        task: the initial task; ``None`` means a fixed default goal (0.25, -0.25) so the env works as is.
    """

    metadata = {"render_modes": []}

    def __init__(self, horizon: int = DEFAULT_HORIZON, task: dict[str, Any] | None = None) -> None:
        self.horizon = check_horizon(horizon)
        reach = np.float32(MAX_STEP * self.horizon)  # no position beyond this can be reached
        self.observation_space = spaces.Box(-reach, reach, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-MAX_STEP, MAX_STEP, shape=(2,), dtype=np.float32)
        self._goal = goal_from_task(task if task is not None else {"goal": (0.25, -0.25)})
        self._position = np.zeros(2, dtype=np.float32)
        self._steps = 0

    # --- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator | int | None = None) -> list[dict[str, np.ndarray]]:
        """``n`` tasks ``{"goal": g}``, g ~ U[-0.5, 0.5]^2, from ``rng`` (default: the env's ``np_random``)."""
        return sample_goals(n, as_rng(rng, self.np_random))

    def set_task(self, task: dict[str, Any]) -> None:
        """Use ``task["goal"]`` as the goal from the next step on."""
        self._goal = goal_from_task(task)

    def get_task(self) -> dict[str, np.ndarray]:
        return {"goal": self._goal.copy()}

    # --- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start at the origin. ``options={"task": task}`` sets the task first."""
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        self._position = np.zeros(2, dtype=np.float32)
        self._steps = 0
        return self._position.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        step = np.clip(np.asarray(action, dtype=np.float32).reshape(2), -MAX_STEP, MAX_STEP)
        self._position = (self._position + step).astype(np.float32)
        offset = self._position - self._goal  # (2,) float32
        distance = np.sqrt(offset[0] * offset[0] + offset[1] * offset[1])  # float32, same order as the batched env
        self._steps += 1
        terminated = bool(abs(offset[0]) < SUCCESS_TOLERANCE and abs(offset[1]) < SUCCESS_TOLERANCE)
        truncated = self._steps >= self.horizon and not terminated
        return self._position.copy(), float(-distance), terminated, truncated, {"distance": float(distance)}


class BatchedNavigation2D:
    """The dynamics of :class:`Navigation2DEnv` for T tasks x B episodes at once, as float32 tensors.

    ``reset()`` returns positions (T, B, 2); ``step(actions (T, B, 2))`` returns
    ``(observations (T, B, 2), rewards (T, B), terminated (T, B) bool, truncated (T, B) bool)``.
    Episodes that have ended keep being stepped (their results are the caller's to mask); termination and
    truncation are reported at every step after which they hold, exactly as the gymnasium env would.

    Args:
        tasks: T navigation tasks ``{"goal": (2,)}``.
        episodes_per_task: B.
        horizon: steps before truncation, as in the gymnasium env.
        device: where the tensors live.
    """

    def __init__(
        self,
        tasks: Sequence[dict[str, Any]],
        episodes_per_task: int,
        *,
        horizon: int = DEFAULT_HORIZON,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,  # unused: the dynamics are deterministic
    ) -> None:
        if len(tasks) == 0:
            raise ValueError("tasks must be a non-empty list of navigation tasks {'goal': (2,)}")
        if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, int) or episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be a positive integer, got {episodes_per_task!r}")
        self.horizon = check_horizon(horizon)
        self.device = torch.device(device)
        goals = goals_from_tasks(tasks)  # (T, 2)
        self.goals = torch.as_tensor(goals, device=self.device)[:, None, :]  # (T, 1, 2)
        self.num_tasks, self.episodes_per_task = len(tasks), episodes_per_task
        probe = Navigation2DEnv(horizon=self.horizon)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        self.positions = torch.zeros(self.num_tasks, episodes_per_task, 2, device=self.device)  # (T, B, 2)
        self.steps = 0

    def reset(self) -> Tensor:
        """All T*B points back at the origin: (T, B, 2)."""
        self.positions = torch.zeros_like(self.positions)
        self.steps = 0
        return self.positions.clone()

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """s' = s + clip(a, -0.1, 0.1); r = -||s' - g||; see the class docstring for the shapes."""
        if actions.shape != self.positions.shape:
            raise ValueError(f"actions must have shape (T, B, 2) = {tuple(self.positions.shape)}, got {tuple(actions.shape)}")
        step = actions.to(device=self.device, dtype=torch.float32).clamp(-MAX_STEP, MAX_STEP)  # (T, B, 2)
        self.positions = self.positions + step
        offset = self.positions - self.goals  # (T, B, 2)
        squared = offset[..., 0] * offset[..., 0] + offset[..., 1] * offset[..., 1]  # (T, B) float32
        # torch's vectorised float32 sqrt is not correctly rounded (NumPy's is); a float64 sqrt rounded
        # to float32 is, so the distances match the gymnasium env bit for bit.
        distance = torch.sqrt(squared.double()).float()  # (T, B)
        self.steps += 1
        terminated = (offset.abs() < SUCCESS_TOLERANCE).all(dim=-1)  # (T, B)
        truncated = ~terminated if self.steps >= self.horizon else torch.zeros_like(terminated)
        return self.positions.clone(), -distance, terminated, truncated
