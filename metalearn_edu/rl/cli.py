"""CLI targets for meta-RL: ``train <env>`` and ``evaluate <env>`` for every trainable meta-environment.

The targets are the presets of :mod:`metalearn_edu.rl.train` (navigation2d, bandit5, bandit10, and any
added with ``register_env_preset``) plus every other registered ``metalearn_edu/*`` meta-environment.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from metalearn_edu.cli import add_common_arguments, positive_float as _positive_float, positive_int as _positive_int

ALGO_HELP = ("maml-vpg (Adam through the inner step), maml-trpo (Finn et al.), ppo-maml (ProMP), "
             "ppo-inner (PPO adaptation, first-order outer update), pretrain (multi-task baseline, no adaptation in training)")


def _targets() -> dict[str, str]:
    """CLI target name -> one-line description, presets first."""
    from metalearn_edu.envs import meta_env_ids, short_name
    from metalearn_edu.rl.train import ENV_PRESETS, env_preset

    targets = {name: preset.description or preset.env for name, preset in ENV_PRESETS.items()}
    covered = {env_preset(name).env for name in targets}
    for env_id in meta_env_ids():
        if env_id not in covered and short_name(env_id) not in targets:
            targets[short_name(env_id)] = f"the meta-environment {env_id}"
    return targets


def hyphenated_aliases(name: str) -> list[str]:
    """The hyphenated spelling of a robot task (``halfcheetah-vel`` for ``halfcheetahvel``), as the course writes it."""
    for robot in ("halfcheetah", "ant"):
        if name.startswith(robot) and len(name) > len(robot):
            return [f"{robot}-{name[len(robot):]}"]
    return []


def _config_defaults(env: str) -> dict[str, Any]:
    from metalearn_edu.rl.train import RLTrainConfig

    return asdict(RLTrainConfig.for_env(env))


def register(groups: dict) -> None:
    for name, description in _targets().items():
        _add_train(groups["train"], name, description)
        _add_evaluate(groups["evaluate"], name, description)


def _add_train(sub: argparse._SubParsersAction, env: str, description: str) -> None:
    d = _config_defaults(env)
    p = sub.add_parser(
        env, aliases=hyphenated_aliases(env), help=f"meta-train a policy on {env}",
        description=f"Meta-train a policy on {description}. Writes config.json, metrics.jsonl (pre- and post-update "
        "return, KL, time per iteration), checkpoint.pt and curve.png into --out; rerunning the same command resumes "
        "from the checkpoint. Defaults: ProMP / Finn et al. sizes for a laptop CPU.",
    )
    p.add_argument("--algo", default=d["algo"], help=f"{ALGO_HELP} (default: {d['algo']})",
                   choices=("maml-vpg", "maml-trpo", "ppo-maml", "ppo-inner", "pretrain"))
    options = [
        ("--iterations", _positive_int, "meta-iterations"),
        ("--meta-batch", _positive_int, "T: tasks per meta-iteration"),
        ("--rollouts", _positive_int, "B: episodes per task, before and after the inner step"),
        ("--horizon", _positive_int, "H: steps per episode (default: the env's own)"),
        ("--inner-lr", _positive_float, "alpha: inner policy-gradient step size (per-step-averaged surrogate)"),
        ("--inner-steps", _positive_int, "K: inner steps during meta-training, steps 2..K on fresh episodes (as at evaluation)"),
        ("--inner-lr-later", _positive_float, "alpha of inner steps 2..K (default: inner-lr / 2, i.e. 0.1 then 0.05)"),
        ("--outer-lr", _positive_float, "beta: Adam step size (maml-vpg, ppo-maml, ppo-inner, pretrain)"),
        ("--ppo-epochs", _positive_int, "outer PPO epochs per meta-batch (ppo-maml, ppo-inner)"),
        ("--clip", _positive_float, "epsilon: PPO ratio clip range"),
        ("--kl-coef", float, "eta: weight of the KL penalty on the pre-update policy (ProMP); the start value with --kl-target"),
        ("--kl-target", _positive_float, "adapt eta after each update: x2 if its KL > 1.5 target, /2 if < target/1.5 (ProMP)"),
        ("--kl-stop", _positive_float, "shrink the outer epoch whose pre-update KL exceeds this back by halves until within it, then end the update (ppo-maml, ppo-inner); metrics epochs_kept"),
        ("--inner-epochs", _positive_int, "PPO epochs of the inner adaptation (ppo-inner)"),
        ("--max-kl", _positive_float, "delta: TRPO trust region on the post-update policy (maml-trpo)"),
        ("--gamma", float, "discount"),
        ("--init-log-std", float, "initial log sigma of a Gaussian policy, in units of --action-scale"),
        ("--action-scale", _positive_float, "c: Gaussian mean = c * MLP(s), sigma = c * exp(log_std); the inner step moves actions c^2 as far"),
        ("--log-std-scale", _positive_float, "k: log sigma = log c + k * phi for the learned phi, so one inner step moves log sigma k^2 as far (default 1)"),
        ("--checkpoint-every", _positive_int, "iterations between checkpoints"),
        ("--best-window", _positive_int, "keep best.pt, the policy at the best mean training return over this many iterations"),
        ("--threads", _positive_int, "torch CPU threads; 2 runs one meta-RL training on both cores of a 2-core machine about 1.6x as fast "
         "(default: $METALEARN_EDU_THREADS, else 1)"),
    ]
    for flag, kind, text in options:
        key = flag[2:].replace("-", "_")
        suffix = "" if d[key] is None and "(default:" in text else f" (default: {d[key]})"
        p.add_argument(flag, type=kind, default=None, help=text + suffix)
    p.add_argument("--estimator", default=None, choices=("auto", "naive", "lvc", "dice"),
                   help=f"inner-step meta-gradient estimator; auto = lvc for ppo-maml, naive otherwise (default: {d['estimator']})")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=None, help=f"policy hidden widths (default: {' '.join(map(str, d['hidden']))})")
    p.add_argument("--anneal-lr", action="store_true", default=None,
                   help="decay the outer Adam step size linearly to 0 over --iterations (maml-vpg, ppo-maml, ppo-inner, pretrain)")
    p.add_argument("--state-dependent-std", action="store_true", default=None,
                   help="Gaussian policy: log sigma(s) also gets a linear head on the last hidden layer, so sigma varies with the state "
                   "and an inner step can change it (default: a state-independent log sigma)")
    p.add_argument("--outer-every-step", action="store_true", default=None,
                   help="ppo-maml with --inner-steps K > 1: the outer objective averages the clipped surrogate on the episodes "
                   "after every inner step 1..K, not only after K (MAML++'s multi-step loss)")
    p.add_argument("--activation", default=None, choices=("tanh", "relu"), help=f"policy hidden nonlinearity (default: {d['activation']})")
    p.add_argument("--backend", default=None, choices=("auto", "batched", "loop", "vector"), help=f"sampler backend (default: {d['backend']})")
    p.add_argument("--time-limit", dest="time_limit_s", type=_positive_float, default=None,
                   help="stop after this many seconds of this session, writing a checkpoint (rerun to continue)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common_arguments(p, out_default=f"runs/{env}/ALGO-seedSEED")
    p.set_defaults(func=_train, env=env)


def _train(args: argparse.Namespace) -> int:
    from metalearn_edu.rl.train import RLTrainConfig, train_rl

    names = {f.name for f in fields(RLTrainConfig)} - {"env", "device", "seed"}
    overrides = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    config = RLTrainConfig.for_env(args.env, seed=args.seed, device=args.device, **overrides)
    config.validate()
    out = Path(args.out.replace("ALGO", config.algo).replace("SEED", str(config.seed)))
    result = train_rl(config, out, resume=not args.no_resume, progress=not args.quiet)
    last = result.last
    post = f", post-update return {last['post_return']:.2f}" if "post_return" in last else ""
    print(f"trained {config.algo} on {config.env} for {result.iterations_done} iterations in {result.seconds:.1f} s (this session); "
          f"last pre-update return {last.get('pre_return', float('nan')):.2f}{post}")
    _write_curve(out, config)
    print(f"wrote {out}/config.json, metrics.jsonl, checkpoint.pt, curve.png")
    return 0


def _write_curve(out: Path, config: Any) -> None:
    from metalearn_edu.plotting import use_headless_backend
    from metalearn_edu.rl.train import read_metrics

    use_headless_backend()
    import matplotlib.pyplot as plt

    metrics = read_metrics(out)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot([m["iteration"] for m in metrics], [m["pre_return"] for m in metrics], label="before adaptation")
    if any("post_return" in m for m in metrics):
        ax.plot([m["iteration"] for m in metrics if "post_return" in m], [m["post_return"] for m in metrics if "post_return" in m], label="after one step")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean return (training tasks)")
    ax.set_title(f"{config.algo} on {config.env}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)


def _add_evaluate(sub: argparse._SubParsersAction, env: str, description: str) -> None:
    from metalearn_edu.rl.evaluate import paper_protocol

    p = sub.add_parser(
        env, aliases=hyphenated_aliases(env), help=f"return after 0..K adaptation steps on {env}",
        description=f"Adapt checkpoints on a fixed, seeded set of test tasks of {description} with K vanilla policy-gradient "
        "steps (step size 0.1 then 0.05, linear baseline: Finn et al.'s protocol) and report the mean return after each "
        "number of steps with a 95%% CI. Checkpoints of the same algorithm are aggregated as training seeds.",
    )
    paper = paper_protocol(env)
    paper_h = f"H = {paper.horizon}" if paper.horizon is not None else "the env's own horizon"
    p.add_argument("--checkpoint", nargs="+", default=[], help="checkpoint.pt files or run folders (several seeds and algorithms allowed)")
    p.add_argument("--protocol", choices=("paper", "custom"), default="custom",
                   help=f"paper: pin Finn et al. 2017's protocol (40 test tasks, 20 rollouts, steps 0 1 2 3, step sizes 0.1 0.05, {paper_h}); "
                   "a different --steps, --test-tasks, --rollouts, --step-sizes or --horizon, or any --batch-steps, is then an error. "
                   "custom: those flags, each defaulting to the paper's value, except the horizon (default: custom)")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="numbers of adaptation steps to report (default: 0 1 2 3)")
    p.add_argument("--test-tasks", type=_positive_int, default=None, help="N: test tasks (default: 40)")
    p.add_argument("--rollouts", type=_positive_int, default=None, help="B: episodes per task and step (default: 20)")
    p.add_argument("--batch-steps", type=_positive_int, default=None,
                   help="instead of B episodes, whole episodes per task and step until their lengths sum to this many steps, "
                   "rllab's batch_size (Finn et al.'s test scripts use 4000); sampled B at a time (default: off)")
    p.add_argument("--step-sizes", type=_positive_float, nargs="+", default=None, help="first step size, then the one of every later step (default: 0.1 0.05)")
    p.add_argument("--horizon", type=_positive_int, default=None, help=f"H: steps per episode (default: the checkpoint's; {paper_h} with --protocol paper)")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the test tasks (default: 0)")
    p.add_argument("--baselines", action="store_true", help="add the random-initialisation baseline, the exact oracle and the pretrained baseline")
    p.add_argument("--pretrained", nargs="+", default=[], help="checkpoints of --algo pretrain runs for the pretrained baseline")
    p.add_argument("--pretrain-iterations", type=int, default=0,
                   help="with --baselines and no pretrained checkpoint: train pretrain runs of this many iterations into --out (default: 0 = skip)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--diagnose", action="store_true",
                   help="also print, for each checkpoint and step, the episode length, the fraction of episodes ended at the goal, "
                   "sigma, and the return and last reward of the mean action (see metalearn_edu.rl.diagnostics)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_common_arguments(p)
    p.set_defaults(func=_evaluate, env=env)


# evaluate flag -> the Protocol field it sets (--steps sets steps = max(--steps) and the reported steps)
_PROTOCOL_FLAGS = {"--steps": "steps", "--test-tasks": "test_tasks", "--rollouts": "rollouts", "--step-sizes": "step_sizes", "--horizon": "horizon",
                   "--batch-steps": "batch_steps"}


def evaluation_protocol(args: argparse.Namespace) -> tuple[Any, list[int]]:
    """The Protocol and the reported steps of an ``evaluate`` command line.

    ``--protocol paper`` pins Finn et al.'s values (:func:`paper_protocol`) and rejects any flag that sets
    another value; ``custom`` takes the flags, with the paper's values as defaults (the horizon: the checkpoint's).
    """
    from metalearn_edu.rl.evaluate import Protocol, paper_protocol

    paper = paper_protocol(args.env, task_seed=args.task_seed, seed=args.seed)
    wanted = {"steps": list(range(paper.steps + 1)), "test_tasks": paper.test_tasks, "rollouts": paper.rollouts,
              "step_sizes": list(paper.step_sizes), "horizon": paper.horizon, "batch_steps": None}
    given = {flag: getattr(args, dest) for flag, dest in _PROTOCOL_FLAGS.items() if getattr(args, dest) is not None}
    if getattr(args, "protocol", "custom") == "paper":
        conflicts = [f"{flag} {_show(value)} (paper: {_show(wanted[_PROTOCOL_FLAGS[flag]])})" for flag, value in given.items()
                     if value != wanted[_PROTOCOL_FLAGS[flag]]]
        if conflicts:
            raise ValueError(f"--protocol paper pins Finn et al.'s protocol; drop {', '.join(conflicts)} or pass --protocol custom")
        return paper, wanted["steps"]
    steps = given.get("--steps", wanted["steps"])
    if any(s < 0 for s in steps):
        raise ValueError(f"--steps must be non-negative integers, got {steps}")
    protocol = Protocol(steps=max(steps), test_tasks=given.get("--test-tasks", paper.test_tasks), rollouts=given.get("--rollouts", paper.rollouts),
                        step_sizes=tuple(given.get("--step-sizes", paper.step_sizes)), horizon=given.get("--horizon"),
                        task_seed=args.task_seed, seed=args.seed, batch_steps=given.get("--batch-steps"))
    return protocol, steps


def _show(value: Any) -> str:
    if value is None:
        return "(the env's own)"
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _evaluate(args: argparse.Namespace) -> int:
    from metalearn_edu.rl.evaluate import evaluate_checkpoints, evaluate_oracle, evaluate_random_init, finn_reference
    from metalearn_edu.rl.train import RLTrainConfig, load_rl_checkpoint, train_rl
    from metalearn_edu.runtime import resolve_device

    protocol, steps = evaluation_protocol(args)
    args.steps = steps
    if not args.checkpoint and not args.baselines:
        raise ValueError("--checkpoint must name at least one checkpoint (or pass --baselines for the baselines alone)")
    device = resolve_device(args.device)
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
    if args.baselines:
        seeds = max([c.seeds for c in curves.values()] or [1])
        pretrained = list(args.pretrained)
        if not pretrained and "pretrained" not in curves and args.pretrain_iterations > 0:
            base = Path(args.out or f"runs/{args.env}")
            for s in range(seeds):
                cfg = RLTrainConfig.for_env(args.env, algo="pretrain", iterations=args.pretrain_iterations, seed=s, device=args.device)
                pretrained.append(str(train_rl(cfg, base / f"pretrain-seed{s}", progress=not args.json).out_dir / "checkpoint.pt"))
        if pretrained:
            curves["pretrained"] = evaluate_checkpoints(pretrained, protocol, device)["pretrain"]
        curves["random init"] = evaluate_random_init(reference, protocol, range(seeds), device)
        oracle = evaluate_oracle(reference, protocol)
    paper = finn_reference(args.env)
    record = {
        "env": args.env, "protocol_name": args.protocol, "protocol": asdict(protocol), "steps": args.steps,
        "methods": {name: {"mean": [c.mean[s] for s in args.steps], "ci95": [c.ci95[s] for s in args.steps], "seeds": c.seeds,
                           "per_seed": [[row[s] for s in args.steps] for row in c.per_seed], "checkpoints": c.sources}
                    for name, c in curves.items()},
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
    if args.out:
        print(f"wrote {args.out}/eval.json and adaptation.png")
    return 0


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
    lines = [f"{record['env']}: mean return after k policy-gradient steps (step sizes {p['step_sizes']}), "
             f"{p['test_tasks']} test tasks x " + (f"{p['rollouts']} rollouts" if p.get("batch_steps") is None else
                                                   f"whole episodes to {p['batch_steps']} steps") + "; +- 95% CI",
             f"{'method':<26}" + "".join(f"{'k=' + str(s):>10}{'':8}" for s in steps)]
    for name, m in record["methods"].items():
        cells = "".join(f"{v:>10.2f} +- {c:<5.2f}" for v, c in zip(m["mean"], m["ci95"]))
        label = f"{name} ({m['seeds']} seed{'s' if m['seeds'] > 1 else ''})"
        lines.append(f"{label:<26}{cells}")
    if record.get("oracle"):
        lines.append(f"{'oracle (exact)':<26}" + "".join(f"{record['oracle']['mean']:>10.2f}{'':8}" for _ in steps))
    for name, diff in record.get("minus_pretrained", {}).items():
        cells = "".join(f"{v:>+10.2f} +- {c:<5.2f}" for v, c in zip(diff["mean"], diff["ci95"]))
        lines.append(f"{name + ' - pretrained':<26}{cells}")
    reference = record.get("reference", {})
    for name in ("maml", "pretrained"):
        ref = reference.get(f"finn2017_{name}")
        if ref is not None:
            lines.append(f"{'Finn et al. ' + name:<26}" + "".join(f"{ref[s]:>10.2f}{'':8}" if s < len(ref) else f"{'-':>10}{'':8}" for s in steps))
    if "finn2017_oracle" in reference:
        lines.append(f"{'Finn et al. oracle':<26}" + "".join(f"{reference['finn2017_oracle']:>10.2f}{'':8}" for _ in steps))
    if "oracle_note" in record:
        lines.append(f"note: {record['oracle_note']}")
    if reference and record.get("protocol_name") != "paper":
        lines.append("note: the Finn et al. rows used their protocol (--protocol paper); this table did not, so compare with care")
    return "\n".join(lines)
