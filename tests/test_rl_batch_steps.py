"""The evaluation protocol's adaptation step, and a batch counted in environment steps (rllab's ``batch_size``,
Finn et al.'s test scripts).

Episodes past the budget are masked out whole, so they must count for nothing: not in the mean return,
not in the inner step (baseline fit, advantage standardisation, per-step average). The protocol's discount
and GAE lambda are the inner step's.
"""

from dataclasses import replace

import pytest
import torch

from metalearn_edu.rl.batch import EpisodeBatch, concat_episodes
from metalearn_edu.rl.evaluate import Protocol, adaptation_path, adaptation_returns, protocol_episodes
from metalearn_edu.rl.evaluate import test_tasks as protocol_test_tasks
from metalearn_edu.rl.maml_rl import InnerSpec
from metalearn_edu.rl.policies import GaussianMLPPolicy
from metalearn_edu.rl.train import RLTrainConfig, make_sampler

HORIZON = 10


def _batch_with_lengths(lengths: list[list[int]]) -> EpisodeBatch:
    """T x B episodes of the given lengths, reward 1 per step (a return equals the length)."""
    T, B = len(lengths), len(lengths[0])
    mask = torch.zeros(HORIZON, T, B)
    for t, row in enumerate(lengths):
        for b, n in enumerate(row):
            mask[:n, t, b] = 1.0
    return EpisodeBatch(observations=torch.zeros(HORIZON, T, B, 2), actions=torch.zeros(HORIZON, T, B, 2), rewards=mask.clone(),
                        mask=mask, tasks=[{}] * T)


@pytest.mark.parametrize("steps, kept", [(1, [1, 1]), (3, [1, 1]), (4, [2, 1]), (8, [2, 1]), (9, [3, 1]), (10, [3, 2]), (100, [4, 4])])
def test_first_episodes_reaching_keeps_whole_episodes_until_the_steps_are_reached(steps, kept):
    batch = _batch_with_lengths([[3, 5, 2, 4], [9, 1, 6, 2]])
    cut = batch.first_episodes_reaching(steps)
    assert cut.episode_weights().sum(dim=1).tolist() == kept
    lengths = torch.tensor([[3, 5, 2, 4], [9, 1, 6, 2]], dtype=torch.float32)
    expected = [lengths[t, :k].mean().item() for t, k in enumerate(kept)]
    assert cut.mean_over_episodes(cut.episode_returns()).tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        batch.first_episodes_reaching(0)


def test_last_steps_and_last_observations_pick_each_episodes_last_valid_step():
    batch = _batch_with_lengths([[3, 5, 2, 4], [9, 1, 6, 2]])
    time = torch.arange(HORIZON, dtype=torch.float32).view(HORIZON, 1, 1, 1)
    batch = replace(batch, observations=(time * torch.tensor([1.0, -1.0])).expand(HORIZON, 2, 4, 2) * batch.mask.unsqueeze(-1))
    assert batch.last_steps().tolist() == [[2, 4, 1, 3], [8, 0, 5, 1]]
    assert batch.last_observations()[..., 0].tolist() == [[2, 4, 1, 3], [8, 0, 5, 1]]  # observation (t, -t) at step t
    assert batch.last_observations()[..., 1].tolist() == [[-2, -4, -1, -3], [-8, 0, -5, -1]]
    assert replace(batch, mask=torch.zeros_like(batch.mask)).last_steps().eq(0).all()  # masked out whole: step 0


def test_concat_episodes_puts_batches_side_by_side_and_refuses_other_tasks():
    a, b = _batch_with_lengths([[3, 5]]), _batch_with_lengths([[2]])
    both = concat_episodes([a, b])
    assert both.episode_returns().tolist() == [[3.0, 5.0, 2.0]]
    with pytest.raises(ValueError, match=r"batches must share \(H, T\)"):
        concat_episodes([a, _batch_with_lengths([[1], [1]])])
    with pytest.raises(ValueError, match="at least one"):
        concat_episodes([])


def _setup():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-0.5, action_scale=0.1)
    return policy, make_sampler(RLTrainConfig(horizon=HORIZON, action_scale=0.1))


def test_to_a_dtype_converts_the_floating_tensors_and_keeps_integer_actions():
    batch = replace(_batch_with_lengths([[HORIZON, 3]]), actions=torch.zeros(HORIZON, 1, 2, dtype=torch.long),
                    infos={"x": torch.ones(HORIZON, 1, 2)})
    double = batch.to(dtype=torch.float64)
    assert double.observations.dtype == double.rewards.dtype == double.mask.dtype == double.infos["x"].dtype == torch.float64
    assert double.actions.dtype == torch.long and torch.equal(double.rewards, batch.rewards.double())
    assert batch.to("cpu").observations.dtype == torch.float32


