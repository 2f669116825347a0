"""``metalearn-edu bench sampler --env halfcheetah|ant``: how close the locomotion sampler gets to the physics.

Three measurements in one run, on the same MuJoCo model, in env steps per second (one env step =
``frame_skip`` = 5 MuJoCo steps of 0.01 s):

* ``raw_mj_step``: the ceiling, ``mujoco.mj_step(model, data, nstep=5)`` in a Python loop on one MjData
  with controls set from random actions; no observation, reward or policy.
* ``sync_vector_env``: gymnasium's ``SyncVectorEnv`` of 8 copies of gymnasium's own HalfCheetah-v5 /
  Ant-v5 (``max_episode_steps`` = the horizon), stepped with the same policy (one forward for the 8
  observations per step): the usual way to collect episodes. (Plain gymnasium envs rather than our
  meta-envs, whose task reward costs a few microseconds more per step: the conservative baseline.)
* ``ours``: ``MetaSampler(env, backend="batched")``: T x B simulations stepped together by
  :mod:`metalearn_edu.envs.mujoco_sampler`, one policy forward for all of them per step.

Each measurement is repeated ``repeats`` times, round-robin (so that a busy moment of a shared machine
does not hit one of them only), and the best run is reported. Also reported: ``batch_physics`` (``mujoco.batch.Batch.step`` alone on T x B simulations: the physics
cost of our sampler without observations, rewards or policy) and the ratios ours / sync and ours / raw.
The policy is a 64-64 tanh Gaussian MLP (ProMP's), one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

# First: quiet MuJoCo's warnings and pick a headless GL platform before anything imports mujoco.
from metalearn_edu.envs import mujoco_quiet  # noqa: F401  # isort: skip

import gymnasium as gym
import mujoco
import numpy as np
import torch

ROBOT_ENVS = {"halfcheetah": "metalearn_edu/HalfCheetahVel-v0", "ant": "metalearn_edu/AntVel-v0"}
GYMNASIUM_ENVS = {"halfcheetah": ("HalfCheetah-v5", {"ctrl_cost_weight": 0.05}), "ant": ("Ant-v5", {})}
SYNC_COPIES = 8


def handles(env: str) -> bool:
    """Whether ``bench sampler --env ENV`` is this benchmark's (a robot name: 'halfcheetah' or 'ant')."""
    return isinstance(env, str) and env.lower() in ROBOT_ENVS


def _rate(env_steps: float, seconds: float) -> dict[str, float]:
    return {"seconds": seconds, "env_steps": float(env_steps), "env_steps_per_s": env_steps / seconds}


def time_raw_mj_step(model: mujoco.MjModel, frame_skip: int, env_steps: int, seed: int) -> dict[str, float]:
    """``env_steps`` iterations of ``ctrl = a_k; mj_step(model, data, nstep=frame_skip)`` on one MjData."""
    data = mujoco.MjData(model)
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(env_steps, model.nu))
    start = time.perf_counter()
    for action in actions:
        data.ctrl[:] = action
        mujoco.mj_step(model, data, nstep=frame_skip)
    return _rate(env_steps, time.perf_counter() - start)


def time_batch_physics(model: mujoco.MjModel, frame_skip: int, nsim: int, steps: int, nthread: int, seed: int) -> dict[str, float]:
    """``steps`` calls of ``Batch.step(nstep=frame_skip)`` on ``nsim`` simulations with random controls."""
    from mujoco import batch as mjbatch

    batch = mjbatch.Batch(model, nsim=nsim, nthread=nthread)
    batch.reset()
    ctrl = batch.bind("ctrl")
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(steps, nsim, model.nu))
    start = time.perf_counter()
    for action in actions:
        ctrl[:] = action
        batch.step(nstep=frame_skip)
    return _rate(steps * nsim, time.perf_counter() - start)


@torch.no_grad()
def time_sync_vector_env(robot: str, policy: Any, horizon: int, vector_steps: int, seed: int) -> dict[str, float]:
    """``SyncVectorEnv`` of 8 gymnasium envs of ``robot`` stepped ``vector_steps`` times with ``policy`` (auto-reset included)."""
    env_id, kwargs = GYMNASIUM_ENVS[robot]
    make = lambda: gym.make(env_id, max_episode_steps=horizon, disable_env_checker=True, **kwargs)  # noqa: E731
    envs = gym.vector.SyncVectorEnv([make] * SYNC_COPIES)
    generator = torch.Generator().manual_seed(seed)
    obs, _ = envs.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(vector_steps):
        action = policy.act(None, torch.as_tensor(obs, dtype=torch.get_default_dtype()), generator).actions
        obs, *_ = envs.step(action.numpy())
    seconds = time.perf_counter() - start
    envs.close()
    return _rate(vector_steps * SYNC_COPIES, seconds)


