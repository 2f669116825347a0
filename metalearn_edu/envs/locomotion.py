"""Locomotion task families (Finn et al. 2017, section 5.3): configs, task sampling, rewards, registration.

This module is pure NumPy: it says *what* each task family is. The gymnasium envs that simulate it live in
:mod:`metalearn_edu.envs.locomotion_envs` and the fast many-environment sampler in
:mod:`metalearn_edu.envs.mujoco_sampler`; both compute rewards with :func:`task_reward` below, so the two
agree exactly. Importing this module does not import MuJoCo.

Notation: v is the forward velocity as gymnasium computes it, (x_after - x_before) / dt with
dt = frame_skip * timestep = 5 * 0.01 s (x = qpos[0] for HalfCheetah, the torso's x for Ant); a is the
action the env was given (not clipped: MuJoCo clamps the controls to [-1, 1] itself).

=================  ====================  ================================================================
family             task                  reward r_t
=================  ====================  ================================================================
HalfCheetahVel     v* ~ U[0, 2]          -|v - v*| - c_ctrl ||a||^2
HalfCheetahDir     d ~ U{-1, +1}         d v - c_ctrl ||a||^2
HalfCheetahMass    s_k ~ logU[1/2, 2]    v - c_ctrl ||a||^2, body k's mass and inertia multiplied by s_k
AntVel             v* ~ U[0, 3]          -|v - v*| + b_vel - c_ctrl ||a||^2 - c_cont ||clip(F)||^2 + h 1[healthy]
AntDir             d ~ U{-1, +1}         d v - c_ctrl ||a||^2 - c_cont ||clip(F)||^2 + h 1[healthy]
=================  ====================  ================================================================

with c_ctrl = 0.05 for HalfCheetah (Finn et al.; gymnasium's default is 0.1) and, for Ant, the constants of
the rllab ant used by Finn et al. and pytorch-maml-rl: c_ctrl = 0.5e-2, c_cont = 0.5e-3 on the external
contact forces F = cfrc_ext clipped to [-1, 1], survive bonus h = 0.05, velocity offset b_vel = 1.
Ant episodes terminate when the torso height leaves [0.2, 1.0] (as in rllab and gymnasium's Ant-v5).
Every constant is a field of the family's config dataclass; presets: ``paper`` (horizon 200, Finn et
al.'s protocol) and ``fast`` (horizon 100).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import numpy as np

NAMESPACE = "metalearn_edu"
PRESETS: dict[str, dict[str, Any]] = {"paper": {"horizon": 200}, "fast": {"horizon": 100}}


# --- configs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocomotionConfig:
    """What every family shares. ``horizon``: steps before truncation; ``frame_skip``: MuJoCo steps of
    0.01 s per env step; ``reset_noise_scale`` eps: qpos = qpos0 + U[-eps, eps], qvel = eps N(0, 1)."""

    horizon: int = 200
    frame_skip: int = 5
    ctrl_cost_weight: float = 0.05
    reset_noise_scale: float = 0.1


@dataclass(frozen=True)
class HalfCheetahVelConfig(LocomotionConfig):
    velocity_range: tuple[float, float] = (0.0, 2.0)


@dataclass(frozen=True)
class HalfCheetahDirConfig(LocomotionConfig):
    directions: tuple[float, ...] = (-1.0, 1.0)


@dataclass(frozen=True)
class HalfCheetahMassConfig(LocomotionConfig):
    """Each of the 7 bodies' mass (and inertia) is scaled by s_k, log s_k ~ U[log lo, log hi]."""

    mass_scale_range: tuple[float, float] = (0.5, 2.0)


@dataclass(frozen=True)
class AntConfig(LocomotionConfig):
    ctrl_cost_weight: float = 0.005
    contact_cost_weight: float = 0.0005
    contact_force_range: tuple[float, float] = (-1.0, 1.0)
    healthy_reward: float = 0.05
    healthy_z_range: tuple[float, float] = (0.2, 1.0)
    terminate_when_unhealthy: bool = True


@dataclass(frozen=True)
class AntVelConfig(AntConfig):
    velocity_range: tuple[float, float] = (0.0, 3.0)
    velocity_offset: float = 1.0


@dataclass(frozen=True)
class AntDirConfig(AntConfig):
    directions: tuple[float, ...] = (-1.0, 1.0)