def test_episodes_masked_out_whole_change_neither_the_inner_step_nor_the_mean_return():
    policy, sampler = _setup()
    with sampler:
        tasks = protocol_test_tasks(sampler, Protocol(test_tasks=3))
        batch = sampler.sample(policy, tasks, 6, seed=4)
    keep = (torch.arange(6) < 4).float()  # (B,) the first four episodes of every task
    masked = replace(batch, mask=batch.mask * keep, rewards=batch.rewards * keep)
    first4 = replace(batch, observations=batch.observations[:, :, :4], actions=batch.actions[:, :, :4], rewards=batch.rewards[:, :, :4],
                     mask=batch.mask[:, :, :4], infos={k: v[:, :, :4] for k, v in batch.infos.items()})
    params = dict(policy.parameters_dict())
    inner = InnerSpec(lr=0.1, estimator="naive")
    adapted_masked = inner.adapt_detached(policy, params, masked)
    adapted_first4 = inner.adapt_detached(policy, params, first4)
    for name, value in adapted_first4.items():
        torch.testing.assert_close(adapted_masked[name], value)
    torch.testing.assert_close(masked.mean_over_episodes(masked.episode_returns()), first4.episode_returns().mean(dim=1))
    # and a wrong mean (over all B, the masked zeros included) would differ
    assert not torch.allclose(masked.episode_returns().mean(dim=1), first4.episode_returns().mean(dim=1))


def test_protocol_episodes_reach_the_step_budget_per_task_and_start_with_the_plain_protocols_episodes():
    policy, sampler = _setup()
    plain = Protocol(steps=1, test_tasks=3, rollouts=4, horizon=HORIZON, seed=1)
    budget = replace(plain, batch_steps=95)
    with sampler:
        tasks = protocol_test_tasks(sampler, plain)
        first = protocol_episodes(policy, sampler, plain, tasks, None, 0)
        batch = protocol_episodes(policy, sampler, budget, tasks, None, 0)
        again = protocol_episodes(policy, sampler, budget, tasks, None, 0)
        returns = adaptation_returns(policy, sampler, budget)
    lengths = batch.mask.sum(dim=0)  # (T, B)
    kept = batch.episode_weights().sum(dim=1).long()  # (T,)
    for t in range(3):
        assert lengths[t].sum() >= 95 > lengths[t].sum() - lengths[t, kept[t] - 1]  # the last kept episode crosses 95
    assert batch.episodes_per_task > 4 and (kept > 9).all()  # at most 10 steps an episode: more than 9 episodes
    torch.testing.assert_close(batch.observations[:, :, :4], first.observations)
    torch.testing.assert_close(batch.mask, again.mask)
    assert returns.shape == (2, 3)
    with pytest.raises(ValueError, match="batch_steps must be a positive integer"):
        Protocol(batch_steps=0)


@pytest.mark.parametrize("gamma, gae_lambda", [(0.99, 0.5), (0.9, 1.0)])
def test_the_protocols_discount_and_gae_lambda_are_those_of_its_adaptation_step(gamma, gae_lambda):
    policy, sampler = _setup()
    protocol = Protocol(steps=1, test_tasks=3, rollouts=4, horizon=HORIZON, gamma=gamma, gae_lambda=gae_lambda)
    with sampler:
        (_, _, batch), (_, adapted, _) = list(adaptation_path(policy, sampler, protocol))
    params = dict(policy.parameters_dict())
    expected = InnerSpec(lr=0.1, estimator="naive", gamma=gamma, gae_lambda=gae_lambda).adapt_detached(policy, params, batch)
    paper = InnerSpec(lr=0.1, estimator="naive").adapt_detached(policy, params, batch)  # gamma 0.99, lambda 1
    for name, value in expected.items():
        torch.testing.assert_close(adapted[name], value)
    assert any(not torch.allclose(adapted[name], paper[name]) for name in paper)
    with pytest.raises(ValueError, match="gae_lambda must be a number in \\[0, 1\\], got 1.5"):
        Protocol(gae_lambda=1.5)


def test_after_step_replaces_the_adapted_parameters_that_the_next_step_and_its_episodes_use():
    """The probe hook of adaptation_path: an identity hook changes nothing; a hook that shifts log sigma after
    step 1 changes the episodes of step 1 and the step taken from them, and leaves step 0 alone."""
    policy, sampler = _setup()
    protocol = Protocol(steps=2, test_tasks=3, rollouts=4, horizon=HORIZON)
    calls = []

    def identity(k, params):
        calls.append(k)
        return params

    def shift(k, params):
        return {**params, "log_std": params["log_std"] - 0.5} if k == 1 else params

    with sampler:
        plain = list(adaptation_path(policy, sampler, protocol))
        same = list(adaptation_path(policy, sampler, protocol, after_step=identity))
        shifted = list(adaptation_path(policy, sampler, protocol, after_step=shift))
    assert calls == [1, 2]
    for (_, p, b), (_, q, c) in zip(plain, same):
        torch.testing.assert_close(b.actions, c.actions)
        for name in p or {}:
            torch.testing.assert_close(p[name], q[name])
    torch.testing.assert_close(shifted[0][2].actions, plain[0][2].actions)  # step 0: untouched
    torch.testing.assert_close(shifted[1][1]["log_std"], plain[1][1]["log_std"] - 0.5)
    torch.testing.assert_close(shifted[1][1]["net.0.weight"], plain[1][1]["net.0.weight"])
    assert not torch.allclose(shifted[1][2].actions, plain[1][2].actions)  # step 1's episodes use the smaller sigma
    assert not torch.allclose(shifted[2][1]["net.0.weight"], plain[2][1]["net.0.weight"])  # and so does step 2's gradient
