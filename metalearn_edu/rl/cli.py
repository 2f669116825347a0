"""CLI targets for meta-RL: ``train <env>`` and ``evaluate <env>`` (:mod:`metalearn_edu.rl.evaluate_cli`) for every trainable meta-environment.

The targets are the presets of :mod:`metalearn_edu.rl.train` (navigation2d, bandit5, bandit10, and any
added with ``register_env_preset``) plus every other registered ``metalearn_edu/*`` meta-environment.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from metalearn_edu.cli import add_common_arguments, positive_float as _positive_float, positive_int as _positive_int, training_session_summary
from metalearn_edu.rl.evaluate_cli import add_evaluate
from metalearn_edu.rl.inner import ESTIMATORS

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
        add_evaluate(groups["evaluate"], name, description, hyphenated_aliases(name))


def _add_train(sub: argparse._SubParsersAction, env: str, description: str) -> None:
    d = _config_defaults(env)
    p = sub.add_parser(
        env, aliases=hyphenated_aliases(env), help=f"meta-train a policy on {env}",
        description=f"Meta-train a policy on {description}. Writes config.json, metrics.jsonl (pre- and post-update "
        "return, KL, time per iteration), checkpoint.pt and curve.png into --out; rerunning the same command resumes "
        "from the checkpoint. Defaults: ProMP / Finn et al. sizes for a laptop CPU. A flag that the chosen --algo would "
        "ignore (e.g. --clip with maml-vpg) is refused.",
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
        ("--post-kl-stop", _positive_float, "the same guard on the post-update KL of the adapted policies, on their post-update "
         "episodes (ppo-maml, ppo-inner); metrics post_kl"),
        ("--task-chunk", _positive_int, "compute the outer PPO objective this many tasks at a time and add up the gradients: the "
         "same update, faster on a CPU for a --meta-batch above about 40 (ppo-maml, ppo-inner) (default: all tasks at once)"),
        ("--spread-bonus", float, "beta_s >= 0: ppo-maml's outer objective adds beta_s times a clipped surrogate on the pre-update "
         "episodes for a reward that pays them for spreading apart (an exploration bonus; a tested option, see docs/RESULTS.md)"),
        ("--inner-epochs", _positive_int, "PPO epochs of the inner adaptation (ppo-inner)"),
        ("--max-kl", _positive_float, "delta: TRPO trust region on the post-update policy (maml-trpo)"),
        ("--gamma", float, "discount"),
        ("--gae-lambda", float, "lambda: GAE lambda of the advantages over the linear baseline, in [0, 1]; 1 = reward-to-go minus baseline"),
        ("--dice-lambda", float, "with --estimator loaded-dice: the discount, in [0, 1], of the earlier actions' scores in the inner "
         "step's Hessian; 0 = lvc, 1 = every earlier action (default: --gae-lambda)"),
        ("--init-log-std", float, "initial log sigma of a Gaussian policy, in units of --action-scale"),
        ("--action-scale", _positive_float, "c: Gaussian mean = c * MLP(s), sigma = c * exp(log_std); the inner step moves actions c^2 as far"),
        ("--log-std-scale", _positive_float, "k: log sigma = log c + k * phi for the learned phi, so one inner step moves log sigma k^2 as far (default 1)"),
        ("--log-std-lr-scale", _positive_float, "the outer Adam step size of phi is beta times this; with --log-std-scale k, 1/k moves "
         "log sigma by beta per outer step as with k = 1, while an inner step still moves it k^2 as far"),
        ("--min-std", _positive_float, "Gaussian policy: floor on sigma in units of the action scale c, sigma >= c * min-std "
         "(rllab's min_std) (default: no floor)"),
        ("--checkpoint-every", _positive_int, "iterations between checkpoints"),
        ("--best-window", _positive_int, "keep best.pt, the policy at the best mean training return over this many iterations"),
        ("--threads", _positive_int, "torch CPU threads; 2 runs one meta-RL training on both cores of a 2-core machine about 1.6x as fast "
         "(default: $METALEARN_EDU_THREADS, else 1)"),
    ]
    for flag, kind, text in options:
        key = flag[2:].replace("-", "_")
        suffix = "" if d[key] is None and "(default:" in text else f" (default: {d[key]})"
        p.add_argument(flag, type=kind, default=None, help=text + suffix)
    p.add_argument("--estimator", default=None, choices=("auto", *ESTIMATORS),
                   help=f"inner-step meta-gradient estimator; auto = lvc for ppo-maml, naive otherwise; loaded-dice = lvc plus the "
                        f"cross-time Hessian terms, earlier actions discounted by --dice-lambda (default: {d['estimator']})")
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
    from metalearn_edu.rl.config import check_fields_apply
    from metalearn_edu.rl.train import RLTrainConfig, train_rl

    names = {f.name for f in fields(RLTrainConfig)} - {"env", "device", "seed"}
    overrides = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    config = RLTrainConfig.for_env(args.env, seed=args.seed, device=args.device, **overrides)
    check_fields_apply(config.algo, overrides)  # first: a flag the algorithm would ignore is named as the user typed it
    config.validate()
    out = Path(args.out.replace("ALGO", config.algo).replace("SEED", str(config.seed)))
    result = train_rl(config, out, resume=not args.no_resume, progress=not args.quiet)
    last = result.last  # with nothing trained this session, the run's last logged figures
    done = training_session_summary(f"{config.algo} on {config.env}", out, result.iterations_this_session, result.iterations_done, result.seconds)
    post = f", post-update return {last['post_return']:.2f}" if "post_return" in last else ""
    pre = f"; last pre-update return {last['pre_return']:.2f}{post}" if "pre_return" in last else ""
    print(done + pre)
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
