"""Random tabular MDPs small enough to enumerate: a gymnasium meta-env, a batched twin and a sampler.

A task is an MDP with S states, A actions and a fixed horizon H:

    s_0 ~ rho                         (the family's fixed initial distribution, uniform by default)
    r_t = R[s_t, a_t]                 R[s, a] ~ U[0, 1]
    s_{t+1} ~ P[s_t, a_t, .]          P[s, a, .] ~ Dirichlet(concentration * 1_S)

Episodes never terminate; they are truncated after H steps. Tasks are dicts
``{"transitions": (S, A, S), "rewards": (S, A), "initial": (S,)}`` of float64 arrays.

With S = 2..3, A = 2 and H = 2..3 there are only (S A)^H <= 216 trajectories, so the expected return

    J(theta) = sum_tau rho(s_0) prod_t pi_theta(a_t | s_t) P(s_{t+1} | s_t, a_t) sum_t gamma^t r_t

of a tabular softmax policy pi_theta(a | s) = softmax(logits[s])_a is an exact, differentiable torch
function of the logits (:func:`metalearn_edu.envs.tabular_trajectories.expected_return`). :mod:`metalearn_edu.rl.exact` builds exact
Hessians and meta-gradients on it; :func:`sample_tabular_episodes` draws Monte-Carlo batches of the
same policy to check estimators against them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor
from torch.distributions import Categorical

from metalearn_edu.envs.navigation import as_rng, check_horizon
from metalearn_edu.rl.batch import EpisodeBatch

ENV_ID = "metalearn_edu/TabularMDP-v0"


def _check_count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def task_tensors(task: Mapping[str, Any], dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Validated (transitions (S, A, S), rewards (S, A), initial (S,)) tensors of a tabular ``task``."""
    if not isinstance(task, Mapping) or "transitions" not in task or "rewards" not in task:
        raise ValueError("task must be a dict with 'transitions' (S, A, S) and 'rewards' (S, A) entries")
    transitions = torch.as_tensor(np.asarray(task["transitions"]), dtype=dtype)
    rewards = torch.as_tensor(np.asarray(task["rewards"]), dtype=dtype)
    if transitions.dim() != 3 or transitions.shape[0] != transitions.shape[2]:
        raise ValueError(f"task['transitions'] must have shape (S, A, S), got {tuple(transitions.shape)}")
    num_states, num_actions = transitions.shape[:2]
    if rewards.shape != (num_states, num_actions):
        raise ValueError(f"task['rewards'] must have shape {(num_states, num_actions)}, got {tuple(rewards.shape)}")
    initial = task.get("initial")
    initial = (
        torch.full((num_states,), 1.0 / num_states, dtype=dtype)
        if initial is None
        else torch.as_tensor(np.asarray(initial), dtype=dtype)
    )
    if initial.shape != (num_states,):
        raise ValueError(f"task['initial'] must have shape ({num_states},), got {tuple(initial.shape)}")
    for name, probs in (("transitions", transitions), ("initial", initial)):
        if torch.any(probs < 0) or not torch.allclose(probs.sum(-1), torch.ones((), dtype=dtype), atol=1e-6):
            raise ValueError(f"task['{name}'] must hold probability distributions over the {num_states} states")
    return transitions, rewards, initial


def sample_tabular_tasks(
    n: int,
    num_states: int,
    num_actions: int,
    rng: np.random.Generator,
    *,
    concentration: float = 1.0,
    initial: np.ndarray | None = None,
) -> list[dict[str, np.ndarray]]:
    """``n`` random tasks: P[s, a] ~ Dirichlet(concentration), R ~ U[0, 1], the given initial rho."""
    n = _check_count(n, "n", 1)
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration!r}")
    rho = np.full(num_states, 1.0 / num_states) if initial is None else np.asarray(initial, dtype=np.float64)
    tasks = []
    for _ in range(n):
        transitions = rng.dirichlet(np.full(num_states, float(concentration)), size=(num_states, num_actions))
        rewards = rng.uniform(0.0, 1.0, size=(num_states, num_actions))
        tasks.append({"transitions": transitions, "rewards": rewards, "initial": rho.copy()})
    return tasks


