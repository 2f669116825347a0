"""CLI target ``evaluate <env>``: Finn et al.'s adaptation protocol (or a custom one) on checkpoints of any meta-RL target.

Prints a table (or ``--json``), writes ``eval.json`` and ``adaptation.png``; with ``--baselines`` adds the
random-initialisation, pretrained and oracle rows; with ``--diagnose`` a per-step breakdown of each checkpoint.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from metalearn_edu.cli import add_common_arguments, positive_float as _positive_float, positive_int as _positive_int


def add_evaluate(sub: argparse._SubParsersAction, env: str, description: str, aliases: list[str]) -> None:
    """Add ``evaluate <env>`` (also under ``aliases``) to the ``evaluate`` verb's subparsers."""
    from metalearn_edu.rl.evaluate import paper_protocol

    p = sub.add_parser(
        env, aliases=aliases, help=f"return after 0..K adaptation steps on {env}",
        description=f"Adapt checkpoints on a fixed, seeded set of test tasks of {description} with K vanilla policy-gradient "
        "steps (step size 0.1 then 0.05, linear baseline: Finn et al.'s protocol) and report the mean return after each "
        "number of steps with a 95%% CI. Checkpoints of the same algorithm are aggregated as training seeds.",
    )
    paper = paper_protocol(env)
    paper_h = f"H = {paper.horizon}" if paper.horizon is not None else "the env's own horizon"
    p.add_argument("--checkpoint", nargs="+", default=[], help="checkpoint.pt files or run folders (several seeds and algorithms allowed)")
    p.add_argument("--protocol", choices=("paper", "custom"), default="custom",
                   help=f"paper: pin Finn et al. 2017's protocol (40 test tasks, 20 rollouts, steps 0 1 2 3, step sizes 0.1 0.05, {paper_h}); "
                   "a different --steps, --test-tasks, --rollouts, --step-sizes, --gamma, --gae-lambda or --horizon, or any --batch-steps, is then an error. "
                   "custom: those flags, each defaulting to the paper's value, except the horizon (default: custom)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="numbers of adaptation steps to report (default: 0 1 2 3)")
    p.add_argument("--test-tasks", type=_positive_int, default=None, help="N: test tasks (default: 40)")
    p.add_argument("--rollouts", type=_positive_int, default=None, help="B: episodes per task and step (default: 20)")
    p.add_argument("--batch-steps", type=_positive_int, default=None,
                   help="instead of B episodes, whole episodes per task and step until their lengths sum to this many steps, "
                   "rllab's batch_size (Finn et al.'s test scripts use 4000); sampled B at a time (default: off)")
    p.add_argument("--step-sizes", type=_positive_float, nargs="+", default=None, help="first step size, then the one of every later step (default: 0.1 0.05)")
    p.add_argument("--gamma", type=float, default=None,
                   help="discount gamma of the adaptation steps' advantages, in [0, 1]; the reported returns stay undiscounted "
                   "(default: 0.99, Finn et al.'s)")
    p.add_argument("--gae-lambda", type=float, default=None,
                   help="GAE lambda of the adaptation steps' advantages over the linear baseline, in [0, 1] "
                   "(default: 1.0, Finn et al.'s reward-to-go minus baseline)")
    p.add_argument("--horizon", type=_positive_int, default=None, help=f"H: steps per episode (default: the checkpoint's; {paper_h} with --protocol paper)")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the test tasks (default: 0)")
    p.add_argument("--repeats", type=_positive_int, default=1,
                   help="R: read the protocol R times on the same test tasks, with evaluation seeds --seed .. --seed + R - 1, and "
                   "average each checkpoint's returns over the readings; with R > 1 the table adds how far one reading of one "
                   "checkpoint strays (allowed with --protocol paper: each reading is the paper's; default: 1)")
    p.add_argument("--baselines", action="store_true", help="add the random-initialisation baseline, the exact oracle and the pretrained baseline")
    p.add_argument("--pretrained", nargs="+", default=[], help="checkpoints of --algo pretrain runs for the pretrained baseline (read with or without --baselines)")
    p.add_argument("--pretrain-iterations", type=int, default=0,
                   help="with --baselines and no pretrained checkpoint: train pretrain runs of this many iterations into --out (default: 0 = skip)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch CPU threads; 2 evaluates on both cores of a 2-core machine (default: $METALEARN_EDU_THREADS, else 1)")
    p.add_argument("--diagnose", action="store_true",
                   help="also print, for each checkpoint and step, the episode length, the fraction of episodes ended at the goal, "
                   "sigma, how far apart the episodes end, the return and last reward of the mean action and, for navigation, where it heads "
                   "and how far it goes, on the first reading (see metalearn_edu.rl.diagnostics)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_common_arguments(p)
    p.set_defaults(func=_evaluate, env=env)


# evaluate flag -> the Protocol field it sets (--steps sets steps = max(--steps) and the reported steps)
_PROTOCOL_FLAGS = {"--steps": "steps", "--test-tasks": "test_tasks", "--rollouts": "rollouts", "--step-sizes": "step_sizes", "--horizon": "horizon",
                   "--batch-steps": "batch_steps", "--gamma": "gamma", "--gae-lambda": "gae_lambda"}


def evaluation_protocol(args: argparse.Namespace) -> tuple[Any, list[int]]:
    """The Protocol and the reported steps of an ``evaluate`` command line.

    ``--protocol paper`` pins Finn et al.'s values (:func:`paper_protocol`) and rejects any flag that sets
    another value; ``custom`` takes the flags, with the paper's values as defaults (the horizon: the checkpoint's).
    """
    from metalearn_edu.rl.evaluate import Protocol, paper_protocol

    paper = paper_protocol(args.env, task_seed=args.task_seed, seed=args.seed)
    wanted = {"steps": list(range(paper.steps + 1)), "test_tasks": paper.test_tasks, "rollouts": paper.rollouts,
              "step_sizes": list(paper.step_sizes), "horizon": paper.horizon, "batch_steps": None, "gamma": paper.gamma,
              "gae_lambda": paper.gae_lambda}
    given = {flag: getattr(args, dest) for flag, dest in _PROTOCOL_FLAGS.items() if getattr(args, dest) is not None}
    if getattr(args, "protocol", "custom") == "paper":
        conflicts = [f"{flag} {_show(value)} (paper: {_show(wanted[_PROTOCOL_FLAGS[flag]], flag)})" for flag, value in given.items()
                     if value != wanted[_PROTOCOL_FLAGS[flag]]]
        if conflicts:
            raise ValueError(f"--protocol paper pins Finn et al.'s protocol; drop {', '.join(conflicts)} or pass --protocol custom")
        return replace(paper, repeats=args.repeats), wanted["steps"]
    steps = given.get("--steps", wanted["steps"])
    if any(s < 0 for s in steps):
        raise ValueError(f"--steps must be non-negative integers, got {steps}")
    protocol = Protocol(steps=max(steps), test_tasks=given.get("--test-tasks", paper.test_tasks), rollouts=given.get("--rollouts", paper.rollouts),
                        step_sizes=tuple(given.get("--step-sizes", paper.step_sizes)), horizon=given.get("--horizon"),
                        task_seed=args.task_seed, seed=args.seed, batch_steps=given.get("--batch-steps"), gamma=given.get("--gamma", paper.gamma),
                        gae_lambda=given.get("--gae-lambda", paper.gae_lambda), repeats=args.repeats)
    return protocol, steps


def _show(value: Any, flag: str = "") -> str:
    if value is None:  # an unset --horizon is the env's own; an unset --batch-steps means B episodes per step
        return "off" if flag == "--batch-steps" else "(the env's own)"
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _evaluate(args: argparse.Namespace) -> int:
    from metalearn_edu.rl.evaluate import evaluate_checkpoints, evaluate_oracle, evaluate_random_init, finn_reference
    from metalearn_edu.rl.train import RLTrainConfig, load_rl_checkpoint, train_rl
    from metalearn_edu.runtime import resolve_device

    protocol, steps = evaluation_protocol(args)
    args.steps = steps
    if not args.checkpoint and not args.baselines:
        raise ValueError("--checkpoint must name at least one checkpoint (or pass --baselines for the baselines alone)")
    device = resolve_device(args.device, threads=args.threads)
    configs = [load_rl_checkpoint(path, device)[1] for path in args.checkpoint]
    for path, config in zip(args.checkpoint, configs):
        if config.env != args.env and RLTrainConfig.for_env(config.env).env != args.env:
            raise ValueError(f"--checkpoint {path} was trained on {config.env!r}, not {args.env!r}")
    others = [f"{path} ({config.algo})" for path in args.pretrained if (config := load_rl_checkpoint(path, device)[1]).algo != "pretrain"]
    if others:
        raise ValueError(f"--pretrained must name checkpoints of --algo pretrain runs, got {', '.join(others)}")
    reference = configs[0] if configs else RLTrainConfig.for_env(args.env)
    curves = evaluate_checkpoints(args.checkpoint, protocol, device)
    if "pretrain" in curves:
        curves["pretrained"] = curves.pop("pretrain")
    oracle = None
    seeds = max([c.seeds for c in curves.values()] or [1])
    pretrained = list(args.pretrained)  # read whenever given; --baselines adds the rest
    if args.baselines and not pretrained and "pretrained" not in curves and args.pretrain_iterations > 0:
        base = Path(args.out or f"runs/{args.env}")
        for s in range(seeds):
            cfg = RLTrainConfig.for_env(args.env, algo="pretrain", iterations=args.pretrain_iterations, seed=s, device=args.device)
            pretrained.append(str(train_rl(cfg, base / f"pretrain-seed{s}", progress=not args.json).out_dir / "checkpoint.pt"))
    if pretrained:
        curves["pretrained"] = evaluate_checkpoints(pretrained, protocol, device)["pretrain"]
    if args.baselines:
        curves["random init"] = evaluate_random_init(reference, protocol, range(seeds), device)
        oracle = evaluate_oracle(reference, protocol)
    paper = finn_reference(args.env)
    record = {
        "env": args.env, "protocol_name": args.protocol, "protocol": asdict(protocol), "steps": args.steps,
        "methods": {name: _curve_record(c, args.steps) for name, c in curves.items()},
        "oracle": oracle,
    }
    if "pretrained" in curves:  # paired over the same test tasks: the task-to-task spread cancels
        record["minus_pretrained"] = {
            name: dict(zip(("mean", "ci95"), ([v[s] for s in args.steps] for v in c.minus(curves["pretrained"]))))
            for name, c in curves.items() if name != "pretrained"
        }
    if args.baselines and oracle is None:
        record["oracle_note"] = (f"no exact oracle is known for {args.env}"
                                 + (f"; Finn et al. 2017's oracle (a policy trained on each test task) scored {paper['finn2017_oracle']}" if paper else ""))
    if paper is not None:
        record["reference"] = paper
    diagnostics = {}
    if args.diagnose:
        from metalearn_edu.rl.diagnostics import diagnose_checkpoint

        diagnostics = {str(path): diagnose_checkpoint(path, protocol, device) for path in args.checkpoint}
        record["diagnostics"] = {path: [row.as_dict() for row in rows] for path, rows in diagnostics.items()}
        from metalearn_edu.envs import resolve_env_id, short_name

        if short_name(resolve_env_id(args.env)) == "navigation2d":
            record["direction_only"] = _direction_only(reference, protocol)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
        _write_plot(out / "adaptation.png", curves, oracle, args.env, record.get("reference"))
    if args.json:
        print(json.dumps(record))
        return 0
    print(_format_table(record))
    if diagnostics:
        from metalearn_edu.rl.diagnostics import format_diagnostics

        for path, rows in diagnostics.items():
            print("\n" + format_diagnostics(path, rows))
        if "direction_only" in record:
            bound = record["direction_only"]
            print(f"\nknows the goal's direction, not its distance (straight to {bound['distance']:.2f} from the start, then still, "
                  f"no noise; metalearn_edu.rl.navigation_bounds): {bound['mean']:.2f} on these test tasks")
    if args.out:
        print(f"wrote {args.out}/eval.json and adaptation.png")
    return 0


def _curve_record(curve: Any, steps: list[int]) -> dict:
    """One method's entry of ``eval.json``: its :class:`~metalearn_edu.rl.evaluate.Curve` at the reported ``steps``."""
    record = {"mean": [curve.mean[s] for s in steps], "ci95": [curve.ci95[s] for s in steps], "seeds": curve.seeds,
              "per_seed": [[row[s] for s in steps] for row in curve.per_seed], "checkpoints": curve.sources,
              "per_task": [curve.per_task[s] for s in steps],  # (steps, N): mean over seeds of each test task
              "repeats": curve.repeats}
    if curve.reading_sd:  # R > 1 readings
        record["reading_sd"] = [curve.reading_sd[s] for s in steps]  # (steps,)
        record["per_reading"] = [[[r[s] for s in steps] for r in seed] for seed in curve.per_reading]  # (S, R, steps)
    return record


def _direction_only(config: Any, protocol: Any) -> dict:
    """:func:`navigation_bounds.direction_only_bound` on the protocol's test tasks, its distance chosen on 4000 other goals."""
    import numpy as np

    from metalearn_edu.envs.navigation import sample_goals
    from metalearn_edu.rl.evaluate import eval_config, test_tasks
    from metalearn_edu.rl.navigation_bounds import direction_only_bound
    from metalearn_edu.rl.train import make_sampler

    with make_sampler(eval_config(config, protocol), "cpu") as sampler:
        tasks, horizon = test_tasks(sampler, protocol), sampler.horizon
    choice = np.stack([task["goal"] for task in sample_goals(4000, np.random.default_rng([protocol.task_seed, 17]))])
    return direction_only_bound(tasks, horizon, choice)


def _write_plot(path: Path, curves: dict, oracle: dict | None, env: str, reference: dict | None) -> None:
    from metalearn_edu.plotting import use_headless_backend
    from metalearn_edu.rl.evaluate import plot_adaptation

    use_headless_backend()
    import matplotlib.pyplot as plt

    reference = reference or {}
    published = {f"Finn et al. 2017 {name}": reference[f"finn2017_{name}"] for name in ("maml", "pretrained") if f"finn2017_{name}" in reference}
    fig, ax = plt.subplots(figsize=(6, 3.8))
    plot_adaptation(curves, oracle, title=env, ax=ax, reference=published or None,
                    reference_oracle=reference.get("finn2017_oracle") if oracle is None else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _format_table(record: dict) -> str:
    steps = record["steps"]
    p = record["protocol"]
    from metalearn_edu.rl.evaluate import Protocol

    advantages = "".join(f", {name.replace('_', ' ')} {p[name]}" for name in ("gamma", "gae_lambda")
                       if p.get(name, getattr(Protocol, name)) != getattr(Protocol, name))  # shown when not the paper's
    labels = {name: f"{name} ({m['seeds']} seed{'s' if m['seeds'] > 1 else ''}"
              + (f" x {m['repeats']} readings)" if m.get("repeats", 1) > 1 else ")") for name, m in record["methods"].items()}
    w = max([26] + [len(label) + 2 for label in labels.values()])  # the label column
    lines = [f"{record['env']}: mean return after k policy-gradient steps (step sizes {p['step_sizes']}{advantages}), "
             f"{p['test_tasks']} test tasks x " + (f"{p['rollouts']} rollouts" if p.get("batch_steps") is None else
                                                   f"whole episodes to {p['batch_steps']} steps") + "; +- 95% CI",
             f"{'method':<{w}}" + "".join(f"{'k=' + str(s):>10}{'':8}" for s in steps)]
    for name, m in record["methods"].items():
        cells = "".join(f"{v:>10.2f} +- {c:<5.2f}" for v, c in zip(m["mean"], m["ci95"]))
        lines.append(f"{labels[name]:<{w}}{cells}")
        if m.get("reading_sd"):
            lines.append(f"{'  one reading strays (SD)':<{w}}" + "".join(f"{v:>10.2f}{'':8}" for v in m["reading_sd"]))
    if record.get("oracle"):
        lines.append(f"{'oracle (exact)':<{w}}" + "".join(f"{record['oracle']['mean']:>10.2f}{'':8}" for _ in steps))
    for name, diff in record.get("minus_pretrained", {}).items():
        cells = "".join(f"{v:>+10.2f} +- {c:<5.2f}" for v, c in zip(diff["mean"], diff["ci95"]))
        lines.append(f"{name + ' - pretrained':<{w}}{cells}")
    reference = record.get("reference", {})
    for name in ("maml", "pretrained"):
        ref = reference.get(f"finn2017_{name}")
        if ref is not None:
            lines.append(f"{'Finn et al. ' + name:<{w}}" + "".join(f"{ref[s]:>10.2f}{'':8}" if s < len(ref) else f"{'-':>10}{'':8}" for s in steps))
    if "finn2017_oracle" in reference:
        lines.append(f"{'Finn et al. oracle':<{w}}" + "".join(f"{reference['finn2017_oracle']:>10.2f}{'':8}" for _ in steps))
    if "oracle_note" in record:
        lines.append(f"note: {record['oracle_note']}")
    if reference and record.get("protocol_name") != "paper":
        lines.append("note: the Finn et al. rows used their protocol (--protocol paper); this table did not, so compare with care")
    return "\n".join(lines)
