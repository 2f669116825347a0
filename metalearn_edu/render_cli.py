"""``metalearn-edu render <env>``: videos of one meta-trained locomotion policy before and after adapting to a goal.

For each goal g (a target velocity v*, or a direction +1/-1) the policy is adapted exactly as the evaluation
protocol adapts it (:func:`metalearn_edu.rl.evaluate.adaptation_path`: B episodes on the goal, one vanilla
policy-gradient step of size 0.1, then 0.05 for every later step, linear baseline), and two episodes are
filmed from the same initial state with the policy's mean action: theta (before) and theta_K (after K steps).

    metalearn-edu render halfcheetah-vel --goal 0.5 --goal 1.5 --out runs/render/vel
    -> goal_0.5_before.gif, goal_0.5_after_1.gif, ..., render.json (files, returns, checkpoint, seed)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

from metalearn_edu.cli import positive_float, positive_int
from metalearn_edu.rl.cli import hyphenated_aliases

TARGETS = ("halfcheetahvel", "halfcheetahdir", "antvel", "antdir")  # the families with a scalar goal
DEFAULT_GOALS = {"velocity": (0.5, 1.5), "direction": (1.0, -1.0)}


def _family_and_config(env: str) -> tuple[Any, Any]:
    from metalearn_edu.envs.locomotion import get_family, make_config

    family = get_family(env.replace("-", ""))
    return family, make_config(family, "paper")


def check_goals(env: str, goals: Sequence[float]) -> list[float]:
    """``goals`` as floats without repeats, or a ValueError naming ``--goal`` and the goals ``env`` accepts."""
    family, config = _family_and_config(env)
    values = list(dict.fromkeys(float(g) for g in goals))
    if not values:
        raise ValueError("--goal must be given at least once")
    if family.task_key == "velocity":
        low, high = config.velocity_range
        bad = [g for g in values if not low <= g <= high]  # NaN fails too
        accepted, meaning = f"in [{low:g}, {high:g}]", "a target velocity v*, in the range its tasks are drawn from"
    else:
        bad = [g for g in values if g not in config.directions]
        accepted, meaning = "one of " + ", ".join(f"{d:+g}" for d in config.directions), "a direction: +1 forward, -1 backward"
    if bad:
        raise ValueError(f"--goal must be {accepted} for {env} ({meaning}), got {', '.join(f'{g:g}' for g in bad)}")
    return values


def protocol_step_size(k: int) -> float:
    """alpha_k of the evaluation protocol (0.1 for the first step, 0.05 after)."""
    from metalearn_edu.rl.evaluate import Protocol

    return Protocol().step_size(k)


def adapt_to_goal(policy: Any, config: Any, task: dict[str, float], *, steps: int, rollouts: int, seed: int,
                  horizon: int | None = None) -> tuple[dict[str, Any], list[float]]:
    """The parameters after ``steps`` adaptation steps of the evaluation protocol on ``task`` (B = ``rollouts``
    episodes per step), and the mean return of the B sampled episodes after 0..``steps`` steps."""
    from metalearn_edu.rl.evaluate import Protocol, adaptation_path, eval_config
    from metalearn_edu.rl.train import make_sampler

    protocol = Protocol(steps=steps, test_tasks=1, rollouts=rollouts, horizon=horizon, seed=seed)
    means, params = [], None
    with make_sampler(eval_config(config, protocol)) as sampler:
        for _, params, batch in adaptation_path(policy, sampler, protocol, [task]):
            means.append(float(batch.episode_returns().mean()))
    return {name: value[0] for name, value in params.items()}, means  # one task: drop the task dim


def render_adaptation(env: str, policy: Any, config: Any, goals: Sequence[float], out: str | Path, *, steps: int = 1,
                      rollouts: int = 20, seed: int = 0, horizon: int | None = None, backend: str = "auto", fps: float = 20.0,
                      width: int = 320, height: int = 240, suffix: str | None = None, checkpoint: str | None = None) -> dict[str, Any]:
    """Write a before and an after-``steps`` video per goal into ``out``, and ``render.json``; returns its record."""
    from metalearn_edu.envs import resolve_env_id
    from metalearn_edu.render import Episode, render_episodes, video_suffix

    started = time.perf_counter()
    family, env_config = _family_and_config(env)
    goals, out, suffix = check_goals(env, goals), Path(out), suffix or video_suffix()
    horizon = horizon or config.horizon or env_config.horizon
    episodes, videos = [], []
    for goal in goals:
        task = {family.task_key: goal}
        adapted, sampled = adapt_to_goal(policy, config, task, steps=steps, rollouts=rollouts, seed=seed, horizon=horizon)
        for k, params, name in ((0, None, "before"), (steps, adapted, f"after_{steps}")):
            episodes.append(Episode(out / f"goal_{goal:g}_{name}{suffix}", params, task))
            videos.append({"goal": goal, "adaptation_steps": k, "sampled_mean_return": sampled[k]})
    rendered = render_episodes(resolve_env_id(family.env_id), policy, episodes, seed=seed, width=width, height=height, fps=fps,
                               backend=backend, max_steps=horizon)
    for video, r in zip(videos, rendered):
        video.update({"file": r.path.name, "return": r.episode_return, "frames": r.frames})
    record = {
        "env": env, "task_key": family.task_key, "goals": goals, "checkpoint": checkpoint, "seed": seed, "steps": steps,
        "rollouts": rollouts, "step_sizes": [protocol_step_size(k) for k in range(steps)], "horizon": horizon, "fps": fps,
        "renderer": rendered[0].renderer, "files": [v["file"] for v in videos], "videos": videos,
        "seconds": round(time.perf_counter() - started, 2),
        "note": "return: the filmed episode (mean action, reset with seed); sampled_mean_return: mean of the B episodes "
                "sampled with the same parameters, the number 'metalearn-edu evaluate' reports",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "render.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def format_summary(record: dict[str, Any]) -> str:
    """The table printed by ``metalearn-edu render``: per goal, the returns before and after adaptation."""
    k = record["steps"]
    lines = [f"{record['env']}: {k} adaptation step{'s' if k > 1 else ''} on {record['rollouts']} rollouts per goal, horizon "
             f"{record['horizon']}, seed {record['seed']}, checkpoint {record['checkpoint']}",
             f"{record['task_key']:>9}  {'filmed return':>22}  {'sampled mean return':>22}  videos",
             f"{'':>9}  {'before':>10} {'after':>11}  {'before':>10} {'after':>11}"]
    for goal in record["goals"]:
        before, after = (v for v in record["videos"] if v["goal"] == goal)
        lines.append(f"{goal:>9g}  {before['return']:>10.1f} {after['return']:>11.1f}  {before['sampled_mean_return']:>10.1f} "
                     f"{after['sampled_mean_return']:>11.1f}  {before['file']}, {after['file']}")
    return "\n".join(lines)


def register(groups: dict) -> None:
    for env in TARGETS:
        _add_render(groups["render"], env)


def _add_render(sub: argparse._SubParsersAction, env: str) -> None:
    from metalearn_edu.checkpoints import RL_ENVS

    family, config = _family_and_config(env)
    shipped = next((name for name in hyphenated_aliases(env) if name in RL_ENVS), None)
    if family.task_key == "velocity":
        goal_help = f"target velocity v* in [{config.velocity_range[0]:g}, {config.velocity_range[1]:g}]"
    else:
        goal_help = "direction, one of " + ", ".join(f"{d:+g}" for d in config.directions)
    p = sub.add_parser(
        env, aliases=hyphenated_aliases(env), help=f"videos of a policy on {env} before and after adapting to goals",
        description="For each --goal, adapt a meta-trained policy to it with K policy-gradient steps on B rollouts (the inner step of "
        "'metalearn-edu evaluate': step size 0.1, then 0.05, linear baseline) and film one episode before and one after adaptation "
        "from the same initial state with the mean action. Writes DIR/goal_G_before.EXT, DIR/goal_G_after_K.EXT (mp4 if imageio-ffmpeg "
        "is installed, else gif) and DIR/render.json, and prints the returns.",
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint.pt or run folder of a meta-RL run on this env (default: "
                   + (f"the shipped PPO-MAML policy of {shipped})" if shipped else "none ships for this env, so it is required)"))
    sign = "+" if family.task_key == "direction" else ""
    default_goals = " and ".join(f"{g:{sign}g}" for g in DEFAULT_GOALS[family.task_key])
    p.add_argument("--goal", type=float, action="append", default=None, help=f"a goal to adapt to, repeatable: {goal_help} (default: {default_goals})")
    p.add_argument("--steps", type=positive_int, default=1, help="K: adaptation steps before the 'after' video (default: 1)")
    p.add_argument("--rollouts", type=positive_int, default=20, help="B: episodes sampled on the goal for each adaptation step (default: 20)")
    p.add_argument("--horizon", type=positive_int, default=None, help=f"H: steps per episode, adaptation and videos (default: the checkpoint's, else {config.horizon})")
    p.add_argument("--backend", default="auto", choices=("auto", "gl", "matplotlib"), help="auto: MuJoCo's OpenGL frames if they start "
                   "(headless: MUJOCO_GL=egl), else matplotlib; gl: OpenGL or fail; matplotlib: stick figures, no OpenGL (default: auto)")
    p.add_argument("--format", default="auto", choices=("auto", "gif", "mp4"), help="video format; auto: mp4 if imageio-ffmpeg is installed, else gif (default: auto)")
    p.add_argument("--fps", type=positive_float, default=20.0, help="frames per second; 20 is real time (one step = 0.05 s) (default: 20)")
    p.add_argument("--width", type=positive_int, default=320, help="frame width in pixels (default: 320)")
    p.add_argument("--height", type=positive_int, default=240, help="frame height in pixels (default: 240)")
    p.add_argument("--seed", type=int, default=0, help="seed of the adaptation rollouts and of the filmed episodes' initial state; "
                   "the same seed gives the same videos (default: 0)")
    p.add_argument("--out", default=f"runs/render/{env}", help=f"output folder DIR for the videos and render.json (default: runs/render/{env})")
    p.set_defaults(func=_render, env=env, shipped=shipped)


def _render(args: argparse.Namespace) -> int:
    from metalearn_edu.envs import resolve_env_id
    from metalearn_edu.render import video_suffix
    from metalearn_edu.rl.train import env_preset, load_rl_checkpoint

    family, _ = _family_and_config(args.env)
    goals = check_goals(args.env, args.goal or DEFAULT_GOALS[family.task_key])  # before loading anything
    if args.checkpoint is None and args.shipped is None:
        raise ValueError(f"--checkpoint is required for {args.env}: no trained policy ships for it")
    if args.checkpoint is None:
        from metalearn_edu.checkpoints import load_rl, rl_path

        (policy, config, _), path = load_rl(args.shipped, "ppo-maml"), str(rl_path(args.shipped, "ppo-maml"))
    else:
        (policy, config, _), path = load_rl_checkpoint(args.checkpoint), str(args.checkpoint)
    if resolve_env_id(env_preset(config.env).env) != resolve_env_id(args.env):
        raise ValueError(f"--checkpoint {path} was trained on {config.env!r}, not {args.env!r}")
    suffix = None if args.format == "auto" else f".{args.format}"
    if suffix == ".mp4" and video_suffix() != ".mp4":
        raise ValueError("--format mp4 needs an mp4 encoder: pip install imageio-ffmpeg, or pass --format gif")
    try:
        record = render_adaptation(args.env, policy, config, goals, args.out, steps=args.steps, rollouts=args.rollouts, seed=args.seed,
                                   horizon=args.horizon, backend=args.backend, fps=args.fps, width=args.width, height=args.height,
                                   suffix=suffix, checkpoint=path)
    except RuntimeError as err:  # --backend gl without a working OpenGL platform
        raise ValueError(f"--backend {args.backend}: {err}; pass --backend matplotlib (or auto) to draw without OpenGL") from err
    print(format_summary(record))
    print(f"wrote {len(record['files'])} videos ({record['renderer']} frames) and render.json to {args.out} in {record['seconds']:.1f} s")
    return 0


__all__ = ["DEFAULT_GOALS", "TARGETS", "adapt_to_goal", "check_goals", "format_summary", "register", "render_adaptation"]
