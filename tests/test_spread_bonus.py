"""The exploration bonus of ppo-maml (``--spread-bonus``): the crowd-spread advantages by hand, and the bonus adds
exactly beta times the policy gradient of the pre-update episodes to the first outer step."""

import pytest
import torch

from metalearn_edu.rl.advantages import crowd_spread_advantages
from metalearn_edu.rl.config import RLTrainConfig, check_fields_apply
from metalearn_edu.rl.maml_rl import per_step
from metalearn_edu.rl.objectives import pg_surrogate
from metalearn_edu.rl.ppo_maml import promp_step

from rl_helpers import TINY_INNER, tiny_meta_batch


def _three_episodes(*xs: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One task, three episodes of len(xs) steps: episodes 1 and 2 stay at the origin, episode 0 is at (xs[t], 0) at
    step t. Returns observations (H, 1, 3, 2) and mask (H, 1, 3)."""
    obs = torch.zeros(len(xs), 1, 3, 2, dtype=torch.float64)
    obs[:, 0, 0, 0] = torch.tensor(xs, dtype=torch.float64)
    return obs, torch.ones(len(xs), 1, 3, dtype=torch.float64)


def _standardised(raw: torch.Tensor) -> torch.Tensor:
    return (raw - raw.mean()) / raw.std(unbiased=False)


def test_crowd_spread_advantages_by_hand():
    # t = 1: the crowd's mean is (0.1, 0); rewards 0.2, 0.1, 0.1. t = 0: everyone at the mean, rewards 0.
    # gamma 0.5: G_0 = (0.1, 0.05, 0.05), G_1 = (0.2, 0.1, 0.1); minus the mean over episodes:
    # (1/30, -1/60, -1/60) and (1/15, -1/30, -1/30), then standardised over the task's six steps
    raw = torch.tensor([[1 / 30, -1 / 60, -1 / 60], [1 / 15, -1 / 30, -1 / 30]], dtype=torch.float64)
    assert torch.allclose(crowd_spread_advantages(*_three_episodes(0.0, 0.3), gamma=0.5)[:, 0], _standardised(raw), atol=1e-6)


def test_the_reward_stops_at_the_radius():
    # t = 2: episode 0 is 2.0 from the crowd's mean (1, 0) and the others 1.0: with radius 0.25 all three earn 0.25, so
    # t = 2 adds nothing to any advantage and the rest is the case by hand above, one step later
    raw = torch.tensor([[1 / 30, -1 / 60, -1 / 60], [1 / 15, -1 / 30, -1 / 30], [0.0, 0.0, 0.0]], dtype=torch.float64)
    advantages = crowd_spread_advantages(*_three_episodes(0.0, 0.3, 3.0), gamma=0.5, radius=0.25)
    assert torch.allclose(advantages[:, 0], _standardised(raw), atol=1e-6)
    unclamped = crowd_spread_advantages(*_three_episodes(0.0, 0.3, 3.0), gamma=0.5, radius=10.0)
    assert not torch.allclose(unclamped, advantages, atol=1e-3)


def test_episodes_that_ended_count_for_nothing():
    obs, mask = _three_episodes(0.0, 0.3, 0.4)
    mask[2, 0, 2] = 0.0  # episode 2 ended after t = 1: the crowd at t = 2 is episodes 0 and 1 only
    advantages = crowd_spread_advantages(obs, mask, gamma=0.5)
    assert advantages[2, 0, 2] == 0.0
    moved = obs.clone()
    moved[2, 0, 2] = 99.0  # what a padded step holds must not matter
    assert torch.equal(crowd_spread_advantages(moved, mask, gamma=0.5), advantages)


def test_bad_inputs_are_refused():
    obs, mask = _three_episodes(0.0, 0.3)
    with pytest.raises(ValueError, match="spread_bonus needs continuous"):
        crowd_spread_advantages(obs.long(), mask, gamma=0.5)
    with pytest.raises(ValueError, match=r"observations must be \(H, T, B, obs_dim\)"):
        crowd_spread_advantages(obs[:1], mask, gamma=0.5)
    with pytest.raises(ValueError, match="radius must be a positive number"):
        crowd_spread_advantages(obs, mask, gamma=0.5, radius=0.0)
    with pytest.raises(ValueError, match="spread_bonus must be a non-negative number"):
        RLTrainConfig.for_env("navigation2d", spread_bonus=-0.1).validate()
    with pytest.raises(ValueError, match="ppo-maml only"):
        RLTrainConfig.for_env("navigation2d", algo="maml-vpg", spread_bonus=0.1).validate()
    RLTrainConfig.for_env("navigation2d", spread_bonus=0.1).validate()
    with pytest.raises(ValueError, match="--spread-bonus is read by ppo-maml only"):
        check_fields_apply("ppo-inner", {"spread_bonus": 0.1})


@pytest.fixture()
def meta():
    return (*tiny_meta_batch((8,), 10, 3, 4), TINY_INNER)


@pytest.mark.parametrize("beta", [0.3, 2.0])
def test_the_bonus_adds_beta_times_the_pre_update_policy_gradient_to_the_first_step(meta, beta):
    policy, batch, inner = meta
    start = {n: p.detach().clone() for n, p in policy.named_parameters()}

    def back_to_start() -> None:
        with torch.no_grad():
            for name, p in policy.named_parameters():
                p.copy_(start[name])

    def one_sgd_step(bonus: float) -> dict[str, torch.Tensor]:  # SGD with step 1: the parameters move by the gradient
        back_to_start()
        promp_step(policy, torch.optim.SGD(policy.parameters(), lr=1.0), batch, inner, epochs=1, spread_bonus=bonus)
        return {n: p.detach() - start[n] for n, p in policy.named_parameters()}

    without, with_bonus = one_sgd_step(0.0), one_sgd_step(beta)
    back_to_start()  # theta_old, where the bonus's gradient is taken
    # at theta_old every ratio is 1 and nothing is clipped: the bonus's gradient is that of the per-step-averaged
    # policy-gradient surrogate sum_t A^spread_t log pi(a_t | s_t) on the pre-update episodes
    pre = batch.pre
    advantages = crowd_spread_advantages(pre.observations, pre.mask, inner.gamma)
    surrogate = per_step(pg_surrogate(policy.distribution(None, pre.observations).log_prob(pre.actions), advantages, pre.mask), pre.mask)
    grads = dict(zip(start, torch.autograd.grad(surrogate, list(policy.parameters()))))
    for name in start:
        assert torch.allclose(with_bonus[name] - without[name], beta * grads[name], atol=1e-6, rtol=1e-4), name
    assert any(g.abs().max() > 1e-4 for g in grads.values())  # the bonus did move something
