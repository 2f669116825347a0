"""``task_chunk``: the outer PPO update computed a few tasks at a time is the same update as all tasks at once.

J(theta) is a mean of per-task terms (each task's inner step, clipped surrogate and pre-update KL use only that
task's episodes), so the chunks' gradients, weighted by their share of the tasks, add up to the full gradient.
Checked in float64 with an uneven split, two inner steps, the multi-step loss and both KL guards acting.
"""

import pytest
import torch

from metalearn_edu.rl.config import check_fields_apply
from metalearn_edu.rl.maml_rl import InnerSpec, MetaBatch
from metalearn_edu.rl.policies import GaussianMLPPolicy
from metalearn_edu.rl.ppo_maml import ppo_adapt, ppo_inner_step, promp_step, task_slices
from metalearn_edu.rl.sampler import MetaSampler
from metalearn_edu.rl.train import RLTrainConfig

TASKS = 5
INNER = InnerSpec(lr=0.5, estimator="lvc", later_lr=0.25)


def _fresh_policy() -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-1.0).double()


@pytest.fixture(scope="module")
def meta() -> MetaBatch:
    """Two inner steps on 5 tasks: pre-update, after-step-1 (mid) and post-update episodes, float64."""
    sampler = MetaSampler("navigation2d", horizon=10)
    policy = _fresh_policy().float()
    tasks = sampler.sample_tasks(TASKS, rng=0)
    pre = sampler.sample(policy, tasks, 4, seed=1)
    first = INNER.adapt_detached(policy, policy.parameters_dict(), pre)
    mid = sampler.sample(policy, tasks, 4, params=first, seed=3)
    post = sampler.sample(policy, tasks, 4, params=INNER.adapt_detached(policy, first, mid, lr=0.25, per_task_params=True), seed=2)
    pre, mid, post = (batch.to(dtype=torch.float64) for batch in (pre, mid, post))
    return MetaBatch.build(pre, post, _fresh_policy(), gamma=0.99, mids=(mid,), score_mids=True)


def test_task_slices_cover_every_task_once():
    assert task_slices(5, None) == [slice(0, 5)]
    assert task_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert task_slices(4, 8) == [slice(0, 4)]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="task_chunk must be a positive integer"):
            task_slices(5, bad)


def test_meta_batch_select_slices_every_tensor_on_the_task_dimension(meta):
    part = meta.select(slice(1, 3))
    assert part.pre.num_tasks == part.post.num_tasks == part.mids[0].num_tasks == 2
    torch.testing.assert_close(part.pre.observations, meta.pre.observations[:, 1:3])
    torch.testing.assert_close(part.post_advantages, meta.post_advantages[:, 1:3])
    torch.testing.assert_close(part.mid_advantages[0], meta.mid_advantages[0][:, 1:3])
    assert part.pre.tasks == meta.pre.tasks[1:3]
    assert MetaBatch(meta.pre).select(slice(0, 1)).post is None


def _update(meta, step, chunk, **kwargs):
    policy = _fresh_policy()
    stats = step(policy, torch.optim.Adam(policy.parameters(), 0.05), meta, task_chunk=chunk, **kwargs)
    return stats, {n: p.detach().clone() for n, p in policy.named_parameters()}


@pytest.mark.parametrize("guards", [{}, {"kl_stop": 2e-3}, {"post_kl_stop": 2e-3}])
def test_promp_in_chunks_is_the_same_update(meta, guards):
    def step(policy, optimizer, meta, **kwargs):
        return promp_step(policy, optimizer, meta, INNER, epochs=4, every_step=True, **kwargs)

    whole, whole_params = _update(meta, step, None, **guards)
    if guards:  # the bound acts, so the chunks must also agree on where the guard stops
        assert whole["epochs_kept"] < 4
    for chunk in (1, 2):
        parts, parts_params = _update(meta, step, chunk, **guards)
        assert parts.keys() == whole.keys()
        for key in whole:
            assert parts[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-12), key
        for name in whole_params:
            torch.testing.assert_close(parts_params[name], whole_params[name], rtol=1e-9, atol=1e-12)


def test_ppo_inner_in_chunks_is_the_same_update(meta):
    adapted = ppo_adapt(_fresh_policy(), _fresh_policy().parameters_dict(), meta.pre, INNER, epochs=2)

    def step(policy, optimizer, meta, **kwargs):
        return ppo_inner_step(policy, optimizer, meta, adapted, epochs=3, post_kl_stop=1e-2, **kwargs)

    whole, whole_params = _update(meta, step, None)
    parts, parts_params = _update(meta, step, 3)  # chunks of 3 and 2 tasks: each must get its own tasks' adaptation
    for key in whole:
        assert parts[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-12), key
    for name in whole_params:
        torch.testing.assert_close(parts_params[name], whole_params[name], rtol=1e-9, atol=1e-12)


def test_task_chunk_is_validated_and_refused_where_it_would_be_ignored():
    with pytest.raises(ValueError, match="task_chunk must be a positive integer"):
        RLTrainConfig.for_env("navigation2d", task_chunk=0).validate()
    RLTrainConfig.for_env("navigation2d", task_chunk=10).validate()
    with pytest.raises(ValueError, match="--task-chunk is read by ppo-maml, ppo-inner only"):
        check_fields_apply("maml-trpo", {"task_chunk": 10})
