"""N = T x B locomotion simulations on one MjModel, stepped together: the sampler's fast path for MuJoCo.

:class:`LocomotionSims` keeps N simulations of one family and computes observations and rewards for all
of them at once with NumPy from the state arrays (qpos, qvel (N, nq), (N, nv)). Two physics backends:

* ``"batch"``: ``mujoco.batch.Batch`` (mujoco >= 4), the bindings' many-simulation stepper. Its state rows
  are bound as (N, nq) / (N, nv) / (N, nu) arrays, ``step(nstep=frame_skip)`` runs all simulations in C on
  ``nthread`` threads, results are bit-identical to ``mj_step`` on one MjData each. Used for HalfCheetah.
* ``"datas"``: one ``MjData`` per simulation, stepped with ``mj_step`` followed by
  ``mj_rnePostConstraint``, exactly as gymnasium does, in ``nthread`` Python threads (each steps a slice
  of the simulations; the bindings release the GIL inside ``mj_step``). Ant needs it: its observation and
  contact cost use ``cfrc_ext``, which only ``mj_rnePostConstraint`` after the step computes as gymnasium
  does (the batch does not). Ant's physics costs ~5x HalfCheetah's, so the loop's overhead is small there.

Per env step, with dt = frame_skip * timestep:

    HalfCheetah  obs = [qpos[1:], qvel] (17,)                   v = (qpos[0]' - qpos[0]) / dt
    Ant          obs = [qpos[2:], qvel, clip(cfrc_ext[1:])] (105,)  v = (xpos[1,0]' - xpos[1,0]) / dt

(Ant's body position ``xpos`` comes from the last forward pass, one substep behind qpos, as in
gymnasium.) Rewards are :func:`metalearn_edu.envs.locomotion.task_reward`, the same function the gymnasium
envs call, and resets draw qpos0 + U[-eps, eps] and eps N(0, 1) from ``np.random.default_rng(seed)`` in the
order gymnasium does, so simulation i reset with seed s equals ``env.reset(seed=s)`` step for step.

:class:`BatchedLocomotion` wraps it in the batched-twin protocol of :mod:`metalearn_edu.envs` (tensors
(T, B, ...)), so ``MetaSampler("halfcheetahvel")`` uses it (one policy forward per step for all T*B envs).
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

# First: quiet MuJoCo's warnings and pick a headless GL platform before anything imports mujoco.
from metalearn_edu.envs import mujoco_quiet  # noqa: F401  # isort: skip

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import batch as mjbatch
from torch import Tensor

from metalearn_edu.envs.locomotion import ant_healthy, get_family, make_config, task_reward, task_values
from metalearn_edu.envs.locomotion_envs import AntVelEnv, HalfCheetahVelEnv, apply_mass_scale

PHYSICS_BACKENDS = ("auto", "batch", "datas")
THREADS_VARIABLE = "METALEARN_EDU_MUJOCO_THREADS"
_MODELS: dict[str, tuple[mujoco.MjModel, gym.spaces.Box, gym.spaces.Box]] = {}


def robot_model(robot: str) -> tuple[mujoco.MjModel, gym.spaces.Box, gym.spaces.Box]:
    """(a private copy of the MjModel, observation space, action space) of ``robot`` as gymnasium builds it."""
    if robot not in _MODELS:
        env = {"half_cheetah": HalfCheetahVelEnv, "ant": AntVelEnv}[robot]()
        _MODELS[robot] = (copy.copy(env.model), env.observation_space, env.action_space)
        env.close()
    model, observation_space, action_space = _MODELS[robot]
    return copy.copy(model), observation_space, action_space


def default_threads() -> int:
    """Threads stepping the simulations: ``$METALEARN_EDU_MUJOCO_THREADS`` (0 = all cores), else 1.

    One thread is the safe default on a shared 2-core machine; on a quiet multi-core machine more threads
    step the simulations in parallel (bit-identical results at any thread count).
    """
    value = os.environ.get(THREADS_VARIABLE, "1")
    if not value.isdigit():
        raise ValueError(f"{THREADS_VARIABLE} must be a non-negative integer (0 = all cores), got {value!r}")
    return int(value)


class LocomotionSims:
    """N simulations of a locomotion family, simulation i on task ``tasks[i]`` (NumPy in and out).

    Args:
        family: family name or env id (``"HalfCheetahVel"``, ``"metalearn_edu/AntDir-v0"``, ...).
        tasks: N tasks, one per simulation (repeat a task for several episodes).
        preset, overrides: the config, as for the gymnasium env (``preset="fast"``, ``horizon=50``, ...).
        backend: ``"auto"`` (batch for HalfCheetah, datas for Ant), ``"batch"`` or ``"datas"``.
        nthread: threads stepping the simulations (0: all cores; None: :func:`default_threads`); the
            results are the same for any number.
    """

    def __init__(
        self,
        family: str,
        tasks: Sequence[dict[str, Any]],
        *,
        preset: str = "paper",
        backend: str = "auto",
        nthread: int | None = None,
        **overrides: Any,
    ) -> None:
        self.family = get_family(family)
        self.config = make_config(self.family, preset, **overrides)
        if backend not in PHYSICS_BACKENDS:
            raise ValueError(f"backend must be one of {PHYSICS_BACKENDS}, got {backend!r}")
        if backend == "auto":
            backend = "datas" if self.family.robot == "ant" else "batch"
        if backend == "batch" and self.family.robot == "ant":
            raise ValueError("backend='batch' cannot reproduce Ant's contact forces (cfrc_ext after mj_rnePostConstraint); use 'datas'")
        if nthread is not None and (isinstance(nthread, bool) or not isinstance(nthread, int) or nthread < 0):
            raise ValueError(f"nthread must be None or a non-negative integer (0 = all cores), got {nthread!r}")
        self.backend = backend
        self.values = task_values(self.family, tasks)  # (N, k)
        self.num = len(self.values)
        self.model, self.observation_space, self.action_space = robot_model(self.family.robot)
        self.dt = self.model.opt.timestep * self.config.frame_skip  # as gymnasium's MujocoEnv.dt
        self.init_qpos = self.model.qpos0.copy()
        self.init_qvel = np.zeros(self.model.nv)
        models = self._task_models()  # one MjModel per simulation (shared when tasks don't change the robot)
        if backend == "batch":
            self.batch = mjbatch.Batch(self.model, nsim=self.num, nthread=default_threads() if nthread is None else nthread)
            if models is not None:
                self.batch.set_models(models)
            self.qpos, self.qvel, self.ctrl = self.batch.bind("qpos"), self.batch.bind("qvel"), self.batch.bind("ctrl")
        else:
            self.models = models or [self.model] * self.num
            self.datas = [mujoco.MjData(m) for m in self.models]
            self.qpos, self.qvel = np.zeros((self.num, self.model.nq)), np.zeros((self.num, self.model.nv))
            self.cfrc_ext = np.zeros((self.num, self.model.nbody, 6))
            self.torso_x = np.zeros(self.num)
            threads = default_threads() if nthread is None else nthread
            self.threads = min(self.num, threads or os.cpu_count() or 1)
            self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.x = np.zeros(self.num)  # the forward position v is measured from
        self.alive = np.ones(self.num, dtype=bool)

    def _task_models(self) -> list[mujoco.MjModel] | None:
        if self.family.task_key != "mass_scale":
            return None
        base_mass, base_inertia = self.model.body_mass.copy(), self.model.body_inertia.copy()
        by_task: dict[bytes, mujoco.MjModel] = {}
        for row in self.values:
            if row.tobytes() not in by_task:
                model = copy.copy(self.model)
                apply_mass_scale(model, base_mass, base_inertia, row)
                by_task[row.tobytes()] = model
        return [by_task[row.tobytes()] for row in self.values]

    def _forward_position(self) -> np.ndarray:
        return self.qpos[:, 0].copy() if self.family.robot == "half_cheetah" else self.torso_x.copy()

    def _gather(self, ids: np.ndarray) -> None:
        """Copy the state (and Ant's contact forces and torso x) of simulations ``ids`` into the (N, ...) arrays."""
        for i in ids:
            data = self.datas[i]
            self.qpos[i], self.qvel[i], self.cfrc_ext[i] = data.qpos, data.qvel, data.cfrc_ext
            self.torso_x[i] = data.xpos[1, 0]

    def _step_datas(self, ids: np.ndarray, actions: np.ndarray) -> None:
        """gymnasium's step (ctrl, mj_step x frame_skip, mj_rnePostConstraint) for simulations ``ids``."""
        for i in ids:
            model, data = self.models[i], self.datas[i]
            data.ctrl[:] = actions[i]
            mujoco.mj_step(model, data, nstep=self.config.frame_skip)
            mujoco.mj_rnePostConstraint(model, data)
        self._gather(ids)

    def close(self) -> None:
        """Stop the worker threads of the datas backend (the object is still usable single-threaded)."""
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown()
            self.pool = None

    def observations(self) -> np.ndarray:
        """(N, obs_dim) float64, gymnasium's observation of every simulation."""
        if self.family.robot == "half_cheetah":
            return np.concatenate([self.qpos[:, 1:], self.qvel], axis=1)
        low, high = self.config.contact_force_range  # type: ignore[attr-defined]
        forces = np.clip(self.cfrc_ext[:, 1:], low, high).reshape(self.num, -1)
        return np.concatenate([self.qpos[:, 2:], self.qvel, forces], axis=1)

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Reset simulation i as ``env.reset(seed=seeds[i])`` would; returns the observations (N, obs_dim)."""
        seeds = [int(s) for s in seeds]
        if len(seeds) != self.num:
            raise ValueError(f"seeds must hold one seed per simulation ({self.num}), got {len(seeds)}")
        eps = self.config.reset_noise_scale
        qpos, qvel = np.empty((self.num, self.model.nq)), np.empty((self.num, self.model.nv))
        for i, seed in enumerate(seeds):  # the draws of gymnasium's reset_model, in its order
            rng = np.random.default_rng(seed)
            qpos[i] = self.init_qpos + rng.uniform(low=-eps, high=eps, size=self.model.nq)
            qvel[i] = self.init_qvel + eps * rng.standard_normal(self.model.nv)
        if self.backend == "batch":
            self.batch.reset(stage=mujoco.mjtStage.mjSTAGE_NONE)
            self.qpos[:], self.qvel[:] = qpos, qvel
            self.batch.forward()
        else:
            for i, (model, data) in enumerate(zip(self.models, self.datas)):
                mujoco.mj_resetData(model, data)
                data.qpos[:], data.qvel[:] = qpos[i], qvel[i]
                mujoco.mj_forward(model, data)
            self._gather(np.arange(self.num))
        self.x = self._forward_position()
        self.alive[:] = True
        return self.observations()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Apply ``actions`` (N, act_dim) for one env step (frame_skip MuJoCo steps) to the running simulations.

        Returns observations (N, obs_dim), rewards (N,), terminated (N,) bool and the reward terms plus
        ``x_velocity`` (N,). Simulations whose episode terminated are not stepped any more (their entries
        repeat the last values; :meth:`reset` restarts them).
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num, self.model.nu):
            raise ValueError(f"actions must have shape (N, act_dim) = {(self.num, self.model.nu)}, got {actions.shape}")
        ids = np.flatnonzero(self.alive)
        if self.backend == "batch":
            self.ctrl[ids] = actions[ids]
            self.batch.step(None if len(ids) == self.num else ids, nstep=self.config.frame_skip)
        else:
            if self.pool is None:
                self._step_datas(ids, actions)
            else:  # contiguous slices, one per thread; each writes only its own rows
                list(self.pool.map(lambda part: self._step_datas(part, actions), np.array_split(ids, self.threads)))
        x = self._forward_position()
        velocity = (x - self.x) / self.dt
        self.x = x
        contact = healthy = None
        terminated = np.zeros(self.num, dtype=bool)
        if self.family.robot == "ant":
            contact, healthy = self.cfrc_ext, ant_healthy(self.config, self.qpos, self.qvel)  # type: ignore[arg-type]
            if self.config.terminate_when_unhealthy:  # type: ignore[attr-defined]
                terminated = ~healthy & self.alive
        rewards, terms = task_reward(self.family, self.config, self.values, velocity, actions, contact, healthy)
        self.alive &= ~terminated
        return self.observations(), rewards, terminated, {"x_velocity": velocity, **terms}


class BatchedLocomotion:
    """The batched twin of a locomotion meta-env (see :mod:`metalearn_edu.envs`): T tasks x B episodes as tensors.

    ``reset()`` -> observations (T, B, obs_dim); ``step(actions (T, B, act_dim))`` -> (observations,
    rewards (T, B), terminated (T, B) bool, truncated (T, B) bool), in torch's default float dtype.
    Episode (t, b) is reset with seed ``reset_seeds[t * B + b]``; when not given, the N seeds are drawn as
    ``torch.randint(0, 2**31 - 1, (N,), generator=generator)``.
    """

    def __init__(
        self,
        tasks: Sequence[dict[str, Any]],
        episodes_per_task: int,
        *,
        family: str,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        reset_seeds: Sequence[int] | None = None,
        preset: str = "paper",
        backend: str = "auto",
        nthread: int | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, int) or episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be a positive integer, got {episodes_per_task!r}")
        if len(tasks) == 0:
            raise ValueError("tasks must be a non-empty list of tasks (from sample_tasks)")
        self.shape = (len(tasks), episodes_per_task)
        per_sim = [task for task in tasks for _ in range(episodes_per_task)]
        self.sims = LocomotionSims(family, per_sim, preset=preset, backend=backend, nthread=nthread, **overrides)
        self.observation_space, self.action_space = self.sims.observation_space, self.sims.action_space
        self.horizon = self.sims.config.horizon
        self.device = torch.device(device)
        if reset_seeds is None:
            reset_seeds = torch.randint(0, 2**31 - 1, (self.sims.num,), generator=generator).tolist()
        self.reset_seeds = [int(s) for s in reset_seeds]
        self.steps = 0

    def _tensor(self, array: np.ndarray) -> Tensor:
        out = torch.from_numpy(array).to(dtype=torch.get_default_dtype())
        return out.reshape(*self.shape, *array.shape[1:]).to(self.device)

    def reset(self) -> Tensor:
        """Reset every episode (with its seed from ``reset_seeds``): observations (T, B, obs_dim)."""
        self.steps = 0
        return self._tensor(self.sims.reset(self.reset_seeds))

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if tuple(actions.shape) != (*self.shape, self.sims.model.nu):
            raise ValueError(f"actions must have shape (T, B, act_dim) = {(*self.shape, self.sims.model.nu)}, got {tuple(actions.shape)}")
        flat = actions.detach().reshape(self.sims.num, -1).cpu().numpy()
        obs, rewards, terminated, _ = self.sims.step(flat)
        self.steps += 1
        truncated = ~terminated & (self.steps >= self.horizon)
        as_bool = lambda x: torch.from_numpy(x).reshape(self.shape).to(self.device)  # noqa: E731
        return self._tensor(obs), self._tensor(rewards), as_bool(terminated), as_bool(truncated)


__all__ = ["BatchedLocomotion", "LocomotionSims", "PHYSICS_BACKENDS", "default_threads", "robot_model"]