# --- families ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One task family: its robot (gymnasium model), what a task is, and its config class.

    A task is a dict ``{task_key: value}`` (a float, or an array for ``mass_scale``), as in
    pytorch-maml-rl; :func:`task_values` turns T tasks into a (T, k) float64 array.
    """

    name: str
    robot: str  # "half_cheetah" or "ant"
    task_key: str  # "velocity", "direction" or "mass_scale"
    config_cls: type[LocomotionConfig]

    @property
    def env_id(self) -> str:
        return f"{NAMESPACE}/{self.name}-v0"


NUM_CHEETAH_BODIES = 7  # torso, bthigh, bshin, bfoot, fthigh, fshin, ffoot (the world body is not scaled)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("HalfCheetahVel", "half_cheetah", "velocity", HalfCheetahVelConfig),
        Family("HalfCheetahDir", "half_cheetah", "direction", HalfCheetahDirConfig),
        Family("HalfCheetahMass", "half_cheetah", "mass_scale", HalfCheetahMassConfig),
        Family("AntVel", "ant", "velocity", AntVelConfig),
        Family("AntDir", "ant", "direction", AntDirConfig),
    )
}


def get_family(name: str) -> Family:
    """The family for ``name``: ``"HalfCheetahVel"``, its env id, or its short name ``"halfcheetahvel"``."""
    key = str(name).split("/")[-1].rsplit("-v", 1)[0].lower()
    for family in FAMILIES.values():
        if family.name.lower() == key:
            return family
    raise ValueError(f"family must be one of {sorted(FAMILIES)} (or their env ids), got {name!r}")


def make_config(family: Family, preset: str = "paper", **overrides: Any) -> LocomotionConfig:
    """``family``'s config for ``preset`` ('paper' or 'fast'), with ``overrides`` of single fields."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    names = {f.name for f in fields(family.config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {family.name} config field(s) {unknown}; accepted: {sorted(names)}")
    config = replace(family.config_cls(**PRESETS[preset]), **overrides)
    if isinstance(config.horizon, bool) or not isinstance(config.horizon, (int, np.integer)) or config.horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {config.horizon!r}")
    if isinstance(config.frame_skip, bool) or not isinstance(config.frame_skip, (int, np.integer)) or config.frame_skip < 1:
        raise ValueError(f"frame_skip must be a positive integer, got {config.frame_skip!r}")
    return config


