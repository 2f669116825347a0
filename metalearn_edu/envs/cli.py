"""``metalearn-edu bench sampler``: env steps per second of the sampler backends on a meta-environment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metalearn_edu.cli import add_common_arguments

DESCRIPTION = (
    "Measure how many environment steps per second the episode sampler collects with each backend "
    "(gymnasium SyncVectorEnv, a plain loop over gymnasium envs, and the batched tensor implementation "
    "when the env has one), with the same 64-64 tanh policy and tasks, and the batched/vector speed-up."
)


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``bench sampler`` to the ``bench`` verb."""
    parser = groups["bench"].add_parser("sampler", help="env steps per second of the meta-RL sampler backends", description=DESCRIPTION)
    parser.add_argument(
        "--env",
        default="navigation2d",
        help="meta-environment: the short name of a registered metalearn_edu env (navigation2d, bandit5, bandit10, ...) "
        "or a gymnasium id; 'halfcheetah' or 'ant' compares raw mj_step, SyncVectorEnv(8) and the MuJoCo sampler "
        "(default: navigation2d)",
    )
    parser.add_argument("--tasks", type=int, default=20, help="number of tasks T (default: 20)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task B (default: 20)")
    parser.add_argument("--horizon", type=int, default=None, help="steps per episode H (default: the env's horizon, 100 for navigation2d)")
    parser.add_argument("--backends", default="vector,loop,batched", help="comma-separated backends to time (default: vector,loop,batched)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backend, the best is reported (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_common_arguments(parser)
    parser.set_defaults(func=run_bench_sampler)


def run_bench_sampler(args: argparse.Namespace) -> int:
    from metalearn_edu.envs import resolve_env_id
    from metalearn_edu.rl.bench_sampler import bench_sampler, format_table
    from metalearn_edu.runtime import resolve_device, seed_everything

    if args.env.lower() in ("halfcheetah", "ant"):  # MuJoCo: raw mj_step vs SyncVectorEnv(8) vs our sampler
        from metalearn_edu.envs.bench_mujoco import run_bench_mujoco

        return run_bench_mujoco(args)
    resolve_env_id(args.env, argument="--env")  # a clear error before anything is built
    device = resolve_device(args.device)
    seed_everything(args.seed)
    backends = tuple(name.strip() for name in args.backends.split(",") if name.strip())
    results = bench_sampler(
        args.env,
        tasks=args.tasks,
        episodes=args.episodes,
        horizon=args.horizon,
        backends=backends,
        repeats=args.repeats,
        seed=args.seed,
        device=device,
    )
    print(json.dumps(results) if args.json else format_table(results))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_sampler.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0
