"""What several meta-RL tests build: a tiny 2D-navigation meta-batch and the policy it was sampled with."""

from __future__ import annotations

import torch

from metalearn_edu.rl.maml_rl import InnerSpec, MetaBatch
from metalearn_edu.rl.policies import GaussianMLPPolicy
from metalearn_edu.rl.sampler import MetaSampler

TINY_INNER = InnerSpec(lr=0.5, estimator="lvc")  # the inner step the post-update episodes of tiny_meta_batch were sampled after


def tiny_meta_batch(hidden: tuple[int, ...], horizon: int, tasks: int, episodes: int,
                    dtype: torch.dtype = torch.float32) -> tuple[GaussianMLPPolicy, MetaBatch]:
    """A seeded policy (log sigma -1) and its meta-batch on navigation: ``episodes`` pre-update episodes per task, one
    TINY_INNER step, as many post-update episodes; in float64 too (policy and batches converted after sampling)."""
    torch.manual_seed(0)
    sampler = MetaSampler("navigation2d", horizon=horizon)
    policy = GaussianMLPPolicy(2, 2, hidden=hidden, init_log_std=-1.0)
    task_list = sampler.sample_tasks(tasks, rng=0)
    pre = sampler.sample(policy, task_list, episodes, seed=1)
    post = sampler.sample(policy, task_list, episodes, params=TINY_INNER.adapt_detached(policy, policy.parameters_dict(), pre), seed=2)
    if dtype == torch.float64:
        policy, pre, post = policy.double(), pre.to(dtype=torch.float64), post.to(dtype=torch.float64)
    return policy, MetaBatch.build(pre, post, policy, gamma=0.99)
