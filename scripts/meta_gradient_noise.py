"""Probe (not training): how large and how noisy is the meta-gradient of each inner-step estimator?

naive, lvc and loaded-dice take the same inner step (theta' = theta + alpha grad L, the protocol's step) and differ
only in the Hessian the meta-gradient carries (metalearn_edu.rl.inner). For a meta-trained checkpoint this script
samples ``--batches`` independent meta-batches (T tasks, B pre-update episodes each, the inner step, B post-update
episodes with theta'), and for each estimator computes the outer gradient of the first PPO-MAML epoch, the gradient
of the post-update policy-gradient surrogate through the inner step:

    g = d/dtheta  mean_i (1/N_i) sum_b sum_t log pi_theta'_i(a_t | s_t) A_t        (A_t: GAE over the linear baseline, standardised)

It prints, per estimator, the mean over batches of |g| (one batch's gradient), |mean of g| over the batches (what they
agree on) and the same two for g minus LVC's g (the part the extra curvature terms add). Every batch uses the same tasks
and episodes for every estimator.

Usage:
    python scripts/meta_gradient_noise.py --checkpoint RUN/best.pt [--estimators lvc loaded-dice] [--tasks 20]
        [--rollouts 20] [--batches 6] [--gae-lambda 0.95] [--dice-lambda L] [--seed 0] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from metalearn_edu.cli import positive_int
from metalearn_edu.rl.maml_rl import InnerSpec, estimate_advantages, per_step
from metalearn_edu.rl.objectives import pg_surrogate
from metalearn_edu.rl.train import load_rl_checkpoint, make_sampler

SAME_STEP = ("naive", "lvc", "loaded-dice")  # the estimators whose inner step is the protocol's


def meta_gradients(checkpoint: str, estimators: list[str], *, tasks: int, rollouts: int, batches: int, gae_lambda: float,
                   seed: int = 0, dice_lambda: float | None = None) -> dict[str, torch.Tensor]:
    """{estimator: (batches, P)} outer gradients of the first PPO-MAML epoch, one row per independent meta-batch."""
    bad = [e for e in estimators if e not in SAME_STEP]
    if bad:
        raise ValueError(f"estimators must be among {', '.join(SAME_STEP)} (the same inner step), got {bad}")
    policy, config, _ = load_rl_checkpoint(checkpoint)
    theta = dict(policy.parameters_dict())
    spec = InnerSpec(lr=config.inner_lr, estimator="lvc", gamma=config.gamma, gae_lambda=gae_lambda)
    rows: dict[str, list[torch.Tensor]] = {e: [] for e in estimators}
    with make_sampler(config, "cpu") as sampler:
        for r in range(batches):
            task_list = sampler.sample_tasks(tasks, rng=np.random.default_rng([seed, r]))
            pre = sampler.sample(policy, task_list, rollouts, seed=2 * (seed * batches + r))
            post = sampler.sample(policy, task_list, rollouts, params=spec.adapt_detached(policy, theta, pre),
                                  seed=2 * (seed * batches + r) + 1)
            advantages = estimate_advantages(post, policy, gamma=config.gamma, gae_lambda=gae_lambda)  # (H, T, B)
            for estimator in estimators:
                estimator_spec = replace(spec, estimator=estimator, dice_lambda=dice_lambda if estimator == "loaded-dice" else None)
                adapted = estimator_spec.adapt(policy, theta, pre, create_graph=True)
                log_probs = policy.distribution(adapted, post.observations, task_dim=1).log_prob(post.actions)  # (H, T, B)
                objective = per_step(pg_surrogate(log_probs, advantages, post.mask), post.mask)
                grads = torch.autograd.grad(objective, list(theta.values()))
                rows[estimator].append(torch.cat([g.flatten() for g in grads]).detach())
    return {e: torch.stack(g) for e, g in rows.items()}


def summarise(gradients: dict[str, torch.Tensor], reference: str = "lvc") -> dict[str, dict[str, float]]:
    """Per estimator: mean |g| over batches, |mean g|, and the same for g minus the reference's g (when it is there)."""
    table = {}
    for estimator, g in gradients.items():
        row = {"batch_norm": float(g.norm(dim=1).mean()), "mean_norm": float(g.mean(dim=0).norm())}
        if reference in gradients and estimator != reference:
            extra = g - gradients[reference]
            row |= {"extra_batch_norm": float(extra.norm(dim=1).mean()), "extra_mean_norm": float(extra.mean(dim=0).norm())}
        table[estimator] = row
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a meta-RL checkpoint (best.pt or checkpoint.pt) with a Gaussian policy")
    parser.add_argument("--estimators", nargs="+", default=list(SAME_STEP), help=f"among {', '.join(SAME_STEP)} (default: all three)")
    parser.add_argument("--tasks", type=positive_int, default=20, help="T, tasks per meta-batch (default: 20)")
    parser.add_argument("--rollouts", type=positive_int, default=20, help="B, episodes per task before and after the step (default: 20)")
    parser.add_argument("--batches", type=positive_int, default=6, help="independent meta-batches (default: 6)")
    parser.add_argument("--gae-lambda", type=float, default=0.95, help="GAE lambda of the advantages (default: 0.95)")
    parser.add_argument("--dice-lambda", type=float, default=None, help="loaded-dice's discount of the earlier actions' scores (default: --gae-lambda)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the tasks and episodes (default: 0)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    for name in ("gae_lambda", "dice_lambda"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    torch.set_num_threads(1)
    gradients = meta_gradients(args.checkpoint, args.estimators, tasks=args.tasks, rollouts=args.rollouts, batches=args.batches,
                               gae_lambda=args.gae_lambda, seed=args.seed, dice_lambda=args.dice_lambda)
    table = summarise(gradients)
    print(f"{'estimator':<13}{'mean |g|':>10}{'|mean g|':>10}{'|g - lvc|':>11}{'|mean (g - lvc)|':>18}")
    for estimator, row in table.items():
        extra = f"{row['extra_batch_norm']:>11.4f}{row['extra_mean_norm']:>18.4f}" if "extra_batch_norm" in row else ""
        print(f"{estimator:<13}{row['batch_norm']:>10.4f}{row['mean_norm']:>10.4f}{extra}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "table": table}, indent=2))
    return table


if __name__ == "__main__":
    main()