# --- tasks ---------------------------------------------------------------------------------------
def sample_tasks(family: Family, config: LocomotionConfig, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` tasks of ``family`` drawn from ``rng`` (see the table in the module docstring)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of tasks), got {n!r}")
    n = int(n)
    if family.task_key == "velocity":
        low, high = config.velocity_range  # type: ignore[attr-defined]
        return [{"velocity": float(v)} for v in rng.uniform(low, high, size=n)]
    if family.task_key == "direction":
        choices = np.asarray(config.directions, dtype=np.float64)  # type: ignore[attr-defined]
        return [{"direction": float(d)} for d in rng.choice(choices, size=n)]
    low, high = config.mass_scale_range  # type: ignore[attr-defined]
    scales = np.exp(rng.uniform(np.log(low), np.log(high), size=(n, NUM_CHEETAH_BODIES)))
    return [{"mass_scale": s} for s in scales]


def default_task(family: Family) -> dict[str, Any]:
    """The task an env has before ``set_task``: v* = 1, d = +1, or unscaled masses."""
    if family.task_key == "mass_scale":
        return {"mass_scale": np.ones(NUM_CHEETAH_BODIES)}
    return {family.task_key: 1.0}


def task_values(family: Family, tasks: Sequence[dict[str, Any]]) -> np.ndarray:
    """The tasks' parameters as a float64 array (T, k): k = 1 (v* or d) or 7 (mass scales). Validates."""
    width = NUM_CHEETAH_BODIES if family.task_key == "mass_scale" else 1
    rows = []
    for task in tasks:
        if not isinstance(task, dict) or family.task_key not in task:
            raise ValueError(f"task must be a dict with a {family.task_key!r} entry for {family.name}, got {task!r}")
        row = np.asarray(task[family.task_key], dtype=np.float64).reshape(-1)
        if row.shape != (width,) or not np.all(np.isfinite(row)):
            raise ValueError(f"task[{family.task_key!r}] must be {width} finite number(s), got {task[family.task_key]!r}")
        if family.task_key == "mass_scale" and np.any(row <= 0):
            raise ValueError(f"task['mass_scale'] must be positive, got {row}")
        rows.append(row)
    if not rows:
        raise ValueError("tasks must be a non-empty list")
    return np.stack(rows)


# --- rewards -------------------------------------------------------------------------------------
def task_reward(
    family: Family,
    config: LocomotionConfig,
    values: np.ndarray,
    x_velocity: np.ndarray,
    action: np.ndarray,
    contact_forces: np.ndarray | None = None,
    healthy: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rewards of N transitions, and their terms (the table in the module docstring).

    Args:
        values: (N, k) task parameters of each transition (:func:`task_values`).
        x_velocity: (N,) forward velocity v.
        action: (N, act_dim) the actions given to the env (float64 arithmetic is used).
        contact_forces: (N, nbody, 6) raw ``cfrc_ext`` after the step (Ant only; clipped here).
        healthy: (N,) bool, torso height in ``healthy_z_range`` and the state finite (Ant only).

    Returns:
        (reward (N,), terms) with terms ``reward_forward``, ``reward_ctrl`` and, for Ant, ``reward_contact``
        and ``reward_survive``: reward = the sum of the terms.
    """
    v = np.asarray(x_velocity, dtype=np.float64)
    a = np.asarray(action, dtype=np.float64).reshape(len(v), -1)
    if family.task_key == "velocity":
        forward = -np.abs(v - values[:, 0]) + getattr(config, "velocity_offset", 0.0)
    elif family.task_key == "direction":
        forward = values[:, 0] * v
    else:
        forward = v
    terms = {"reward_forward": forward, "reward_ctrl": -config.ctrl_cost_weight * np.sum(np.square(a), axis=1)}
    if family.robot == "ant":
        if contact_forces is None or healthy is None:
            raise ValueError("contact_forces and healthy are required for the Ant families")
        low, high = config.contact_force_range  # type: ignore[attr-defined]
        clipped = np.clip(np.asarray(contact_forces, dtype=np.float64), low, high).reshape(len(v), -1)
        terms["reward_contact"] = -config.contact_cost_weight * np.sum(np.square(clipped), axis=1)  # type: ignore[attr-defined]
        terms["reward_survive"] = config.healthy_reward * np.asarray(healthy, dtype=np.float64)  # type: ignore[attr-defined]
    reward = terms["reward_forward"] + terms["reward_ctrl"]
    if family.robot == "ant":
        reward = reward + terms["reward_contact"] + terms["reward_survive"]
    return reward, terms


def ant_healthy(config: AntConfig, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """(N,) bool: the state (N, nq), (N, nv) is finite and the torso height qpos[:, 2] is in range."""
    low, high = config.healthy_z_range
    finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
    return finite & (qpos[:, 2] >= low) & (qpos[:, 2] <= high)


# --- registration --------------------------------------------------------------------------------
def batched_twin(*args: Any, **kwargs: Any) -> Any:
    """The batched twin factory (imports MuJoCo on first use): :class:`~metalearn_edu.envs.mujoco_sampler.BatchedLocomotion`."""
    from metalearn_edu.envs.mujoco_sampler import BatchedLocomotion

    return BatchedLocomotion(*args, **kwargs)


def register_locomotion() -> None:
    """Register ``metalearn_edu/<Family>-v0`` for every family with gymnasium, and its batched twin for the
    sampler (idempotent; imports no MuJoCo until an env is made).

    ``gymnasium.make(id, preset="fast", horizon=..., ...)`` passes the preset and config overrides on; so
    does ``MetaSampler(id, env_kwargs={"preset": "fast"})`` to both the gymnasium env and the twin.
    """
    import gymnasium as gym

    from metalearn_edu.envs import register_batched

    for family in FAMILIES.values():
        if family.env_id not in gym.registry:
            gym.register(
                id=family.env_id,
                entry_point=f"metalearn_edu.envs.locomotion_envs:{family.name}Env",
                kwargs={"preset": "paper"},
            )
        register_batched(family.env_id, batched_twin, family=family.name)


LOCOMOTION_ENV_IDS: tuple[str, ...] = tuple(f.env_id for f in FAMILIES.values())

__all__ = [
    "AntConfig",
    "AntDirConfig",
    "AntVelConfig",
    "FAMILIES",
    "Family",
    "HalfCheetahDirConfig",
    "HalfCheetahMassConfig",
    "HalfCheetahVelConfig",
    "LOCOMOTION_ENV_IDS",
    "LocomotionConfig",
    "PRESETS",
    "ant_healthy",
    "default_task",
    "get_family",
    "make_config",
    "register_locomotion",
    "sample_tasks",
    "task_reward",
    "task_values",
]
