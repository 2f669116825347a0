"""Probe (not the protocol): how much would a smaller sigma after adaptation be worth to a meta-trained policy?

The evaluation protocol adapts with one vanilla policy-gradient step per k and samples every step with the adapted
policy's own sigma. On 2D navigation that sigma barely changes during adaptation, so the sigma that explores before
adaptation is the sigma that hovers near the goal after it. This probe replays the protocol's adaptation
(:func:`metalearn_edu.rl.evaluate.adaptation_path`, same test tasks and episodes) but multiplies the Gaussian
sigma by ``--factor`` right after the steps named by ``--after-steps``:

    log sigma_k  <-  log sigma_k + log(factor) / k_scale      for k in --after-steps  (k_scale: the policy's log_std_scale)

Everything else is the protocol: the next step's gradient is taken with the changed sigma, so a smaller sigma also
makes that fixed-size step larger (about 1/sigma with standardised advantages). It gives an upper bound on what an inner
step that shrinks sigma could add, with the mean placed as the meta-trained policy places it. Prints the mean return
after 0..K steps over the checkpoints (each a training seed), with the factor and without it.

Usage:
    python scripts/probe_sigma_after_adaptation.py --checkpoint RUN/best.pt [RUN2/best.pt ...] --factor 0.6 \\
        --after-steps 2 [--horizon 100 --gae-lambda 0.95] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from metalearn_edu.cli import positive_float
from metalearn_edu.rl.evaluate import Protocol, adaptation_returns, eval_config
from metalearn_edu.rl.train import load_rl_checkpoint, make_sampler


def probe_returns(checkpoint: str, protocol: Protocol, factor: float, after_steps: set[int]) -> list[float]:
    """Mean return over the test tasks after 0..K steps, sigma multiplied by ``factor`` after the steps in ``after_steps``."""
    policy, config, _ = load_rl_checkpoint(checkpoint)
    if "log_std" not in dict(policy.named_parameters()):
        raise ValueError(f"{checkpoint}: the probe needs a Gaussian policy with a log_std parameter")
    shift = math.log(factor) / policy.log_std_scale

    def shrink(k: int, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**params, "log_std": params["log_std"] + shift} if k in after_steps else params

    with make_sampler(eval_config(config, protocol), "cpu") as sampler:
        return adaptation_returns(policy, sampler, protocol, after_step=shrink).mean(dim=1).tolist()  # (K + 1, N) -> K + 1


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", required=True, help="meta-RL checkpoints (best.pt or checkpoint.pt), one per training seed")
    parser.add_argument("--factor", type=positive_float, required=True, help="sigma is multiplied by this after the chosen steps")
    parser.add_argument("--after-steps", type=int, nargs="+", default=None, help="the adaptation steps k (1..K) after which sigma changes (default: all)")
    parser.add_argument("--horizon", type=int, default=None, help="episode length (default: the checkpoint's)")
    parser.add_argument("--gae-lambda", type=float, default=1.0, help="GAE lambda of the adaptation steps (the protocol's default 1)")
    parser.add_argument("--steps", type=int, default=3, help="K, adaptation steps")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.after_steps is None:
        args.after_steps = list(range(1, args.steps + 1))
    if any(not 1 <= k <= args.steps for k in args.after_steps):
        parser.error(f"--after-steps must lie in 1..{args.steps} (--steps), got {args.after_steps}")
    torch.set_num_threads(1)
    protocol = Protocol(steps=args.steps, horizon=args.horizon, gae_lambda=args.gae_lambda)
    rows = {}
    for name, factor in (("protocol", 1.0), (f"sigma x {args.factor} after steps {sorted(args.after_steps)}", args.factor)):
        per_seed = [probe_returns(c, protocol, factor, set(args.after_steps)) for c in args.checkpoint]
        rows[name] = [sum(column) / len(column) for column in zip(*per_seed)]
    print(f"mean return after k steps, {len(args.checkpoint)} checkpoint(s), 40 test tasks x 20 rollouts, lambda {args.gae_lambda}")
    print(f"{'':45s}" + "".join(f"{'k=' + str(k):>10s}" for k in range(args.steps + 1)))
    for name, values in rows.items():
        print(f"{name:45s}" + "".join(f"{v:10.2f}" for v in values))
    result = {"checkpoints": args.checkpoint, "factor": args.factor, "after_steps": sorted(args.after_steps), "returns": rows}
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