class TabularMDPEnv(gym.Env):
    """One random tabular MDP at a time (see the module docstring); Discrete observations and actions.

    Tasks: ``env.unwrapped.sample_tasks(n, rng=None)`` (default rng: the env's ``np_random``, seeded by
    ``reset(seed=...)``) and ``env.unwrapped.set_task(task)``.

    Args:
        num_states, num_actions: S >= 1 and A >= 2.
        horizon: steps per episode H (truncated after H steps).
        concentration: Dirichlet concentration of the transition rows.
        initial_distribution: the family's rho over the S states (uniform when None).
        task: the initial task; None means a fixed task drawn from seed 0.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        num_states: int = 3,
        num_actions: int = 2,
        horizon: int = 3,
        concentration: float = 1.0,
        initial_distribution: Sequence[float] | None = None,
        task: Mapping[str, Any] | None = None,
    ) -> None:
        self.num_states = _check_count(num_states, "num_states", 1)
        self.num_actions = _check_count(num_actions, "num_actions", 2)
        self.horizon = check_horizon(horizon)
        self.concentration = float(concentration)
        self.initial = (
            np.full(self.num_states, 1.0 / self.num_states)
            if initial_distribution is None
            else np.asarray(initial_distribution, dtype=np.float64)
        )
        self.observation_space = spaces.Discrete(self.num_states)
        self.action_space = spaces.Discrete(self.num_actions)
        self.set_task(task if task is not None else self.sample_tasks(1, rng=0)[0])
        self._state, self._steps = 0, 0

    def sample_tasks(self, n: int, rng: np.random.Generator | int | None = None) -> list[dict[str, np.ndarray]]:
        """``n`` random tasks of this family from ``rng`` (default: the env's ``np_random``)."""
        return sample_tabular_tasks(
            n, self.num_states, self.num_actions, as_rng(rng, self.np_random),
            concentration=self.concentration, initial=self.initial,
        )

    def set_task(self, task: Mapping[str, Any]) -> None:
        transitions, rewards, initial = task_tensors(task)
        if transitions.shape[:2] != (self.num_states, self.num_actions):
            raise ValueError(
                f"task must have {self.num_states} states and {self.num_actions} actions, "
                f"got transitions of shape {tuple(transitions.shape)}"
            )
        self._transitions, self._rewards = transitions.numpy(), rewards.numpy()
        self._initial = initial.numpy()

    def get_task(self) -> dict[str, np.ndarray]:
        return {"transitions": self._transitions.copy(), "rewards": self._rewards.copy(), "initial": self._initial.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        """s_0 ~ rho. ``options={"task": task}`` sets the task first."""
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        self._state = int(self.np_random.choice(self.num_states, p=self._initial))
        self._steps = 0
        return self._state, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        action = int(action)
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action must be in [0, {self.num_actions - 1}], got {action!r}")
        reward = float(self._rewards[self._state, action])
        self._state = int(self.np_random.choice(self.num_states, p=self._transitions[self._state, action]))
        self._steps += 1
        return self._state, reward, False, self._steps >= self.horizon, {}


def _categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row of ``probs`` (..., K) -> (...) long, by inverting the CDF at u ~ U[0, 1)."""
    uniform = torch.rand(probs.shape[:-1], generator=generator, dtype=probs.dtype, device=probs.device)
    below = (probs.cumsum(dim=-1) <= uniform.unsqueeze(-1)).sum(dim=-1)  # categories whose CDF is <= u
    return below.clamp_max(probs.shape[-1] - 1)


class BatchedTabularMDP:
    """T tabular tasks x B episodes stepped at once: ``reset() -> (T, B)`` long states,
    ``step(actions (T, B)) -> (states, rewards (T, B), terminated, truncated)``; the sampler's fast path."""

    def __init__(
        self,
        tasks: Sequence[Mapping[str, Any]],
        episodes_per_task: int,
        *,
        horizon: int = 3,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,  # of rewards and probabilities; None: torch's default dtype
        num_states: int | None = None,
        num_actions: int | None = None,
        concentration: float | None = None,  # accepted for symmetry with the env; tasks are given
        initial_distribution: Sequence[float] | None = None,  # idem: each task carries its rho
    ) -> None:
        if len(tasks) == 0:
            raise ValueError("tasks must be a non-empty list of tabular tasks")
        self.episodes_per_task = _check_count(episodes_per_task, "episodes_per_task", 1)
        self.horizon = check_horizon(horizon)
        self.device, self.generator = torch.device(device), generator
        parts = [task_tensors(task, dtype or torch.get_default_dtype()) for task in tasks]
        self.transitions = torch.stack([p[0] for p in parts]).to(self.device)  # (T, S, A, S)
        self.rewards = torch.stack([p[1] for p in parts]).to(self.device)  # (T, S, A)
        self.initial = torch.stack([p[2] for p in parts]).to(self.device)  # (T, S)
        num_tasks, task_states, task_actions = self.rewards.shape
        for name, given, actual in (("num_states", num_states, task_states), ("num_actions", num_actions, task_actions)):
            if given is not None and given != actual:
                raise ValueError(f"{name}={given} does not match the tasks, which have {actual}")
        self.observation_space, self.action_space = spaces.Discrete(task_states), spaces.Discrete(task_actions)
        self.shape = (num_tasks, self.episodes_per_task)
        self._task_index = torch.arange(num_tasks, device=self.device).view(num_tasks, 1)  # (T, 1)
        self.states = torch.zeros(self.shape, dtype=torch.long, device=self.device)
        self.steps = 0

    def reset(self) -> Tensor:
        rho = self.initial.unsqueeze(1).expand(*self.shape, -1)  # (T, B, S)
        self.states, self.steps = _categorical(rho, self.generator), 0
        return self.states.clone()

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if tuple(actions.shape) != self.shape:
            raise ValueError(f"actions must have shape (T, B) = {self.shape}, got {tuple(actions.shape)}")
        actions = actions.to(self.device).long()
        rewards = self.rewards[self._task_index, self.states, actions]  # (T, B)
        next_probs = self.transitions[self._task_index, self.states, actions]  # (T, B, S)
        self.states = _categorical(next_probs, self.generator)
        self.steps += 1
        terminated = torch.zeros(self.shape, dtype=torch.bool, device=self.device)
        truncated = torch.full(self.shape, self.steps >= self.horizon, device=self.device)
        return self.states.clone(), rewards, terminated, truncated


class TabularSoftmaxPolicy:
    """pi(a | s) = softmax(logits[s])_a with params ``{"logits": (S, A)}``, or (T, S, A) per task."""

    def __init__(self, num_states: int, num_actions: int) -> None:
        self.num_states = _check_count(num_states, "num_states", 1)
        self.num_actions = _check_count(num_actions, "num_actions", 2)

    def init_params(self, *, scale: float = 0.0, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
        """Logits N(0, scale^2) (uniform policy for scale 0), a leaf that requires grad."""
        logits = scale * torch.randn(self.num_states, self.num_actions, generator=generator, dtype=dtype)
        return {"logits": logits.requires_grad_(True)}

    def distribution(self, params: Mapping[str, Tensor], obs: Tensor, *, task_dim: int | None = None) -> Categorical:
        """Categorical over actions for long states ``obs``; ``log_prob(actions)`` has obs's shape.

        With per-task logits (T, S, A), T sits at ``task_dim`` of ``obs`` (default: second to last,
        as in (H, T, B) batches and (T, B) sampler steps), so task i's states meet task i's logits.
        """
        logits = params["logits"]
        if torch.is_floating_point(obs):
            raise TypeError("obs must be a long tensor of state indices for a tabular policy")
        if logits.dim() == 2:
            return Categorical(logits=logits[obs])  # (..., A)
        dim = (obs.dim() - 2 if task_dim is None else task_dim) % max(obs.dim(), 1)
        if logits.dim() != 3 or obs.dim() < 1 or obs.shape[dim] != logits.shape[0]:
            raise ValueError(
                f"params['logits'] must be (S, A), or (T, S, A) with T on task_dim of obs; got logits "
                f"{tuple(logits.shape)}, obs {tuple(obs.shape)} and task_dim={task_dim}"
            )
        shape = [1] * obs.dim()
        shape[dim] = logits.shape[0]
        task_index = torch.arange(logits.shape[0], device=obs.device).view(shape)  # T at dim, 1 elsewhere
        return Categorical(logits=logits[task_index, obs])  # (*obs.shape, A)


def sample_tabular_episodes(
    tasks: Sequence[Mapping[str, Any]],
    logits: Tensor,
    horizon: int,
    episodes_per_task: int,
    generator: torch.Generator | None = None,
) -> EpisodeBatch:
    """Monte-Carlo episodes of the softmax policy, all T x B at once.

    Args:
        tasks: T tabular tasks.
        logits: (S, A) shared, or (T, S, A) one policy per task (e.g. adapted parameters).
        horizon: H.
        episodes_per_task: B.
        generator: torch random stream for states and actions.

    Returns:
        EpisodeBatch with observations and actions (H, T, B) long, rewards and mask (H, T, B), and
        ``infos["log_probs"]`` (H, T, B) the (detached) log-probabilities of the sampled actions.
    """
    env = BatchedTabularMDP(tasks, episodes_per_task, horizon=horizon, generator=generator, dtype=logits.dtype)
    policy = TabularSoftmaxPolicy(env.observation_space.n, env.action_space.n)
    params = {"logits": logits.detach()}
    states = env.reset()  # (T, B)
    observations, actions, rewards, log_probs = [], [], [], []
    for _ in range(env.horizon):
        distribution = policy.distribution(params, states)  # batch (T, B)
        action = _categorical(distribution.probs, generator)  # (T, B)
        observations.append(states)
        actions.append(action)
        log_probs.append(distribution.log_prob(action))
        states, reward, _, _ = env.step(action)
        rewards.append(reward)
    stacked_rewards = torch.stack(rewards)  # (H, T, B)
    return EpisodeBatch(
        observations=torch.stack(observations),
        actions=torch.stack(actions),
        rewards=stacked_rewards,
        mask=torch.ones_like(stacked_rewards),
        tasks=list(tasks),
        infos={"log_probs": torch.stack(log_probs)},
    )


def register_tabular() -> None:
    """Register ``metalearn_edu/TabularMDP-v0`` and its batched twin; calling it again does nothing."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="metalearn_edu.envs.tabular:TabularMDPEnv")
    from metalearn_edu.envs import register_batched  # late: metalearn_edu.envs imports this module

    register_batched(ENV_ID, BatchedTabularMDP)
