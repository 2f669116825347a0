"""Summaries of finished runs that are less noisy than one protocol evaluation of one checkpoint.

Two readings, both from files the other commands already write:

``tail``: the training returns of a run's last N meta-iterations (``metrics.jsonl``), averaged. Every iteration
draws fresh training tasks from the task distribution, so the last 50 iterations of a navigation run average
50 * 20 = 1000 tasks: an estimate of the return after 0, 1 and K inner steps with a far smaller task-sampling
error than 40 fixed test tasks, at the price of averaging 50 neighbouring policies instead of one checkpoint.

    tail_k = (1 / N) sum_{i = I - N + 1}^{I} R_k(i)      R_k(i): mean return after k steps at iteration i

``evals``: the spread of one evaluation repeated with different evaluation seeds (``evaluate --seed S --out DIR``,
each writing ``DIR/eval.json``). The test tasks stay fixed; only the sampled episodes, and hence the adaptation
steps, change. The mean over S estimates what the protocol gives in expectation, and the standard deviation over
S is the noise of a single protocol run.

    python -m metalearn_edu.rl.run_summary tail runs/navigation/ppo-maml-seed{0,1,2,3,4} --last 50
    python -m metalearn_edu.rl.run_summary evals runs/nav12/evalseed-350-s{0..7}/eval.json
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


def evaluation_spread(records: Sequence[dict], method: str | None = None) -> dict[str, object]:
    """Mean and standard deviation over repeated evaluations of one method's mean return after each step.

    ``records``: ``eval.json`` objects of the same checkpoints and test tasks; ``method``: which curve (default: the
    only one). Returns {"method", "steps", "mean": [K + 1], "sd": [K + 1], "repeats"}.
    """
    if len(records) < 2:
        raise ValueError(f"evaluation_spread needs at least 2 evaluations, got {len(records)}")
    names = list(records[0]["methods"])
    if method is None:
        if len(names) != 1:
            raise ValueError(f"the evaluations hold several methods ({', '.join(names)}): choose one with --method")
        method = names[0]
    if any(method not in r["methods"] for r in records):
        raise ValueError(f"method {method!r} is not in every evaluation; the first holds {', '.join(names)}")
    tasks = {json.dumps({k: v for k, v in r["protocol"].items() if k != "seed"}, sort_keys=True) for r in records}
    if len(tasks) != 1:
        raise ValueError("the evaluations differ in more than their seed (protocol, test tasks or steps): not repeats of one evaluation")
    curves = [r["methods"][method]["mean"] for r in records]  # (S, K + 1)
    columns = list(zip(*curves))
    return {"method": method, "steps": records[0]["steps"], "mean": [statistics.fmean(c) for c in columns],
            "sd": [statistics.stdev(c) for c in columns], "repeats": len(records)}


def _tail(args: argparse.Namespace) -> None:
    tails = [training_tail(read_metrics(run), args.last) for run in args.runs]
    keys = list(tails[0])
    print("run".ljust(48) + "".join(k.rjust(17) for k in keys))
    for run, tail in zip(args.runs, tails):
        print(str(run).ljust(48) + "".join(f"{tail[k]:17.2f}" for k in keys))
    if len(tails) > 1:
        cells = [mean_ci95([t[k] for t in tails]) for k in keys]
        print(f"mean +- 95% CI over {len(tails)} runs".ljust(48) + "".join(f"{m:8.2f} +- {h:5.2f}" for m, h in cells))


def _evals(args: argparse.Namespace) -> None:
    spread = evaluation_spread([json.loads(Path(p).read_text()) for p in args.files], args.method)
    print(f"{spread['method']}, {spread['repeats']} evaluation seeds")
    print("steps".ljust(8) + "".join(str(k).rjust(10) for k in spread["steps"]))
    print("mean".ljust(8) + "".join(f"{m:10.2f}" for m in spread["mean"]))
    print("sd".ljust(8) + "".join(f"{s:10.2f}" for s in spread["sd"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalearn_edu.rl.run_summary", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    tail = sub.add_parser("tail", help="mean training returns over each run's last N iterations, and over the runs")
    tail.add_argument("runs", nargs="+", help="training run folders (or their metrics.jsonl)")
    tail.add_argument("--last", type=int, default=50, help="N: iterations averaged at the end of each run (default: 50)")
    tail.set_defaults(func=_tail)
    evals = sub.add_parser("evals", help="mean and sd over repeats of one evaluation with different --seed")
    evals.add_argument("files", nargs="+", help="eval.json files of the repeats")
    evals.add_argument("--method", default=None, help="the curve to summarise when the files hold several (default: the only one)")
    evals.set_defaults(func=_evals)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
