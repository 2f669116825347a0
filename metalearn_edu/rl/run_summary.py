"""Summaries of finished runs that are less noisy than one protocol evaluation of one checkpoint.

Each reads files the other commands already write:

``tail``: the training returns of a run's last N meta-iterations (``metrics.jsonl``), averaged. Every iteration
draws fresh training tasks from the task distribution, so the last 50 iterations of a navigation run average
50 * 20 = 1000 tasks: an estimate of the return after 0, 1 and K inner steps with a far smaller task-sampling
error than 40 fixed test tasks, at the price of averaging 50 neighbouring policies instead of one checkpoint.

    tail_k = (1 / N) sum_{i = I - N + 1}^{I} R_k(i)      R_k(i): mean return after k steps at iteration i

``evals``: the spread of one evaluation repeated with different evaluation seeds (``evaluate --seed S --out DIR``,
each writing ``DIR/eval.json``). The test tasks stay fixed; only the sampled episodes, and hence the adaptation
steps, change. The mean over S estimates what the protocol gives in expectation, and the standard deviation over
S is the noise of a single protocol run. (``evaluate --repeats R`` now reads R evaluation seeds in one command and
averages them checkpoint by checkpoint, with the spread of one checkpoint's reading; ``evals`` reads files already written.)

``readings``: for evaluations written with ``evaluate --repeats R``, each reading's mean over all their checkpoints.
Reading r of every checkpoint used the same evaluation seed, so if one seed's episodes favour every policy alike, its
mean over many checkpoints stands apart from the others'.

``draws``: one evaluation on many test tasks (``evaluate --test-tasks 4000``) read as D = N / M draws of the
protocol's M test tasks. Test tasks are drawn independently and each is adapted on its own episodes, so each block of
M consecutive tasks is what one protocol reading on one draw of tasks could show, and the all-task mean estimates the
expected reading (Finn et al.'s figure is one such draw). With S checkpoints (training seeds), per block j:

    d_j,k = (1 / M) sum_{n in block j} Rbar_k(n)      Rbar_k(n): the S-checkpoint mean return on task n after k steps

``tasks``: where on the test tasks two evaluations of the same protocol differ. The per-task returns (mean over
seeds) of B minus those of A, paired task by task, over all tasks and over the hardest quarter and the rest, the
hardest being those where A returns least before adaptation (in 2D navigation: the goals farthest from the start).

    d_k(n) = R^B_k(n) - R^A_k(n)      mean and 95% CI over the tasks n of each group

    python -m metalearn_edu.rl.run_summary tail runs/navigation/ppo-maml-seed{0,1,2,3,4} --last 50
    python -m metalearn_edu.rl.run_summary evals runs/nav12/evalseed-350-s{0..7}/eval.json
    python -m metalearn_edu.rl.run_summary readings runs/nav22/eval-r10-*/eval.json
    python -m metalearn_edu.rl.run_summary draws runs/nav23/M100-35b/eval.json runs/nav23/M100-35b-s456/eval.json
    python -m metalearn_edu.rl.run_summary tasks runs/nav13/eval-pt-headline/eval.json runs/nav13/eval-pt-ls-0.3/eval.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from metalearn_edu.rl.evaluate import mean_ci95


def training_tail(rows: Sequence[dict], last: int) -> dict[str, float]:
    """Mean over the last ``last`` metrics rows of every return column (``pre_return``, ``return_after_k``, ``post_return``)."""
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ValueError(f"last must be a positive number of iterations, got {last!r}")
    if len(rows) < last:
        raise ValueError(f"last={last} iterations asked for, but the run logged only {len(rows)}")
    window = rows[-last:]
    keys = ["pre_return"] + sorted(k for k in window[0] if k.startswith("return_after_")) + ["post_return"]
    missing = [k for k in keys if any(k not in row for row in window)]
    if missing:
        raise ValueError(f"metrics rows lack {', '.join(missing)}: not a meta-RL run's metrics.jsonl")
    return {key: statistics.fmean(float(row[key]) for row in window) for key in keys}


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of ``run/metrics.jsonl`` (``run`` may also be the file itself)."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl at {path}: pass a training run folder")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _method(record: dict, method: str | None, what: str) -> str:
    names = list(record["methods"])
    if method is None:  # the one learned method; the baselines count only when there is nothing else
        learned = [n for n in names if n not in ("pretrained", "random init")] or names
        if len(learned) != 1:
            raise ValueError(f"{what} holds several methods ({', '.join(names)}): choose one with --method")
        return learned[0]
    if method not in names:
        raise ValueError(f"method {method!r} is not in {what}, which holds {', '.join(names)}")
    return method


def _same_tasks(records: Sequence[dict], *, same_seed: bool = False) -> bool:
    """Whether the evaluations share protocol, test tasks and steps (and, with ``same_seed``, their evaluation seed)."""
    keys = {json.dumps({"protocol": {k: v for k, v in ({"repeats": 1} | r["protocol"]).items() if same_seed or k != "seed"},
                        "steps": r["steps"]}, sort_keys=True) for r in records}  # files written before --repeats existed read one reading
    return len(keys) == 1


def _method_of_all(records: Sequence[dict], method: str | None) -> str:
    """The method to summarise (:func:`_method` on the first record), which every record must hold."""
    method = _method(records[0], method, "the first evaluation")
    if any(method not in r["methods"] for r in records):
        raise ValueError(f"method {method!r} is not in every evaluation")
    return method


def evaluation_spread(records: Sequence[dict], method: str | None = None) -> dict[str, object]:
    """Mean and standard deviation over repeated evaluations of one method's mean return after each step.

    ``records``: ``eval.json`` objects of the same checkpoints and test tasks; ``method``: which curve (default: the
    only learned one, leaving out the baselines). Returns {"method", "steps", "mean": [K + 1], "sd": [K + 1], "repeats"}.
    """
    if len(records) < 2:
        raise ValueError(f"evaluation_spread needs at least 2 evaluations, got {len(records)}")
    method = _method_of_all(records, method)
    if not _same_tasks(records):
        raise ValueError("the evaluations differ in more than their seed (protocol, test tasks or steps): not repeats of one evaluation")
    curves = [r["methods"][method]["mean"] for r in records]  # (S, K + 1)
    columns = list(zip(*curves))
    return {"method": method, "steps": records[0]["steps"], "mean": [statistics.fmean(c) for c in columns],
            "sd": [statistics.stdev(c) for c in columns], "repeats": len(records)}


def reading_means(records: Sequence[dict], method: str | None = None) -> dict[str, object]:
    """Each reading's mean over every checkpoint of evaluations written with ``evaluate --repeats R``.

    ``records``: ``eval.json`` objects of one protocol (same test tasks, steps, evaluation seed S and R; the checkpoints
    may differ). Reading r of every checkpoint used evaluation seed S + r, the same sampling noise, so a reading's mean
    over many checkpoints shows whether that seed favours all of them alike:

        m_r = (1 / C) sum_c R_c,r      R_c,r: checkpoint c's mean over tasks in reading r, after each step

    Returns {"method", "steps", "seed", "checkpoints": C, "means": (R, steps) m_r, "mean": (steps) the mean over r,
    "sd": (steps) the standard deviation over r of m_r}.
    """
    if not records:
        raise ValueError("reading_means needs at least 1 evaluation")
    method = _method_of_all(records, method)
    if not _same_tasks(records, same_seed=True):
        raise ValueError("the evaluations differ in their protocol, seed, repeats or steps: their readings are not the same draws")
    if "per_reading" not in records[0]["methods"][method]:
        raise ValueError("an eval.json without per-reading returns: run evaluate with --repeats 2 or more")
    per_checkpoint = [seed for r in records for seed in r["methods"][method]["per_reading"]]  # C x (R, steps)
    means = [[statistics.fmean(c[r][k] for c in per_checkpoint) for k in range(len(records[0]["steps"]))]
             for r in range(len(per_checkpoint[0]))]
    columns = list(zip(*means))
    return {"method": method, "steps": records[0]["steps"], "seed": records[0]["protocol"]["seed"], "checkpoints": len(per_checkpoint),
            "means": means, "mean": [statistics.fmean(c) for c in columns], "sd": [statistics.stdev(c) for c in columns]}


def protocol_draws(records: Sequence[dict], size: int = 40, method: str | None = None) -> dict[str, object]:
    """One method's returns on N test tasks read as D = N / ``size`` protocol draws of ``size`` tasks each.

    ``records``: ``eval.json`` objects of one protocol (same test tasks, steps and evaluation seed), e.g. the training
    seeds of one configuration split over several files. Each task's return is averaged over all S checkpoints (each
    file's per-task means weighted by its seeds), then over each block j of ``size`` consecutive tasks: d_j,k above.
    Returns {"method", "steps", "seeds": S, "tasks": N, "size", "mean": (steps) over seeds and tasks, "ci95": (steps)
    over the S seeds, "draws": (D, steps) d_j,k, "sd": (steps) over the draws, "draw_error": (steps) sd / sqrt(D), the
    error the draw of all N tasks leaves in the mean (shared by the seeds, so not in ci95), "reference": (steps) Finn et al.'s
    figures or None, "at_or_above": (steps) the share of draws at or above the reference, or None, "all_steps": the
    share of draws at or above it after every step k >= 1 at once, or None}.
    """
    if not records:
        raise ValueError("protocol_draws needs at least 1 evaluation")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive number of test tasks, got {size!r}")
    method = _method_of_all(records, method)
    if not _same_tasks(records, same_seed=True):
        raise ValueError("the evaluations differ in their protocol, test tasks, seed or steps: their tasks cannot be pooled")
    entries = [r["methods"][method] for r in records]
    if any("per_task" not in e for e in entries):
        raise ValueError("an eval.json without per-task returns (written before they were recorded): run evaluate again")
    steps, n = records[0]["steps"], len(entries[0]["per_task"][0])
    if n % size or n // size < 2:
        raise ValueError(f"--size {size} must divide the {n} test tasks into at least 2 draws")
    weights = [len(e["per_seed"]) for e in entries]  # S_f: the seeds each file's per-task means average
    seeds = sum(weights)
    per_task = [[sum(w * e["per_task"][k][i] for w, e in zip(weights, entries)) / seeds for i in range(n)] for k in range(len(steps))]
    draws = [[statistics.fmean(per_task[k][j * size:(j + 1) * size]) for k in range(len(steps))] for j in range(n // size)]
    cells = [mean_ci95([row[k] for e in entries for row in e["per_seed"]]) for k in range(len(steps))]
    finn = records[0].get("reference", {}).get("finn2017_maml")
    reference = [finn[k] for k in steps] if finn and max(steps) < len(finn) else None
    at_or_above = None if reference is None else [statistics.fmean(d[k] >= reference[k] for d in draws) for k in range(len(steps))]
    adapted = [k for k, step in enumerate(steps) if step >= 1]
    all_steps = None if reference is None or not adapted else statistics.fmean(all(d[k] >= reference[k] for k in adapted) for d in draws)
    sd = [statistics.stdev(c) for c in zip(*draws)]
    return {"method": method, "steps": steps, "seeds": seeds, "tasks": n, "size": size, "mean": [m for m, _ in cells],
            "ci95": [h for _, h in cells], "draws": draws, "sd": sd, "draw_error": [v / len(draws) ** 0.5 for v in sd],
            "reference": reference, "at_or_above": at_or_above, "all_steps": all_steps}


def paired_by_difficulty(a: dict, b: dict, method: str | None = None, hardest: float = 0.25) -> dict[str, object]:
    """Per-task difference B - A of one method's returns after each step, over all tasks and two difficulty groups.

    ``a``, ``b``: ``eval.json`` objects of the same protocol (same test tasks; the evaluation seed may differ);
    ``hardest``: the fraction of tasks, those with A's lowest return before adaptation, in the first group.
    Returns {"method", "steps", "groups": {name: {"tasks", "mean": [K + 1], "ci95": [K + 1]}}}.
    """
    if not 0 < hardest < 1:
        raise ValueError(f"hardest must be a fraction in (0, 1), got {hardest!r}")
    if not _same_tasks([a, b]):
        raise ValueError("the two evaluations differ in their protocol, test tasks or steps: their tasks cannot be paired")
    if a["steps"][0] != 0:
        raise ValueError(f"the evaluations must include step 0, the return before adaptation that ranks the tasks; they have steps {a['steps']}")
    name_a, name_b = _method(a, method, "the first evaluation"), _method(b, method, "the second evaluation")
    if "per_task" not in a["methods"][name_a] or "per_task" not in b["methods"][name_b]:
        raise ValueError("an eval.json without per-task returns (written before they were recorded): run evaluate again")
    ra, rb = a["methods"][name_a]["per_task"], b["methods"][name_b]["per_task"]  # (K + 1, N) each
    n = len(ra[0])
    order = sorted(range(n), key=lambda i: ra[0][i])  # hardest first: A's lowest return before adaptation
    cut = max(1, round(hardest * n))
    groups = {"all": range(n), f"hardest {cut}": order[:cut], f"other {n - cut}": order[cut:]}
    out = {}
    for name, idx in groups.items():
        cells = [mean_ci95([rb[k][i] - ra[k][i] for i in idx]) for k in range(len(ra))]
        out[name] = {"tasks": len(idx), "mean": [m for m, _ in cells], "ci95": [h for _, h in cells]}
    return {"method": name_b if name_a == name_b else f"{name_b} - {name_a}", "steps": a["steps"], "groups": out}


def _tail(args: argparse.Namespace) -> None:
    tails = [training_tail(read_metrics(run), args.last) for run in args.runs]
    keys = list(tails[0])
    print("run".ljust(48) + "".join(k.rjust(17) for k in keys))
    for run, tail in zip(args.runs, tails):
        print(str(run).ljust(48) + "".join(f"{tail[k]:17.2f}" for k in keys))
    if len(tails) > 1:
        cells = [mean_ci95([t[k] for t in tails]) for k in keys]
        print(f"mean +- 95% CI over {len(tails)} runs".ljust(48) + "".join(f"{m:8.2f} +- {h:5.2f}" for m, h in cells))


def _read(paths: Sequence[str]) -> list[dict]:
    """The ``eval.json`` objects at ``paths``."""
    return [json.loads(Path(p).read_text()) for p in paths]


def _evals(args: argparse.Namespace) -> None:
    spread = evaluation_spread(_read(args.files), args.method)
    print(f"{spread['method']}, {spread['repeats']} evaluation seeds")
    print("steps".ljust(8) + "".join(str(k).rjust(10) for k in spread["steps"]))
    print("mean".ljust(8) + "".join(f"{m:10.2f}" for m in spread["mean"]))
    print("sd".ljust(8) + "".join(f"{s:10.2f}" for s in spread["sd"]))


def _readings(args: argparse.Namespace) -> None:
    out = reading_means(_read(args.files), args.method)
    print(f"{out['method']}: each reading's mean over {out['checkpoints']} checkpoints ({len(out['means'])} readings)")
    print("reading".ljust(18) + "".join(f"k={k}".rjust(10) for k in out["steps"]))
    for r, row in enumerate(out["means"]):
        print(f"{r} (seed {out['seed'] + r})".ljust(18) + "".join(f"{v:10.2f}" for v in row))
    print("mean".ljust(18) + "".join(f"{v:10.2f}" for v in out["mean"]))
    print("sd over readings".ljust(18) + "".join(f"{v:10.2f}" for v in out["sd"]))


def _draws(args: argparse.Namespace) -> None:
    records = _read(args.files)
    out = protocol_draws(records, args.size, args.method)
    print(f"{out['method']}: {out['tasks']} test tasks (task seed {records[0]['protocol']['task_seed']}) as "
          f"{len(out['draws'])} draws of {out['size']}, {out['seeds']} seed{'s' * (out['seeds'] != 1)}")
    print("".ljust(26) + "".join(f"k={k}".rjust(17) for k in out["steps"]))
    print("mean +- 95% CI over seeds".ljust(26) + "".join(f"{m:8.2f} +- {h:5.2f}" for m, h in zip(out["mean"], out["ci95"])))
    print(f"sd of one draw of {out['size']}".ljust(26) + "".join(f"{v:17.2f}" for v in out["sd"]))
    print("its error in the mean".ljust(26) + "".join(f"{v:17.2f}" for v in out["draw_error"]))
    if out["reference"] is not None:
        print("Finn et al. maml".ljust(26) + "".join(f"{v:17.2f}" for v in out["reference"]))
        print("draws at or above it".ljust(26) + "".join(f"{v:16.0%} " for v in out["at_or_above"]))
        if out["all_steps"] is not None:
            print(f"draws at or above it after every step k >= 1 at once: {out['all_steps']:.0%}")


def _tasks(args: argparse.Namespace) -> None:
    a, b = _read([args.a, args.b])
    paired = paired_by_difficulty(a, b, args.method, args.hardest)
    print(f"{paired['method']}: B - A per test task (B = {args.b}, A = {args.a}); the hardest by A's return before adaptation")
    print("tasks".ljust(14) + "".join(f"k={k}".rjust(17) for k in paired["steps"]))
    for name, g in paired["groups"].items():
        print(name.ljust(14) + "".join(f"{m:8.2f} +- {h:5.2f}" for m, h in zip(g["mean"], g["ci95"])))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalearn_edu.rl.run_summary", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    tail = sub.add_parser("tail", help="mean training returns over each run's last N iterations, and over the runs")
    tail.add_argument("runs", nargs="+", help="training run folders (or their metrics.jsonl)")
    tail.add_argument("--last", type=int, default=50, help="N: iterations averaged at the end of each run (default: 50)")
    tail.set_defaults(func=_tail)
    evals = sub.add_parser("evals", help="mean and sd over repeats of one evaluation with different --seed")
    evals.add_argument("files", nargs="+", help="eval.json files of the repeats")
    evals.set_defaults(func=_evals)
    readings = sub.add_parser("readings", help="each reading's mean over all checkpoints of evaluate --repeats files: does one seed favour them all?")
    readings.add_argument("files", nargs="+", help="eval.json files written with the same --repeats, --seed and protocol")
    readings.set_defaults(func=_readings)
    draws = sub.add_parser("draws", help="an evaluation on many test tasks as draws of the protocol's test tasks: mean, spread, share at the paper")
    draws.add_argument("files", nargs="+", help="eval.json files of the same test tasks and evaluation seed (e.g. training seeds split over files)")
    draws.add_argument("--size", type=int, default=40, help="M: test tasks per protocol draw (default: 40, Finn et al.'s)")
    draws.set_defaults(func=_draws)
    for summary in (evals, readings, draws):
        summary.add_argument("--method", default=None, help="the curve to summarise when the files hold several (default: the only learned one)")
    tasks = sub.add_parser("tasks", help="per-task difference of two evaluations of the same test tasks, hardest tasks apart")
    tasks.add_argument("a", help="eval.json of the reference (A)")
    tasks.add_argument("b", help="eval.json compared with it (B)")
    tasks.add_argument("--method", default=None, help="the curve to compare when a file holds several (default: the only learned one)")
    tasks.add_argument("--hardest", type=float, default=0.25, help="fraction of tasks in the hardest group (default: 0.25)")
    tasks.set_defaults(func=_tasks)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