def bench_mujoco(
    robot: str,
    *,
    tasks: int = 20,
    episodes: int = 20,
    horizon: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    nthread: int | None = None,
    budget: int | None = None,
) -> dict[str, Any]:
    """Run the three measurements of the module docstring for ``robot`` ('halfcheetah' or 'ant').

    ``budget``: env steps per timed run of the raw, batch-physics and SyncVectorEnv measurements
    (default 20000 for HalfCheetah, 4000 for Ant: about a second each); ours samples T x B x H steps.
    """
    from metalearn_edu.envs.mujoco_sampler import default_threads, robot_model
    from metalearn_edu.rl.policies import GaussianMLPPolicy
    from metalearn_edu.rl.sampler import MetaSampler

    if not handles(robot):
        raise ValueError(f"--env must be one of {sorted(ROBOT_ENVS)} for this benchmark, got {robot!r}")
    for name, value in (("--tasks", tasks), ("--episodes", episodes), ("--repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    robot = robot.lower()
    env_id = ROBOT_ENVS[robot]
    preset, overrides = "fast", ({} if horizon is None else {"horizon": int(horizon)})
    nthread = default_threads() if nthread is None else nthread
    torch.set_num_threads(1)
    model, observation_space, action_space = robot_model("ant" if robot == "ant" else "half_cheetah")
    frame_skip = 5
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(observation_space.shape[0], action_space.shape[0], (64, 64), "tanh")
    results: dict[str, Any] = {
        "env": robot, "env_id": env_id, "tasks": tasks, "episodes": episodes, "frame_skip": frame_skip,
        "policy": "GaussianMLPPolicy 64-64 tanh", "torch_threads": 1, "mujoco_threads": nthread,
        "cpus": os.cpu_count(), "mujoco": mujoco.__version__, "gymnasium": gym.__version__,
    }
    if budget is None:
        budget = 20_000 if robot == "halfcheetah" else 4_000
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < SYNC_COPIES:
        raise ValueError(f"budget must be an integer >= {SYNC_COPIES} (env steps per timed run), got {budget!r}")
    nsim = tasks * episodes
    runs: dict[str, list[dict[str, float]]] = {"raw_mj_step": [], "batch_physics": [], "sync_vector_env": [], "ours": []}
    with MetaSampler(env_id, backend="batched", env_kwargs={"preset": preset, **overrides}) as sampler:
        horizon = results["horizon"] = sampler.horizon
        task_list = sampler.sample_tasks(tasks, rng=seed)
        sampler.sample(policy, task_list, episodes, seed=seed, horizon=2)  # warm-up: builds everything once
        for _ in range(repeats):
            runs["raw_mj_step"].append(time_raw_mj_step(model, frame_skip, budget, seed))
            runs["batch_physics"].append(time_batch_physics(model, frame_skip, nsim, max(1, budget // nsim), nthread, seed))
            runs["sync_vector_env"].append(time_sync_vector_env(robot, policy, horizon, budget // SYNC_COPIES, seed))
            start = time.perf_counter()
            batch = sampler.sample(policy, task_list, episodes, seed=seed)
            runs["ours"].append(_rate(float(batch.mask.sum()), time.perf_counter() - start))
    results.update({name: max(rows, key=lambda r: r["env_steps_per_s"]) for name, rows in runs.items()})
    best = results["ours"]
    ours = best["env_steps_per_s"]
    results["ours_vs_sync_vector_env"] = ours / results["sync_vector_env"]["env_steps_per_s"]
    results["ours_vs_raw_mj_step"] = ours / results["raw_mj_step"]["env_steps_per_s"]
    return results


def format_table(results: dict[str, Any]) -> str:
    """The results of :func:`bench_mujoco` as a text table."""
    lines = [
        f"bench sampler: {results['env']} ({results['env_id']}), frame skip {results['frame_skip']}, "
        f"ours: {results['tasks']} tasks x {results['episodes']} episodes x {results['horizon']} steps, "
        f"{results['policy']}, mujoco {results['mujoco']}, {results['mujoco_threads']} MuJoCo thread(s)",
        f"{'measurement':<22}{'seconds':>10}{'env steps':>12}{'env steps/s':>14}",
    ]
    for name in ("raw_mj_step", "batch_physics", "sync_vector_env", "ours"):
        row = results[name]
        lines.append(f"{name:<22}{row['seconds']:>10.3f}{row['env_steps']:>12.0f}{row['env_steps_per_s']:>14,.0f}")
    lines.append(
        f"ours / SyncVectorEnv({SYNC_COPIES}): {results['ours_vs_sync_vector_env']:.2f}x   "
        f"ours / raw mj_step: {results['ours_vs_raw_mj_step']:.0%}"
    )
    return "\n".join(lines)


def run_bench_mujoco(args: argparse.Namespace) -> int:
    """The ``bench sampler`` entry point for ``--env halfcheetah|ant`` (uses --tasks, --episodes, --horizon,
    --repeats, --seed, --json, --out of the ``bench sampler`` parser)."""
    results = bench_mujoco(
        args.env, tasks=args.tasks, episodes=args.episodes, horizon=args.horizon, repeats=args.repeats, seed=args.seed
    )
    print(json.dumps(results) if args.json else format_table(results))
    if getattr(args, "out", None):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_sampler.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


__all__ = ["ROBOT_ENVS", "bench_mujoco", "format_table", "handles", "run_bench_mujoco"]
