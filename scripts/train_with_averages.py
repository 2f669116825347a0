"""Screen (seventeenth session): keep averages of the meta-parameters while ``metalearn-edu train`` runs.

After every meta-iteration, for the policy's parameters θ (N = ``--iterations`` of the run):

    θ̄_d   ← d θ̄_d + (1 − d) θ          for each d in --decays, started at θ after the first iteration
    θ̄_swa  = the uniform mean of θ over the iterations ≥ ⌈swa_from · N⌉

They are written every 10 iterations and at the last, as OUT/ema{d}.pt and OUT/swa.pt in ``best.pt``'s format, so that
``metalearn-edu evaluate --checkpoint OUT/ema0.98.pt`` reads them. The training itself is the command's, unchanged:

    python scripts/train_with_averages.py train navigation2d --algo ppo-maml --inner-steps 2 ... --out DIR

Averaging made every reading worse (docs/RESULTS.md, "Seventeenth session"), so the library has no such option; the
script keeps the screen's figures reproducible from a command in the repository.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from metalearn_edu.cli import main as cli_main
from metalearn_edu.rl import train as rl_train
from metalearn_edu.train import _atomic_save  # the write-then-rename the training loop's checkpoints use

WRITE_EVERY = 10


class ParameterAverages:
    """Exponential moving averages and a uniform tail mean of a policy's parameters, written as checkpoints."""

    def __init__(self, decays: tuple[float, ...], swa_from: float) -> None:
        for d in decays:
            if not 0 < d < 1:
                raise ValueError(f"decays must lie strictly between 0 and 1, got {d!r}")
        if not 0 <= swa_from < 1:
            raise ValueError(f"swa_from must lie in [0, 1), got {swa_from!r}")
        self.decays, self.swa_from = tuple(decays), swa_from
        self.averages: dict[str, dict[str, Tensor]] = {}
        self.swa_count = 0

    def update(self, theta: dict[str, Tensor], done: int, iterations: int) -> None:
        """Fold θ after iteration ``done`` (1-based) of ``iterations`` into every average."""
        theta = {k: v.detach().clone() for k, v in theta.items()}
        for d in self.decays:
            key = f"ema{d}"
            old = self.averages.get(key)
            self.averages[key] = theta if old is None else {k: d * old[k] + (1 - d) * theta[k] for k in theta}
        if done >= math.ceil(self.swa_from * iterations):
            n, old = self.swa_count, self.averages.get("swa")
            self.averages["swa"] = theta if old is None else {k: (n * old[k] + theta[k]) / (n + 1) for k in theta}
            self.swa_count = n + 1

    def write(self, out: Path, policy: nn.Module, config: Any, done: int) -> None:
        """OUT/<name>.pt for every average: the policy's state with the averaged parameters, in best.pt's format."""
        for name, params in self.averages.items():
            state = policy.state_dict()
            state.update({k: v.clone() for k, v in params.items()})
            _atomic_save({"policy": state, "iteration": done, "config": asdict(config), "policy_spec": rl_train.policy_spec(policy),
                          "best_score": float("nan"), "average": name}, out / f"{name}.pt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run `metalearn-edu train ...` and keep moving averages of the policy's parameters next to its checkpoints.",
        usage="%(prog)s [--decays D ...] [--swa-from F] train ENV [options of train, with --out]")
    parser.add_argument("--decays", type=float, nargs="+", default=[0.95, 0.98], help="the decays d of the moving averages (default 0.95 0.98)")
    parser.add_argument("--swa-from", type=float, default=0.7, help="the uniform mean starts at this fraction of --iterations (default 0.7)")
    argv = sys.argv[1:] if argv is None else list(argv)
    at = argv.index("train") if "train" in argv else len(argv)  # the script's options end where the command begins
    args, rest = parser.parse_args(argv[:at]), argv[at:]
    if not rest or "--out" not in rest:
        parser.error("give the train command to run, with --out (where the averages are written)")
    averages = ParameterAverages(tuple(args.decays), args.swa_from)
    out = Path(rest[rest.index("--out") + 1])
    original = rl_train.meta_iteration

    def meta_iteration(it, policy, optimizer, sampler, config, kl_coef):  # the train loop's step, then the averages
        record = original(it, policy, optimizer, sampler, config, kl_coef)
        done = it + 1
        averages.update(dict(policy.named_parameters()), done, config.iterations)
        if done % WRITE_EVERY == 0 or done == config.iterations:
            averages.write(out, policy, config, done)
        return record

    rl_train.meta_iteration = meta_iteration
    try:
        return cli_main(rest)
    finally:
        rl_train.meta_iteration = original


if __name__ == "__main__":
    raise SystemExit(main())
