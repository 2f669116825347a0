"""Gymnasium meta-envs for the locomotion families of :mod:`metalearn_edu.envs.locomotion`.

Each env *is* gymnasium's HalfCheetah-v5 or Ant-v5 (same MuJoCo model, physics, observation and reset
noise; the classes subclass gymnasium's) with the task's reward instead of the default one and a
horizon after which the env truncates itself:

>>> import gymnasium, metalearn_edu.envs
>>> env = gymnasium.make("metalearn_edu/HalfCheetahVel-v0", preset="fast")   # horizon 100
>>> env.unwrapped.set_task(env.unwrapped.sample_tasks(1)[0])                # {"velocity": v*}
>>> obs, info = env.reset(seed=0)                                            # (17,) float64

``info`` of a step holds ``x_velocity`` and the reward terms (``reward_forward``, ``reward_ctrl``, and for
Ant ``reward_contact``, ``reward_survive``). Keyword arguments other than ``preset``, ``task``,
``render_mode``, ``width`` and ``height`` override single config fields (``horizon=50``,
``ctrl_cost_weight=0.1``, ...).
"""

from __future__ import annotations

from typing import Any

# First: quiet MuJoCo's warnings and pick a headless GL platform before anything imports mujoco.
from metalearn_edu.envs import mujoco_quiet  # noqa: F401  # isort: skip

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metalearn_edu.envs.locomotion import (
    FAMILIES,
    Family,
    LocomotionConfig,
    ant_healthy,
    default_task,
    make_config,
    sample_tasks,
    task_reward,
    task_values,
)
from metalearn_edu.envs.navigation import as_rng


def apply_mass_scale(model: mujoco.MjModel, base_mass: np.ndarray, base_inertia: np.ndarray, scale: np.ndarray) -> None:
    """Set body k's mass and inertia to base * scale[k-1] (k = 1..nbody-1) and recompute ``model``'s constants.

    ``mj_setConst`` re-derives what depends on the masses (subtree masses, the inverse weights the
    constraint solver uses), exactly as the compiler does.
    """
    model.body_mass[1:] = base_mass[1:] * scale
    model.body_inertia[1:] = base_inertia[1:] * scale[:, None]
    mujoco.mj_setConst(model, mujoco.MjData(model))


