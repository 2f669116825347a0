"""Copy a finished meta-RL run into the package (metalearn_edu/checkpoints/rl/) with its JSON card.

The card records what reproduces the checkpoint and what it measured:

- ``command``: the training command with the iteration count the run reached (no time limit, so the
  same seed gives the same policy on any machine), ``seed``, ``iterations``, ``training_wall_clock_s``
  (the sum of the logged per-iteration times, so resumed sessions add up);
- ``evaluation``: the paper-protocol table written by ``metalearn-edu evaluate ... --json`` (optional);
- ``smoke``: a tiny evaluation (2 tasks, 2 rollouts, 1 step, horizon 50) that tests/test_shipped_rl_checkpoints.py
  re-measures, so a corrupted or swapped file is caught in seconds.

Usage:
    python scripts/ship_rl_checkpoint.py RUN_DIR --env halfcheetah-vel --algo ppo-maml [--evaluation EVAL.json]
        [--evaluate-command "metalearn-edu evaluate ..."]
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import fields
from datetime import date
from pathlib import Path

import torch

from metalearn_edu.checkpoints import export_rl, rl_path, rl_smoke_returns
from metalearn_edu.rl.train import RLTrainConfig, load_rl_checkpoint, read_metrics

SKIP = {"env", "algo", "iterations", "time_limit_s", "log_every", "device", "backend"}


def training_command(config: RLTrainConfig, env: str, iterations: int) -> str:
    """The CLI command that retrains this run: flags only for fields that differ from the preset's defaults."""
    defaults = RLTrainConfig.for_env(config.env, algo=config.algo)
    parts = ["metalearn-edu", "train", env, "--algo", config.algo, "--iterations", str(iterations)]
    for f in fields(RLTrainConfig):
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        if f.name in SKIP or f.name == "seed" or value == default or (isinstance(value, list) and tuple(value) == default):
            continue
        flag = "--" + f.name.replace("_", "-")
        parts += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    return " ".join(parts + ["--seed", str(config.seed)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder with checkpoint.pt and metrics.jsonl")
    parser.add_argument("--env", required=True, help="halfcheetah-vel or halfcheetah-dir")
    parser.add_argument("--algo", required=True, help="ppo-maml or pretrain")
    parser.add_argument("--evaluation", type=Path, help="JSON written by 'metalearn-edu evaluate ... --json'")
    parser.add_argument("--evaluate-command", default="", help="the command that wrote --evaluation")
    args = parser.parse_args()
    torch.set_num_threads(1)

    _, config, state = load_rl_checkpoint(args.run)
    metrics = [m for m in read_metrics(args.run) if m["iteration"] <= state["iteration"]]
    card = {
        "env": args.env,
        "algo": args.algo,
        "seed": config.seed,
        "iterations": int(state["iteration"]),
        "command": training_command(config, args.env, int(state["iteration"])),
        "training_wall_clock_s": round(sum(float(m["iteration_s"]) for m in metrics)),  # over resumed sessions
        "final_training_returns": {key: metrics[-1][key] for key in ("pre_return", "post_return") if key in metrics[-1]},
        "machine": f"2-core CPU shared with other jobs, 1 torch thread, torch {torch.__version__}, python {platform.python_version()}",
        "date": date.today().isoformat(),
        "config": state["config"],
    }
    if args.evaluation:
        card["evaluate"] = args.evaluate_command
        card["evaluation"] = json.loads(args.evaluation.read_text())
    path = export_rl(args.run, args.env, args.algo, card)
    card["smoke"] = {"protocol": "2 test tasks, 2 rollouts, steps 0..1, horizon 50", "returns": rl_smoke_returns(args.env, args.algo).tolist()}
    rl_path(args.env, args.algo).with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes) and its card: {card['command']}")


if __name__ == "__main__":
    main()
