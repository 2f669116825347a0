"""Screen (seventeenth session): PPO-MAML with a Gaussian policy whose σ is larger near the start of 2D navigation.

    log σ(s) = log σ_θ + log(ratio) · exp(−‖s‖² / (2 r²))        s: the position (obs_dim 2); every episode starts at (0, 0)

σ_θ is the policy's own σ, learned as usual (``--init-log-std``, the outer updates, the inner steps); ``ratio`` and the
radius r are fixed, not learned. Before adaptation the meta-learned policy rests within about 0.05 of the start and
after it at the goal, so this σ is about ratio · σ_θ for the episodes the first step learns from and σ_θ where the
adapted policy hovers (for goals farther than a few r from the start).

The script patches ``GaussianMLPPolicy.raw_outputs`` in its own process and then runs the ``metalearn-edu`` command
line, so a run trained through it must be evaluated through it, with the same ``--ratio`` and ``--radius``:

    python scripts/screen_start_sigma.py --ratio 1.6 train navigation2d --algo ppo-maml --inner-steps 2 ... --out DIR
    python scripts/screen_start_sigma.py --ratio 1.6 evaluate navigation2d --checkpoint DIR/best.pt --diagnose ...

It did not help (docs/RESULTS.md, "Seventeenth session"), so the library has no such option; the script keeps the
screen's figures reproducible from a command in the repository.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

import torch
from torch import Tensor

from metalearn_edu.cli import main as cli_main
from metalearn_edu.rl.policies import GaussianMLPPolicy


def start_sigma_patch(ratio: float, radius: float) -> Callable[[], None]:
    """Make every ``GaussianMLPPolicy`` on 2-dimensional observations use the σ above; returns the function that undoes it."""
    for name, value in (("ratio", ratio), ("radius", radius)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    original = GaussianMLPPolicy.raw_outputs
    height = math.log(ratio)  # log σ(start) − log σ_θ

    def raw_outputs(self, params, obs: Tensor, task_dim: int | None = None) -> tuple[Tensor, Tensor]:
        mean, log_std = original(self, params, obs, task_dim)  # (..., act_dim) each
        if obs.dtype.is_floating_point and obs.shape[-1] == 2:
            bump = height * torch.exp(-(obs * obs).sum(-1, keepdim=True) / (2 * radius * radius))  # (..., 1)
            log_std = log_std + bump
        return mean, log_std

    GaussianMLPPolicy.raw_outputs = raw_outputs

    def undo() -> None:
        GaussianMLPPolicy.raw_outputs = original

    return undo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run `metalearn-edu train|evaluate ...` with a Gaussian policy whose sigma is larger near the start (0, 0): "
                    "log sigma(s) = log sigma_theta + log(ratio) exp(-||s||^2 / (2 radius^2)).",
        usage="%(prog)s --ratio RATIO [--radius RADIUS] {train,evaluate} ENV [options of that command]")
    parser.add_argument("--ratio", type=float, required=True, help="sigma at the start over the learned sigma_theta (> 0)")
    parser.add_argument("--radius", type=float, default=0.08, help="the width r of the region of larger sigma, in position units (default 0.08)")
    argv = sys.argv[1:] if argv is None else list(argv)
    at = next((i for i, word in enumerate(argv) if word in ("train", "evaluate")), len(argv))  # where the command begins
    args, rest = parser.parse_args(argv[:at]), argv[at:]
    if not rest:
        parser.error("after --ratio and --radius give the command to run: train or evaluate, then its arguments")
    undo = start_sigma_patch(args.ratio, args.radius)
    try:
        return cli_main(rest)
    finally:
        undo()


if __name__ == "__main__":
    raise SystemExit(main())
