"""CLI targets for supervised meta-learning: ``train sinusoid``, ``evaluate sinusoid``, ``bench maml``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metalearn_edu.cli import add_common_arguments, positive_float as _positive_float, positive_int as _positive_int, training_session_summary
from metalearn_edu.maml import ALGORITHMS

FINN_TABLE2 = {"maml": {1: 0.67, 5: 0.38, 10: 0.35}, "pretrain": {1: 2.41, 5: 2.23, 10: 2.19}}
DEFAULT_INNER_STEPS = {"maml": 1, "fomaml": 1, "reptile": 5, "pretrain": 1}


def register(groups: dict) -> None:
    p = groups["train"].add_parser(
        "sinusoid",
        help="meta-train on Finn et al.'s sinusoid regression",
        description="Meta-train a 40-40 ReLU MLP on sinusoids (amplitude U[0.1,5], phase U[0,pi], x U[-5,5]). "
        "Writes config.json, metrics.jsonl, checkpoint.pt, loss.png and fit.png into --out; rerunning the same "
        "command resumes from the checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--algo", choices=ALGORITHMS, default="maml", help="maml (second order), fomaml (first order), reptile, or pretrain (multi-task baseline)")
    p.add_argument("--iterations", type=_positive_int, default=70_000, help="meta-iterations (outer Adam steps)")
    p.add_argument("--meta-batch", type=_positive_int, default=25, help="T: tasks per meta-iteration")
    p.add_argument("--shots", type=_positive_int, default=10, help="K: support points per task")
    p.add_argument("--query", type=_positive_int, default=10, help="Q: query points per task")
    p.add_argument("--inner-lr", type=_positive_float, default=0.01, help="alpha: inner gradient step size")
    p.add_argument("--inner-steps", type=_positive_int, default=None, help="inner steps (default 1; 5 for reptile)")
    p.add_argument("--outer-lr", type=_positive_float, default=1e-3, help="beta: Adam learning rate on the meta-parameters")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[40, 40], help="hidden layer widths")
    p.add_argument("--loop", action="store_true", help="use the per-task reference loop instead of vmap")
    p.add_argument("--checkpoint-every", type=_positive_int, default=1000, help="iterations between checkpoints")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a checkpoint")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common_arguments(p, out_default="runs/sinusoid-maml")
    p.set_defaults(func=_train)

    p = groups["evaluate"].add_parser(
        "sinusoid",
        help="few-shot MSE of a sinusoid checkpoint after 1..10 steps",
        description="Adapt a trained checkpoint to fresh sinusoid tasks and print the query MSE (mean and 95%% CI) "
        "after each requested number of gradient steps, next to Finn et al. 2017 Table 2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="path to checkpoint.pt (or its run folder)")
    p.add_argument("--shots", type=_positive_int, default=5, help="K: support points per test task")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10], help="numbers of gradient steps to report")
    p.add_argument("--tasks", type=_positive_int, default=600, help="number of fresh test tasks")
    p.add_argument("--query", type=_positive_int, default=100, help="query points per test task")
    p.add_argument("--inner-lr", type=_positive_float, default=None, help="step size (default: the checkpoint's inner_lr)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_common_arguments(p)
    p.set_defaults(func=_evaluate)

    p = groups["bench"].add_parser(
        "maml",
        help="meta-iterations/s: per-task loop vs vmap, MAML vs FOMAML",
        description="Measure meta-iterations per second of the per-task loop and the vmap-batched implementation, "
        "second order (MAML) and first order (FOMAML), on the Finn sinusoid config, in one run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seconds", type=_positive_float, default=3.0, help="timed seconds per measurement")
    p.add_argument("--meta-batch", type=_positive_int, default=25, help="T: tasks per meta-iteration")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_common_arguments(p)
    p.set_defaults(func=_bench)


def _train(args: argparse.Namespace) -> int:
    from metalearn_edu.train import TrainConfig, train

    config = TrainConfig(
        algo=args.algo, iterations=args.iterations, meta_batch=args.meta_batch, shots=args.shots, query=args.query,
        inner_lr=args.inner_lr, inner_steps=args.inner_steps or DEFAULT_INNER_STEPS[args.algo], outer_lr=args.outer_lr,
        hidden=tuple(args.hidden), seed=args.seed, batched=not args.loop, checkpoint_every=args.checkpoint_every,
        device=args.device,
    )
    out = Path(args.out)
    result = train(config, out, resume=not args.no_resume, progress=not args.quiet)
    done = training_session_summary(config.algo, out, result.iterations_this_session, result.iterations_done, result.seconds)
    print(f"{done}; final meta-loss {result.final_loss:.4f}")
    _write_figures(result.model, config, out)
    print(f"wrote {out}/config.json, metrics.jsonl, checkpoint.pt, loss.png, fit.png")
    return 0


def _write_figures(model, config, out: Path) -> None:
    import torch

    from metalearn_edu.plotting import plot_learning_curve, plot_sinusoid_fit, use_headless_backend
    from metalearn_edu.tasks import SinusoidTasks
    from metalearn_edu.train import read_metrics

    use_headless_backend()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    plot_learning_curve(read_metrics(out), ax=ax, label=config.algo)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
    model = model.cpu()
    params = dict(model.named_parameters())
    tasks = SinusoidTasks().sample(3, 5, 1, torch.Generator().manual_seed(config.seed + 1))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for i, ax in enumerate(axes):
        plot_sinusoid_fit(model, params, tasks.task(i), lr=config.inner_lr, steps=(0, 1, 10), ax=ax, title=f"{config.algo}, 5-shot task {i + 1}")
    fig.tight_layout()
    fig.savefig(out / "fit.png", dpi=110)
    plt.close(fig)


def _evaluate(args: argparse.Namespace) -> int:
    from metalearn_edu.evaluate import evaluate_sinusoid
    from metalearn_edu.runtime import resolve_device
    from metalearn_edu.train import load_checkpoint

    if any(s < 0 for s in args.steps):
        raise ValueError(f"--steps must be non-negative integers, got {args.steps}")
    device = resolve_device(args.device)
    model, config, _ = load_checkpoint(args.checkpoint, device)
    lr = args.inner_lr or config.inner_lr
    result = evaluate_sinusoid(model, tasks=args.tasks, shots=args.shots, query=args.query, max_steps=max(args.steps), lr=lr, seed=args.seed)
    record = {"checkpoint": str(args.checkpoint), "algo": config.algo, "seed": args.seed} | result.as_dict(args.steps)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print(json.dumps(record))
        return 0
    paper = FINN_TABLE2.get(config.algo, {})
    print(f"{config.algo} checkpoint, {args.tasks} test tasks, {args.shots}-shot, step size {lr}:")
    print(f"{'steps':>6} {'query MSE':>10} {'95% CI':>8} {'Finn et al.':>12}")
    for s in args.steps:
        mean, ci = result.at(s)
        ref = f"{paper[s]:.2f}" if s in paper else "-"
        print(f"{s:>6} {mean:>10.3f} {ci:>8.3f} {ref:>12}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from metalearn_edu.bench import BenchConfig, bench_maml

    config = BenchConfig(meta_batch=args.meta_batch, seconds=args.seconds, seed=args.seed, device=args.device)
    result = bench_maml(config, progress=not args.json)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
        return 0
    r = result["iterations_per_second"]
    print(f"\nsinusoid, meta-batch {config.meta_batch}, K=10, one inner step, 40-40 MLP; {result['machine']}")
    print(f"{'':10s} {'MAML':>10s} {'FOMAML':>10s} {'FOMAML/MAML':>12s}")
    for impl in ("loop", "batched"):
        print(f"{impl:10s} {r[impl]['maml']:>10.1f} {r[impl]['fomaml']:>10.1f} {result['fomaml_over_maml'][impl]:>11.2f}x")
    b = result["batched_over_loop"]
    print(f"{'batched/loop':10s} {b['maml']:>9.2f}x {b['fomaml']:>9.2f}x")
    return 0
