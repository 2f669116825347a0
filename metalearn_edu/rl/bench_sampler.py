"""How fast can episodes be collected? Env steps per second of each sampler backend, same policy, same tasks.

An "env step" is one step of one episode that actually happened (the sum of the batch mask), so the
backends are compared on the useful work they do; the gymnasium vector env also steps (and auto-resets)
environments whose episode has ended, which is part of its cost.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from metalearn_edu.rl.policies import policy_for_spaces
from metalearn_edu.rl.sampler import MetaSampler

BENCH_BACKENDS = ("vector", "loop", "batched")


def time_backend(
    sampler: MetaSampler, policy: torch.nn.Module, tasks: list[Any], episodes: int, horizon: int, seed: int, repeats: int
) -> dict[str, float]:
    """Best wall time over ``repeats`` calls of ``sampler.sample`` (after a short warm-up that builds the env copies)."""
    sampler.sample(policy, tasks, episodes, seed=seed, horizon=min(horizon, 2))
    best, steps = float("inf"), 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        batch = sampler.sample(policy, tasks, episodes, seed=seed, horizon=horizon)  # the same work each time
        elapsed = time.perf_counter() - start
        if elapsed < best:
            best, steps = elapsed, float(batch.mask.sum())
    return {"seconds": best, "env_steps": steps, "env_steps_per_s": steps / best}


def bench_sampler(
    env: str,
    *,
    tasks: int = 20,
    episodes: int = 20,
    horizon: int | None = None,
    backends: tuple[str, ...] = BENCH_BACKENDS,
    repeats: int = 3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Env steps per second of each backend in ``backends`` (those the env supports), and the speed-up
    of the batched backend over the gymnasium vector one. One 64-64 tanh policy serves every backend."""
    for name, value in (("--tasks", tasks), ("--episodes", episodes), ("--repeats", repeats)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
        raise ValueError(f"--horizon must be a positive integer, got {horizon!r}")
    unknown = [b for b in backends if b not in BENCH_BACKENDS]
    if unknown or not backends:
        raise ValueError(f"--backends must be a comma-separated subset of {', '.join(BENCH_BACKENDS)}, got {','.join(backends)!r}")
    with MetaSampler(env, device=device, horizon=horizon) as reference:
        horizon, has_twin, env_id = reference.horizon, reference.backend == "batched", reference.env_id
        torch.manual_seed(seed)
        policy = policy_for_spaces(reference.observation_space, reference.action_space).to(device)
        task_list = reference.sample_tasks(tasks, rng=seed)
    results: dict[str, Any] = {
        "env": env,
        "env_id": env_id,
        "tasks": tasks,
        "episodes": episodes,
        "horizon": horizon,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "policy": f"{type(policy).__name__} 64-64 tanh",
        "backends": {},
    }
    for backend in backends:
        if backend == "batched" and not has_twin:
            results["backends"][backend] = None  # this env has no batched twin
            continue
        with MetaSampler(env, backend=backend, device=device, horizon=horizon) as sampler:
            results["backends"][backend] = time_backend(sampler, policy, task_list, episodes, horizon, seed, repeats)
    timed = results["backends"]
    if timed.get("batched") and timed.get("vector"):
        results["speedup_batched_vs_vector"] = timed["batched"]["env_steps_per_s"] / timed["vector"]["env_steps_per_s"]
    return results


def format_table(results: dict[str, Any]) -> str:
    """The results of :func:`bench_sampler` as a text table."""
    lines = [
        f"bench sampler: {results['env']} ({results['env_id']}), {results['tasks']} tasks x {results['episodes']} episodes"
        f" x {results['horizon']} steps, {results['policy']}, {results['device']}, {results['threads']} thread(s)",
        f"{'backend':<10}{'seconds':>10}{'env steps':>12}{'env steps/s':>14}",
    ]
    for backend, row in results["backends"].items():
        if row is None:
            lines.append(f"{backend:<10}{'(no batched implementation for this env)':>46}")
        else:
            lines.append(f"{backend:<10}{row['seconds']:>10.3f}{row['env_steps']:>12.0f}{row['env_steps_per_s']:>14,.0f}")
    if "speedup_batched_vs_vector" in results:
        lines.append(f"batched / vector: {results['speedup_batched_vs_vector']:.1f}x more env steps per second")
    return "\n".join(lines)
