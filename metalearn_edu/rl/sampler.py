"""Collect B episodes for each of T tasks in one batched pass and return a time-major EpisodeBatch.

One policy forward per time step serves all T*B environments. Three backends step the environments:

- ``"batched"``: the env's tensor twin (for example :class:`~metalearn_edu.envs.BatchedNavigation2D`),
  declared with :func:`metalearn_edu.envs.register_batched`; no Python loop over environments at all.
- ``"loop"``: any gymnasium meta-env, T*B copies kept in a list and stepped one by one, skipping the
  episodes that have ended (faster than ``"vector"`` for cheap envs, see ``metalearn-edu bench sampler``).
- ``"vector"``: the same copies in a ``gymnasium.vector.SyncVectorEnv``.

``"auto"`` picks ``"batched"`` when the env has a twin, else ``"loop"``. The env copies are created once
per sampler and reused: each ``sample`` call sets copy t*B + b to task t with ``env.unwrapped.set_task``.

Seeding: ``sample(..., seed=s)`` derives, from ``s`` alone, the torch generator of the policy's actions,
the ``reset(seed=...)`` of every env copy and the generator of a batched env, so the same seed gives an
identical batch (on the same device). Sampling runs under ``torch.no_grad``; ``infos["log_probs"]``
(H, T, B) holds log π(a_t|s_t) of the sampled actions and ``infos["terminated"]`` (H, T, B) is 1.0 at
steps where an episode terminated (rather than being truncated).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from metalearn_edu.envs import batched_factory, check_meta_env, resolve_env_id
from metalearn_edu.rl.batch import EpisodeBatch
from metalearn_edu.rl.policies import Params, stack_params

BACKENDS = ("auto", "batched", "loop", "vector")
EnvSource = str | Callable[..., gym.Env]


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def derive_seeds(seed: int, num_envs: int) -> tuple[int, int, list[int]]:
    """From one ``seed``: (policy generator seed, batched-env generator seed, one reset seed per env copy)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    policy_stream, env_stream = np.random.SeedSequence(int(seed)).spawn(2)
    reset_seeds = env_stream.generate_state(num_envs, dtype=np.uint32)
    return (
        int(policy_stream.generate_state(1, dtype=np.uint64)[0]),
        int(env_stream.generate_state(1, dtype=np.uint64)[0]),
        [int(s) for s in reset_seeds],
    )