class _MetaLocomotion:
    """Tasks, reward and horizon on top of a gymnasium MuJoCo env (mixed in before it)."""

    family: Family
    config: LocomotionConfig

    @property
    def horizon(self) -> int:
        """Steps per episode: the env truncates itself after ``config.horizon`` steps."""
        return self.config.horizon

    # --- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator | int | None = None) -> list[dict[str, Any]]:
        """``n`` tasks of this family from ``rng`` (default: the env's ``np_random``, set by ``reset(seed=...)``)."""
        return sample_tasks(self.family, self.config, n, as_rng(rng, self.np_random))  # type: ignore[attr-defined]

    def set_task(self, task: dict[str, Any]) -> None:
        """Use ``task`` from the next step on (for the mass family: from now on, the model is rescaled)."""
        self._task_values = task_values(self.family, [task])  # (1, k), validated
        self._task = {key: np.array(value) if isinstance(value, np.ndarray) else value for key, value in task.items()}
        if self.family.task_key == "mass_scale":
            apply_mass_scale(self.model, self._base_mass, self._base_inertia, self._task_values[0])  # type: ignore[attr-defined]

    def get_task(self) -> dict[str, Any]:
        return dict(self._task)

    def _init_meta(self, family_name: str, preset: str, task: dict[str, Any] | None, overrides: dict[str, Any]) -> LocomotionConfig:
        self.family = FAMILIES[family_name]
        self.config = make_config(self.family, preset, **overrides)
        self._steps = 0
        return self.config

    def _finish_init(self, task: dict[str, Any] | None) -> None:
        # Finite bounds (any float32 value) so that gymnasium's check_env does not warn about infinite ones.
        bound = float(np.finfo(np.float32).max)
        self.observation_space = spaces.Box(-bound, bound, shape=self.observation_space.shape, dtype=np.float64)  # type: ignore[has-type]
        # rgb_array only: drawn by metalearn_edu.render (OpenGL if it starts, else matplotlib), so it works headless.
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": self.metadata["render_fps"]}  # type: ignore[has-type]
        self._frames: Any = None
        self._base_mass = self.model.body_mass.copy()  # type: ignore[attr-defined]
        self._base_inertia = self.model.body_inertia.copy()  # type: ignore[attr-defined]
        self.set_task(task if task is not None else default_task(self.family))

    # --- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Gymnasium's reset (qpos = qpos0 + U[-eps, eps], qvel = eps N(0, 1)); ``options={"task": t}`` sets the task first."""
        if options and "task" in options:
            self.set_task(options["task"])
        self._steps = 0
        return super().reset(seed=seed, options=options)  # type: ignore[misc]

    def render(self) -> np.ndarray | None:
        """An RGB frame (height, width, 3) uint8 of the current state when ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":  # type: ignore[attr-defined]
            gym.logger.warn(f"render() needs render_mode='rgb_array' at make time, got {self.render_mode!r}")  # type: ignore[attr-defined]
            return None
        if self._frames is None:
            from metalearn_edu.render import make_renderer

            self._frames = make_renderer(self.model, self.width, self.height)  # type: ignore[attr-defined]
        return self._frames.render(self.data)  # type: ignore[attr-defined]

    def close(self) -> None:
        if getattr(self, "_frames", None) is not None:
            self._frames.close()
            self._frames = None
        super().close()  # type: ignore[misc]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, _, _, _, info = super().step(action)  # type: ignore[misc]  # gymnasium's physics and observation
        contact, healthy = None, None
        if self.family.robot == "ant":
            qpos, qvel = self.data.qpos[None], self.data.qvel[None]  # type: ignore[attr-defined]
            contact, healthy = self.data.cfrc_ext[None], ant_healthy(self.config, qpos, qvel)  # type: ignore[attr-defined,arg-type]
        reward, terms = task_reward(
            self.family, self.config, self._task_values, np.array([info["x_velocity"]]), np.asarray(action)[None],
            contact, healthy,
        )
        terminated = bool(healthy is not None and self.config.terminate_when_unhealthy and not healthy[0])  # type: ignore[attr-defined]
        self._steps += 1
        truncated = self._steps >= self.config.horizon and not terminated
        info.update({name: float(value[0]) for name, value in terms.items()})
        return obs, float(reward[0]), terminated, truncated, info


class _HalfCheetahMeta(_MetaLocomotion, HalfCheetahEnv):
    _family_name = ""

    def __init__(
        self,
        preset: str = "paper",
        task: dict[str, Any] | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        **overrides: Any,
    ) -> None:
        config = self._init_meta(self._family_name, preset, task, overrides)
        HalfCheetahEnv.__init__(
            self,
            frame_skip=config.frame_skip,
            ctrl_cost_weight=config.ctrl_cost_weight,
            reset_noise_scale=config.reset_noise_scale,
            render_mode=render_mode,
            width=width,
            height=height,
        )
        utils.EzPickle.__init__(self, preset, task, render_mode, width, height, **overrides)
        self._finish_init(task)


class _AntMeta(_MetaLocomotion, AntEnv):
    _family_name = ""

    def __init__(
        self,
        preset: str = "paper",
        task: dict[str, Any] | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        **overrides: Any,
    ) -> None:
        config = self._init_meta(self._family_name, preset, task, overrides)
        AntEnv.__init__(
            self,
            frame_skip=config.frame_skip,
            ctrl_cost_weight=config.ctrl_cost_weight,
            contact_cost_weight=config.contact_cost_weight,  # type: ignore[attr-defined]
            healthy_reward=config.healthy_reward,  # type: ignore[attr-defined]
            terminate_when_unhealthy=config.terminate_when_unhealthy,  # type: ignore[attr-defined]
            healthy_z_range=config.healthy_z_range,  # type: ignore[attr-defined]
            contact_force_range=config.contact_force_range,  # type: ignore[attr-defined]
            reset_noise_scale=config.reset_noise_scale,
            render_mode=render_mode,
            width=width,
            height=height,
        )
        utils.EzPickle.__init__(self, preset, task, render_mode, width, height, **overrides)
        self._finish_init(task)


class HalfCheetahVelEnv(_HalfCheetahMeta):
    """HalfCheetah running at a goal velocity v* ~ U[0, 2]: r = -|v - v*| - 0.05 ||a||^2."""

    _family_name = "HalfCheetahVel"


class HalfCheetahDirEnv(_HalfCheetahMeta):
    """HalfCheetah running forward (d = +1) or backward (d = -1): r = d v - 0.05 ||a||^2."""

    _family_name = "HalfCheetahDir"


class HalfCheetahMassEnv(_HalfCheetahMeta):
    """HalfCheetah running forward with each body's mass scaled by s_k ~ logU[1/2, 2]: r = v - 0.05 ||a||^2."""

    _family_name = "HalfCheetahMass"


class AntVelEnv(_AntMeta):
    """Ant at a goal velocity v* ~ U[0, 3]: r = -|v - v*| + 1 - 0.005 ||a||^2 - 0.0005 ||clip(F)||^2 + 0.05."""

    _family_name = "AntVel"


class AntDirEnv(_AntMeta):
    """Ant running forward or backward: r = d v - 0.005 ||a||^2 - 0.0005 ||clip(F)||^2 + 0.05."""

    _family_name = "AntDir"


__all__ = [
    "AntDirEnv",
    "AntVelEnv",
    "HalfCheetahDirEnv",
    "HalfCheetahMassEnv",
    "HalfCheetahVelEnv",
    "apply_mass_scale",
]
