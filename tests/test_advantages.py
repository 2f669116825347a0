"""Returns, GAE, advantage normalisation and the linear feature baseline against hand computations."""

from __future__ import annotations

import pytest
import torch

from metalearn_edu.rl.advantages import (
    LinearFeatureBaseline,
    discounted_returns,
    gae,
    normalize_advantages,
)
from metalearn_edu.rl.batch import EpisodeBatch

H, T, B = 7, 3, 5


def _ragged_mask(generator: torch.Generator) -> torch.Tensor:
    """(H, T, B) mask of episodes with random lengths in [1, H]."""
    lengths = torch.randint(1, H + 1, (T, B), generator=generator)  # (T, B)
    steps = torch.arange(H).view(H, 1, 1)
    return (steps < lengths.unsqueeze(0)).double()


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    mask = _ragged_mask(generator)
    rewards = torch.randn(H, T, B, generator=generator, dtype=torch.float64) * mask
    values = torch.randn(H, T, B, generator=generator, dtype=torch.float64)
    return rewards, values, mask


def _hand_returns(rewards, mask, gamma):
    out = torch.zeros_like(rewards)
    for task in range(T):
        for ep in range(B):
            for t in range(H):
                if mask[t, task, ep] == 0:
                    continue
                total, k = 0.0, t
                while k < H and mask[k, task, ep] == 1:
                    total += gamma ** (k - t) * rewards[k, task, ep].item()
                    k += 1
                out[t, task, ep] = total
    return out


@pytest.mark.parametrize("gamma", [0.0, 0.9, 1.0])
def test_discounted_returns_match_a_hand_loop(data, gamma):
    rewards, _, mask = data
    returns = discounted_returns(rewards, mask, gamma)
    assert returns.shape == (H, T, B)
    torch.testing.assert_close(returns, _hand_returns(rewards, mask, gamma))
    assert torch.all(returns[mask == 0] == 0)


def test_gae_with_lambda_one_is_returns_minus_values(data):
    rewards, values, mask = data
    advantages = gae(rewards, values, mask, gamma=0.95, lam=1.0)
    expected = (discounted_returns(rewards, mask, 0.95) - values) * mask
    torch.testing.assert_close(advantages, expected)


def test_gae_with_lambda_zero_is_the_td_error_bootstrapping_zero_at_episode_end(data):
    rewards, values, mask = data
    gamma = 0.9
    advantages = gae(rewards, values, mask, gamma=gamma, lam=0.0)
    expected = torch.zeros_like(rewards)
    for t in range(H):
        next_value = values[t + 1] * mask[t + 1] if t + 1 < H else torch.zeros_like(values[0])
        expected[t] = (rewards[t] + gamma * next_value - values[t]) * mask[t]
    torch.testing.assert_close(advantages, expected)


def test_gae_intermediate_lambda_is_the_weighted_sum_of_td_errors(data):
    rewards, values, mask = data
    gamma, lam = 0.9, 0.7
    deltas = gae(rewards, values, mask, gamma=gamma, lam=0.0)
    expected = torch.zeros_like(rewards)
    for t in range(H):
        for k in range(t, H):
            expected[t] += (gamma * lam) ** (k - t) * deltas[k]
    torch.testing.assert_close(gae(rewards, values, mask, gamma=gamma, lam=lam), expected * mask)


def test_bad_arguments_name_the_argument(data):
    rewards, values, mask = data
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(rewards, mask, 1.5)
    with pytest.raises(ValueError, match="lam"):
        gae(rewards, values, mask, gamma=0.9, lam=-0.1)
    with pytest.raises(ValueError, match="values"):
        gae(rewards, values[:-1], mask, gamma=0.9, lam=0.9)
    with pytest.raises(TypeError, match="gamma"):
        discounted_returns(rewards, mask, "0.9")


def test_normalize_advantages_standardises_each_task_over_valid_steps(data):
    rewards, _, mask = data
    advantages = 3.0 * rewards + 2.0
    normalized = normalize_advantages(advantages, mask)
    for task in range(T):
        valid = normalized[:, task][mask[:, task] == 1]
        assert abs(valid.mean().item()) < 1e-8
        assert valid.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(normalized[mask == 0] == 0)


def _batch(observations, mask):
    rewards = torch.zeros(mask.shape, dtype=torch.float64)
    actions = torch.zeros(mask.shape, dtype=torch.long)
    return EpisodeBatch(observations=observations, actions=actions, rewards=rewards, mask=mask)


def test_linear_baseline_fits_exactly_a_target_linear_in_its_features():
    generator = torch.Generator().manual_seed(1)
    mask = _ragged_mask(generator)
    observations = torch.randn(H, T, B, 2, generator=generator, dtype=torch.float64)
    batch = _batch(observations, mask)
    baseline = LinearFeatureBaseline(reg_coeff=1e-10)
    phi = baseline.features(batch)  # (H, T, B, F)
    assert phi.shape == (H, T, B, 2 * 2 + 4)
    true_weights = torch.randn(T, phi.shape[-1], generator=generator, dtype=torch.float64)
    targets = torch.einsum("htbf,tf->htb", phi, true_weights)
    predictions = baseline.fit(batch, targets).predict(batch)
    torch.testing.assert_close(predictions, targets * mask, atol=1e-6, rtol=1e-6)
    # one weight vector per task: task 0's weights do not fit task 1's target
    other = torch.einsum("htbf,f->htb", phi, true_weights[0])
    assert (predictions[:, 1] - other[:, 1]).abs().max() > 1e-2


def test_linear_baseline_one_hots_discrete_observations():
    generator = torch.Generator().manual_seed(2)
    mask = _ragged_mask(generator)
    num_states = 4
    observations = torch.randint(0, num_states, (H, T, B), generator=generator)
    batch = _batch(observations, mask)
    state_value = torch.randn(T, num_states, generator=generator, dtype=torch.float64)
    time = torch.arange(H, dtype=torch.float64).view(H, 1, 1) / 100.0
    targets = torch.stack([state_value[task][observations[:, task]] for task in range(T)], dim=1)
    targets = (targets + 5.0 * time - 40.0 * time**3) * mask
    baseline = LinearFeatureBaseline(reg_coeff=1e-10, num_observations=num_states)
    predictions = baseline.fit(batch, targets).predict(batch)
    # one-hot columns repeat in o and o^2 and sum to the constant: the ridge term picks one of the
    # many exact solutions, and the near-collinear (t/100)^k columns leave a small ridge bias
    torch.testing.assert_close(predictions, targets, atol=1e-3, rtol=0.0)
    with pytest.raises(ValueError, match="num_observations"):
        LinearFeatureBaseline().fit(batch, targets)
    with pytest.raises(ValueError, match="fit"):
        LinearFeatureBaseline(num_observations=num_states).predict(batch)
    with pytest.raises(ValueError, match="reg_coeff"):
        LinearFeatureBaseline(reg_coeff=0.0)
