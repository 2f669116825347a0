"""Probe (not the protocol): adapt with antithetic episodes, each task's B episodes in B/2 mirrored pairs.

The protocol samples a task's B episodes independently. Here episode b + B/2 draws the negated Gaussian noise of
episode b at every step, a = mu(s) + sigma * (-eps), so every episode keeps the policy's own law and only the pairs
are coupled. Everything else is the protocol's adaptation (:func:`metalearn_edu.rl.evaluate.adaptation_returns`: the
same test tasks, step sizes and estimator).

Why: antithetic pairs are the classic way to cut the noise of a score-function gradient without more episodes
(each pair's difference cancels what is even in the noise, for example the baseline's error, from the terms that are
odd in it). If the 20-episode step's noise limits the adapted returns, the pairs should raise them. A policy
meta-trained with independent episodes may also have learned to rely on their noise; the probe says which way it goes
for a given checkpoint, not what a policy meta-trained with pairs would do.

Usage:
    python scripts/probe_antithetic.py --checkpoint RUN/best.pt [RUN2/best.pt ...] [--horizon 100 --gae-lambda 0.95]
        [--rollouts 20] [--noise-repeats 8] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import types
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from metalearn_edu.envs.navigation import goals_from_tasks
from metalearn_edu.rl.evaluate import Protocol, adaptation_path, adaptation_returns, eval_config
from metalearn_edu.rl.train import load_rl_checkpoint, make_sampler


def antithetic_sample(policy: torch.nn.Module, raw: tuple[Tensor, ...], generator: torch.Generator | None) -> Tensor:
    """a = mu + sigma * eps with eps of episodes B/2..B-1 the negated eps of episodes 0..B/2-1 (raw: (T, B, act_dim) each)."""
    mean, log_std = raw
    episodes = mean.shape[-2]
    if mean.dim() < 3 or episodes % 2:
        raise ValueError(f"antithetic sampling needs (T, B, act_dim) outputs with an even B, got shape {tuple(mean.shape)}")
    half = torch.randn((*mean.shape[:-2], episodes // 2, mean.shape[-1]), generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + log_std.exp() * torch.cat([half, -half], dim=-2)


def load_policy(checkpoint: str, antithetic: bool) -> tuple[torch.nn.Module, object]:
    """The checkpoint's Gaussian policy and config; with ``antithetic`` the policy samples in mirrored pairs."""
    policy, config, _ = load_rl_checkpoint(checkpoint)
    if "log_std" not in dict(policy.named_parameters()):
        raise ValueError(f"{checkpoint}: the probe needs a Gaussian policy with a log_std parameter")
    if antithetic:
        policy.sample = types.MethodType(antithetic_sample, policy)
    return policy, config


def probe_returns(checkpoint: str, protocol: Protocol, antithetic: bool) -> list[float]:
    """Mean return over the test tasks after 0..K steps, with independent or antithetic episodes."""
    policy, config = load_policy(checkpoint, antithetic)
    with make_sampler(eval_config(config, protocol), "cpu") as sampler:
        return adaptation_returns(policy, sampler, protocol).mean(dim=1).tolist()  # (K + 1, N) -> K + 1


def rest_scatter(checkpoint: str, protocol: Protocol, antithetic: bool, repeats: int) -> list[dict[str, float]]:
    """How repeatable the protocol's steps are, seen where the adapted mean action comes to rest (2D navigation).

    Over ``repeats`` evaluation seeds (the same test tasks), e_i^(r) is the last position of task i's mean-action
    episode after k steps. For each k = 1..K, the mean over tasks of ||mean_r e_i^(r) - g_i|| ("miss": what every
    draw of the episodes gets wrong alike) and of mean_r ||e_i^(r) - mean_r e_i^(r)|| ("scatter": what changes with
    the draw).
    """
    policy, config = load_policy(checkpoint, antithetic)
    ends: dict[int, list[Tensor]] = {k: [] for k in range(1, protocol.steps + 1)}
    with make_sampler(eval_config(config, protocol), "cpu") as sampler:
        for seed in range(repeats):
            for k, params, batch in adaptation_path(policy, sampler, replace(protocol, seed=seed)):
                if k >= 1:
                    mean_batch = sampler.sample(policy, batch.tasks, 1, params=params, seed=seed, deterministic=True)
                    ends[k].append(mean_batch.last_observations()[:, 0].double())  # (N, 2)
    goals = torch.tensor(goals_from_tasks(batch.tasks), dtype=torch.float64)  # (N, 2)
    rows = []
    for k in sorted(ends):
        points = torch.stack(ends[k])  # (R, N, 2)
        center = points.mean(dim=0)  # (N, 2)
        rows.append({"miss": float((center - goals).norm(dim=1).mean()), "scatter": float((points - center).norm(dim=2).mean())})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", required=True, help="meta-RL checkpoints (best.pt or checkpoint.pt), one per training seed")
    parser.add_argument("--horizon", type=int, default=None, help="episode length (default: the checkpoint's)")
    parser.add_argument("--gae-lambda", type=float, default=1.0, help="GAE lambda of the adaptation steps (the protocol's default 1)")
    parser.add_argument("--rollouts", type=int, default=20, help="B, episodes per task and step (even: B/2 pairs)")
    parser.add_argument("--steps", type=int, default=3, help="K, adaptation steps")
    parser.add_argument("--noise-repeats", type=int, default=0,
                        help="also measure how the adapted resting point scatters over this many evaluation seeds (0: skip; at least 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.rollouts < 2 or args.rollouts % 2:
        parser.error(f"--rollouts must be an even number >= 2 (pairs of episodes), got {args.rollouts}")
    if args.noise_repeats == 1 or args.noise_repeats < 0:
        parser.error(f"--noise-repeats must be 0 (skip) or at least 2, got {args.noise_repeats}")
    torch.set_num_threads(1)
    protocol = Protocol(steps=args.steps, rollouts=args.rollouts, horizon=args.horizon, gae_lambda=args.gae_lambda)
    per_seed = {name: [probe_returns(c, protocol, antithetic) for c in args.checkpoint]
                for name, antithetic in (("protocol", False), ("antithetic pairs", True))}
    rows = {name: [sum(column) / len(column) for column in zip(*seeds)] for name, seeds in per_seed.items()}
    print(f"mean return after k steps, {len(args.checkpoint)} checkpoint(s), 40 test tasks x {args.rollouts} rollouts, lambda {args.gae_lambda}")
    print(f"{'':20s}" + "".join(f"{'k=' + str(k):>10s}" for k in range(args.steps + 1)))
    for name, values in rows.items():
        print(f"{name:20s}" + "".join(f"{v:10.2f}" for v in values))
    result = {"checkpoints": args.checkpoint, "rollouts": args.rollouts, "returns": rows, "per_seed": per_seed}
    if args.noise_repeats:
        print(f"where the mean action comes to rest after k steps, over {args.noise_repeats} evaluation seeds (mean over tasks and checkpoints)")
        result["rest"] = {}
        for name, antithetic in (("protocol", False), ("antithetic pairs", True)):
            measured = [rest_scatter(c, protocol, antithetic, args.noise_repeats) for c in args.checkpoint]  # [checkpoint][k - 1]
            result["rest"][name] = [{key: sum(m[k][key] for m in measured) / len(measured) for key in ("miss", "scatter")}
                                    for k in range(args.steps)]
            print(f"{name:20s}" + "".join(f"  k={k + 1}: misses by {row['miss']:.4f}, scatters {row['scatter']:.4f}"
                                          for k, row in enumerate(result["rest"][name])))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