class _EnvListStepper:
    """T*B gymnasium envs stepped one by one ("loop") or through a SyncVectorEnv ("vector")."""

    def __init__(self, envs: list[gym.Env] | gym.vector.SyncVectorEnv, observation_space: spaces.Space, device: torch.device):
        self.envs = envs
        self.vector = isinstance(envs, gym.vector.SyncVectorEnv)
        self.discrete_obs = isinstance(observation_space, spaces.Discrete)
        self.device = device

    def _copies(self) -> list[gym.Env]:
        return list(self.envs.envs) if self.vector else self.envs

    def _tensor(self, array: np.ndarray, shape: tuple[int, int]) -> Tensor:
        dtype = torch.long if self.discrete_obs else torch.get_default_dtype()
        # torch.tensor copies: ``array`` is updated in place by later steps
        return torch.tensor(array, device=self.device).to(dtype).reshape(*shape, *array.shape[1:])

    def reset(self, tasks: Sequence[Any], episodes: int, reset_seeds: list[int]) -> Tensor:
        self.shape = (len(tasks), episodes)
        for index, env in enumerate(self._copies()):
            env.unwrapped.set_task(tasks[index // episodes])
        if self.vector:
            obs, _ = self.envs.reset(seed=reset_seeds)
        else:
            obs = np.stack([env.reset(seed=s)[0] for env, s in zip(self.envs, reset_seeds)])
        self.last_obs = np.array(obs)  # (N, ...) kept for the episodes that have ended
        self.alive = np.ones(len(self.last_obs), dtype=bool)  # (N,) episodes still running
        return self._tensor(self.last_obs, self.shape)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Step every env copy (loop: only those whose episode is still running) with its action."""
        n = len(self.last_obs)
        flat_actions = actions.reshape(n, *actions.shape[2:]).cpu().numpy()  # (N, ...)
        rewards, terminated, truncated = np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool)
        if self.vector:
            obs, rewards, terminated, truncated, _ = self.envs.step(flat_actions)
            self.last_obs = np.array(obs)
        else:
            for index in np.flatnonzero(self.alive):
                self.last_obs[index], rewards[index], terminated[index], truncated[index], _ = self.envs[index].step(flat_actions[index])
        self.alive &= ~(np.asarray(terminated) | np.asarray(truncated))

        def as_tensor(x: np.ndarray, dtype: torch.dtype) -> Tensor:
            return torch.as_tensor(np.asarray(x), device=self.device).to(dtype).reshape(self.shape)

        return (
            self._tensor(self.last_obs, self.shape),
            as_tensor(rewards, torch.get_default_dtype()),
            as_tensor(terminated, torch.bool),
            as_tensor(truncated, torch.bool),
        )


class MetaSampler:
    """Samples episodes of a meta-environment for many tasks at once.

    >>> sampler = MetaSampler("navigation2d")                      # id, short name, or env factory
    >>> tasks = sampler.sample_tasks(20, rng=0)
    >>> batch = sampler.sample(policy, tasks, episodes_per_task=20, seed=0)             # θ for every task
    >>> post = sampler.sample(policy, tasks, 20, params=adapted, seed=1)                # θ'_t for task t

    Args:
        env: a registered gymnasium id or short name (``resolve_env_id``), or a callable returning a
            gymnasium env whose ``unwrapped`` has ``sample_tasks`` and ``set_task``.
        backend: one of ``BACKENDS`` (see the module docstring).
        env_kwargs: keyword arguments for ``gymnasium.make`` / the factory / the batched twin.
        horizon: default number of steps per episode; ``None`` takes the env's ``horizon`` attribute or
            its ``spec.max_episode_steps``.
        device: where the batched twin and the returned batch live (the policy must be there too).
    """

    def __init__(
        self,
        env: EnvSource,
        *,
        backend: str = "auto",
        env_kwargs: Mapping[str, Any] | None = None,
        horizon: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.env_kwargs = dict(env_kwargs or {})
        if isinstance(env, str):
            self.env_id: str | None = resolve_env_id(env, argument="env")
            env_id = self.env_id
            self._factory: Callable[[], gym.Env] = lambda: gym.make(env_id, disable_env_checker=True, **self.env_kwargs)
        elif callable(env):
            self.env_id, user_factory = None, env
            self._factory = lambda: user_factory(**self.env_kwargs)
        else:
            raise TypeError(f"env must be a registered env id, a short name or a callable returning a gymnasium.Env, got {type(env).__name__}")
        self.probe = self._factory()
        if not isinstance(self.probe, gym.Env):
            raise TypeError(f"env must build a gymnasium.Env, the factory returned {type(self.probe).__name__}")
        check_meta_env(self.probe, argument="env")
        self.observation_space, self.action_space = self.probe.observation_space, self.probe.action_space
        twin = batched_factory(self.env_id) if self.env_id else None
        if backend == "batched" and twin is None:
            raise ValueError(f"backend='batched' needs an env with a batched twin (register_batched); {env!r} has none: use 'loop' or 'vector'")
        self.backend = ("batched" if twin else "loop") if backend == "auto" else backend
        self._twin = twin
        self.horizon = self._default_horizon() if horizon is None else _check_count(horizon, "horizon")
        self.device = torch.device(device)
        self._copies: list[gym.Env] | gym.vector.SyncVectorEnv | None = None

    def _default_horizon(self) -> int:
        horizon = getattr(self.probe.unwrapped, "horizon", None)
        if horizon is None and self.probe.spec is not None:
            horizon = self.probe.spec.max_episode_steps
        if horizon is None:
            raise ValueError("horizon must be given: the env has neither a horizon attribute nor spec.max_episode_steps")
        return int(horizon)

    def sample_tasks(self, n: int, rng: np.random.Generator | int | None = None) -> list[Any]:
        """``n`` tasks from the env's task distribution (``rng`` as in the env's ``sample_tasks``)."""
        return self.probe.unwrapped.sample_tasks(n, rng=rng)

    def close(self) -> None:
        """Close the env copies (the sampler can still be used: it rebuilds them when needed)."""
        if self._copies is not None:
            for env in self._copies.envs if self.backend == "vector" else self._copies:
                env.close()
            self._copies = None

    def __enter__(self) -> "MetaSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.probe.close()

    def _stepper(self, num_envs: int) -> _EnvListStepper:
        current = 0 if self._copies is None else (self._copies.num_envs if self.backend == "vector" else len(self._copies))
        if current != num_envs:
            self.close()
            if self.backend == "vector":
                self._copies = gym.vector.SyncVectorEnv([self._factory] * num_envs, copy=False)
            else:
                self._copies = [self._factory() for _ in range(num_envs)]
        return _EnvListStepper(self._copies, self.observation_space, self.device)

    def _prepare_params(self, policy: nn.Module, params: Params | Sequence[Params] | None, num_tasks: int) -> tuple[Params | None, int | None]:
        if params is None:
            return None, None
        if isinstance(params, Sequence) and not isinstance(params, Mapping):
            if len(params) != num_tasks:
                raise ValueError(f"params must hold one parameter dict per task ({num_tasks}), got {len(params)}")
            params = stack_params(params)
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be None, a dict of tensors or a list of dicts, got {type(params).__name__}")
        count = policy.task_count(params)
        if count is not None and count != num_tasks:
            raise ValueError(f"params are stacked for {count} tasks but {num_tasks} tasks were given")
        return params, (None if count is None else 0)

    @torch.no_grad()
    def sample(
        self,
        policy: nn.Module,
        tasks: Sequence[Any],
        episodes_per_task: int,
        *,
        params: Params | Sequence[Params] | None = None,
        seed: int = 0,
        horizon: int | None = None,
        deterministic: bool = False,
    ) -> EpisodeBatch:
        """B = ``episodes_per_task`` episodes for each of the T ``tasks``, H = ``horizon`` steps at most.

        ``params``: ``None`` (the policy's own θ), one dict shared by all tasks, or per-task parameters as a
        dict of tensors stacked on a leading T dim or a list of T dicts. Returns an EpisodeBatch with
        observations (H, T, B, obs_dim), actions (H, T, B, act_dim) or (H, T, B) long, rewards and mask
        (H, T, B); the mask is 1 up to and including the last step, and everything after it is 0.
        """
        if not isinstance(policy, nn.Module) or not callable(getattr(policy, "act", None)):
            raise TypeError(f"policy must be a policy module with act() (see rl.policies), got {type(policy).__name__}")
        if isinstance(tasks, (str, Mapping)) or not isinstance(tasks, Sequence) or len(tasks) == 0:
            raise ValueError("tasks must be a non-empty list of tasks (from sample_tasks)")
        num_tasks, episodes = len(tasks), _check_count(episodes_per_task, "episodes_per_task")
        steps = self.horizon if horizon is None else _check_count(horizon, "horizon")
        params, task_dim = self._prepare_params(policy, params, num_tasks)
        policy_seed, env_seed, reset_seeds = derive_seeds(seed, num_tasks * episodes)
        generator = torch.Generator(device=self.device).manual_seed(policy_seed)
        if self.backend == "batched":
            factory, defaults = self._twin
            env_generator = torch.Generator(device=self.device).manual_seed(env_seed)
            stepper = factory(tasks, episodes, device=self.device, generator=env_generator, **{**defaults, **self.env_kwargs})
            obs = stepper.reset()
        else:
            stepper = self._stepper(num_tasks * episodes)
            obs = stepper.reset(tasks, episodes, reset_seeds)
        if hasattr(policy, "obs_dim") and obs.dim() == 3 and obs.shape[-1] != policy.obs_dim:
            raise ValueError(f"policy expects obs_dim={policy.obs_dim} but the env observes {obs.shape[-1]} numbers")
        return self._rollout(policy, stepper, obs, params, task_dim, steps, generator, deterministic, list(tasks))

    def _rollout(
        self,
        policy: nn.Module,
        stepper: Any,
        obs: Tensor,
        params: Params | None,
        task_dim: int | None,
        steps: int,
        generator: torch.Generator,
        deterministic: bool,
        tasks: list[Any],
    ) -> EpisodeBatch:
        """Step policy and envs together for ``steps`` steps (or until every episode has ended)."""
        alive = torch.ones(obs.shape[:2], dtype=torch.bool, device=obs.device)  # (T, B)
        record: dict[str, list[Tensor]] = {k: [] for k in ("obs", "actions", "log_probs", "rewards", "mask", "terminated")}
        for _ in range(steps):
            action = policy.act(params, obs, generator, deterministic, task_dim=task_dim)
            next_obs, rewards, terminated, truncated = stepper.step(action.actions)
            record["obs"].append(obs)
            record["actions"].append(action.actions)
            record["log_probs"].append(action.log_probs)
            record["rewards"].append(rewards)
            record["mask"].append(alive)
            record["terminated"].append(terminated & alive)
            alive = alive & ~(terminated | truncated)
            obs = next_obs
            if not bool(alive.any()):
                break
        return _assemble(record, steps, tasks)


def _assemble(record: dict[str, list[Tensor]], steps: int, tasks: list[Any]) -> EpisodeBatch:
    """Stack the per-step records to (H, T, B, ...), pad to ``steps`` and zero everything after an episode ends."""
    mask = torch.stack(record["mask"])  # (h, T, B) bool, h <= steps
    padding = steps - mask.shape[0]

    def finish(values: list[Tensor]) -> Tensor:
        stacked = torch.stack(values)  # (h, T, B, ...)
        keep = mask.reshape(mask.shape + (1,) * (stacked.dim() - 3))
        stacked = torch.where(keep, stacked, torch.zeros((), dtype=stacked.dtype, device=stacked.device))
        if padding:
            stacked = torch.cat([stacked, stacked.new_zeros((padding,) + stacked.shape[1:])])
        return stacked

    float_mask = finish([m.to(torch.get_default_dtype()) for m in record["mask"]])
    return EpisodeBatch(
        observations=finish(record["obs"]),
        actions=finish(record["actions"]),
        rewards=finish(record["rewards"]),
        mask=float_mask,
        tasks=tasks,
        infos={"log_probs": finish(record["log_probs"]), "terminated": finish([t.to(float_mask.dtype) for t in record["terminated"]])},
    )


def sample_episodes(
    env: EnvSource,
    policy: nn.Module,
    tasks: Sequence[Any],
    episodes_per_task: int,
    *,
    params: Params | Sequence[Params] | None = None,
    seed: int = 0,
    horizon: int | None = None,
    deterministic: bool = False,
    backend: str = "auto",
    env_kwargs: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> EpisodeBatch:
    """One-shot :meth:`MetaSampler.sample` (builds the env copies each call; keep a MetaSampler in loops)."""
    sampler = MetaSampler(env, backend=backend, env_kwargs=env_kwargs, horizon=horizon, device=device)
    with sampler:
        return sampler.sample(policy, tasks, episodes_per_task, params=params, seed=seed, deterministic=deterministic)
