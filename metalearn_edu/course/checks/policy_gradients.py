"""Graded checks for notebook 04, the policy-gradient refresher.

The student writes three building blocks of every policy-gradient method: the discounted reward-to-go,
generalised advantage estimation (GAE) and the PPO clipped loss. Each check calls the student's
function on seeded, time-major inputs ``(H, T, B)`` whose episodes end at different steps, and
compares the result with the library (``rl.advantages.discounted_returns``, ``rl.advantages.gae``,
``rl.objectives.ppo_clip_loss``). Every check runs twice: once on data as the sampler produces it
(zeros after an episode ended) and once with *nonzero* numbers in the padding, which only a function
that really uses the mask gets right. When the answer is wrong it is compared with the answers that the
usual mistakes produce (the mask forgotten, the sum running forwards in time, λ or γ dropped, the clip
without the min, a flipped sign ...) and the mistake is named.

The seeded inputs and the tensor expectations live in :mod:`metalearn_edu.course.checks.rl_data`, shared by
every RL check; question 3's check lives in :mod:`metalearn_edu.course.checks.ppo_clip` and is re-exported here,
so a notebook imports this one module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import diagnose
from metalearn_edu.course.checks.ppo_clip import check_ppo_clip_loss
from metalearn_edu.course.checks.rl_data import (ATOL, HINT_IN_PLACE, HINT_MASK, RTOL, call_student, data_label, expect_tensor,
                                                 rollout)
from metalearn_edu.course.feedback import CheckFailed, passed
from metalearn_edu.rl import advantages as reference_advantages

__all__ = ["check_discounted_returns", "check_gae", "check_ppo_clip_loss"]  # check_ppo_clip_loss: from checks.ppo_clip

# ----------------------------------------------------------------------------------------------
# Q1: discounted reward-to-go


def _returns_variant(rewards: Tensor, mask: Tensor, gamma: float, *, use_mask: bool = True, mask_output_only: bool = False,
                     forward: bool = False, from_start: bool = False, include_current: bool = True,
                     whole_episode: bool = False) -> Tensor:
    """The reward-to-go with one deliberate change, to recognise a common mistake."""
    horizon = rewards.shape[0]
    m = mask if use_mask and not mask_output_only else torch.ones_like(mask)
    r = rewards * m
    if from_start or whole_episode:
        discounts = gamma ** torch.arange(horizon, dtype=rewards.dtype).view(horizon, *([1] * (rewards.dim() - 1)))
        weighted = r * discounts
        out = weighted.flip(0).cumsum(0).flip(0)
        if whole_episode:
            out = out[0:1].expand_as(out).clone()
    else:
        out = torch.zeros_like(rewards)
        running = torch.zeros_like(rewards[0])
        order = range(horizon) if forward else range(horizon - 1, -1, -1)
        for t in order:
            if include_current:
                running = m[t] * (r[t] + gamma * running)
                out[t] = running
            else:
                out[t] = m[t] * running
                running = m[t] * (r[t] + gamma * running)
    return out * mask if (mask_output_only or use_mask) else out


def check_discounted_returns(discounted_returns: Callable[..., Tensor], *, seed: int = 0, gamma: float = 0.9,
                             horizon: int = 8, batch: Sequence[int] = (2, 3)) -> None:
    """``discounted_returns(rewards, mask, gamma)`` = G_t = m_t (r_t + γ G_{t+1}), G_H = 0, on (H, ...) inputs.

    Compared with ``rl.advantages.discounted_returns`` on sampler-like data and on data with nonzero
    rewards in the padding.
    """
    for padding in ("zeros", "garbage"):
        data = rollout(seed, horizon, batch, padding)
        rewards, mask = data["rewards"], data["mask"]
        given = (rewards.clone(), mask.clone())
        out = call_student(discounted_returns, "discounted_returns", given[0], given[1], gamma)
        label = f"discounted_returns(..., gamma={gamma}) on {data_label(padding)}"
        expect_tensor(label, out, rewards)
        if not (torch.equal(given[0], rewards) and torch.equal(given[1], mask)):
            raise CheckFailed("rewards and mask after the call", expected="unchanged", got="modified in place", hint=HINT_IN_PLACE)
        reference = reference_advantages.discounted_returns(rewards, mask, gamma)
        variant = lambda **change: _returns_variant(rewards, mask, gamma, **change)  # noqa: E731
        mistakes = [
            (variant(use_mask=False), HINT_MASK + " (here the mask was not used at all)"),
            (variant(mask_output_only=True), HINT_MASK + " (here only the output was masked; the recursion still "
                                                        "carried the padding's rewards back into the episode)"),
            (variant(forward=True), "the sum ran forwards in time: G_t sums the rewards from t to the END of the episode, "
                                    "so fill G from the last step back to the first (for t in reversed(range(H)))"),
            (variant(from_start=True), "the rewards were discounted from the episode start (γ^k r_k); the reward-to-go "
                                       "discounts from the current step: G_t = Σ_{k≥t} γ^(k−t) r_k"),
            (variant(whole_episode=True), "every step got the return of the whole episode: use the reward-to-go, the "
                                          "rewards from step t on (an action cannot change rewards that came before it)"),
            (variant(include_current=False), "off by one: G_t includes the reward r_t of step t itself, G_t = r_t + γ G_{t+1}"),
            (_returns_variant(rewards, mask, 1.0), "the rewards were not discounted: multiply the future by gamma, "
                                                   "G_t = r_t + gamma * G_{t+1}"),
        ]
        diagnose(label, out, reference, mistakes, atol=ATOL, rtol=RTOL,
                 hint="running = 0; for t from H−1 down to 0: running = mask[t] * (rewards[t] + gamma * running); "
                      "G[t] = running")
    passed(f"discounted reward-to-go (gamma={gamma}) matches, episode ends and padding included")


# ----------------------------------------------------------------------------------------------
# Q2: generalised advantage estimation


def _gae_variant(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float, *, use_mask: bool = True,
                 mask_next: bool = True, mask_output_only: bool = False, recursion: str = "gamma_lambda",
                 bootstrap: bool = True, sign: float = 1.0, forward: bool = False) -> Tensor:
    """GAE with one deliberate change, to recognise a common mistake.

    ``recursion``: "gamma_lambda" (right), "gamma" (λ ignored), "lambda" (γ missing), "none" (δ only).
    """
    horizon = rewards.shape[0]
    m = mask if use_mask and not mask_output_only else torch.ones_like(mask)
    factor = {"gamma_lambda": gamma * lam, "gamma": gamma, "lambda": lam, "none": 0.0}[recursion]
    out = torch.zeros_like(rewards)
    order = range(horizon) if forward else range(horizon - 1, -1, -1)
    running = torch.zeros_like(rewards[0])
    for t in order:
        if bootstrap and t + 1 < horizon:
            next_value = (m[t + 1] if mask_next else 1.0) * values[t + 1]
        else:
            next_value = torch.zeros_like(values[0])
        delta = sign * (rewards[t] + gamma * next_value - values[t])
        running = m[t] * (delta + factor * running)
        out[t] = running
    return out * mask if (mask_output_only or use_mask) else out


def check_gae(gae: Callable[..., Tensor], *, seed: int = 0, gamma: float = 0.95, lam: float = 0.9, horizon: int = 8,
              batch: Sequence[int] = (2, 3)) -> None:
    """``gae(rewards, values, mask, gamma, lam)``: A_t = m_t (δ_t + γλ A_{t+1}), δ_t = r_t + γ m_{t+1} V_{t+1} − V_t.

    Compared with ``rl.advantages.gae`` on sampler-like data (rewards and values zero after an episode
    ended, as ``LinearFeatureBaseline.predict`` returns them) and on data with nonzero padding.
    """
    for padding in ("zeros", "garbage"):
        data = rollout(seed, horizon, batch, padding)
        rewards, values, mask = data["rewards"], data["values"], data["mask"]
        given = (rewards.clone(), values.clone(), mask.clone())
        out = call_student(gae, "gae", *given, gamma, lam)
        label = f"gae(..., gamma={gamma}, lam={lam}) on {data_label(padding)}"
        expect_tensor(label, out, rewards)
        if not all(torch.equal(a, b) for a, b in zip(given, (rewards, values, mask))):
            raise CheckFailed("rewards, values and mask after the call", expected="unchanged", got="modified in place",
                              hint=HINT_IN_PLACE)
        reference = reference_advantages.gae(rewards, values, mask, gamma, lam)
        variant = lambda **change: _gae_variant(rewards, values, mask, gamma, lam, **change)  # noqa: E731
        mistakes = [
            (variant(mask_next=False), "after an episode's last step there is no next state: bootstrap with "
                                       "m_{t+1} V(s_{t+1}), which is 0 after the end (and V_H = 0 after the horizon); "
                                       "here V of a padded step was used"),
            (variant(use_mask=False), HINT_MASK + " (here the mask was not used at all)"),
            (variant(mask_output_only=True), HINT_MASK + " (here only the output was masked)"),
            (variant(recursion="gamma"), "λ was ignored: this is the λ = 1 answer, G_t − V(s_t). The recursion "
                                         "multiplies the next advantage by γλ: A_t = δ_t + γ λ A_{t+1}"),
            (variant(recursion="lambda"), "γ is missing from the recursion: A_t = δ_t + γ λ A_{t+1} (the weight of "
                                          "δ_{t+k} is (γλ)^k)"),
            (variant(recursion="none"), "this is the one-step TD error δ_t alone (the λ = 0 answer): accumulate "
                                        "A_t = δ_t + γλ A_{t+1} from the last step backwards"),
            (variant(bootstrap=False), "δ_t misses the bootstrap term: δ_t = r_t + γ V(s_{t+1}) − V(s_t)"),
            (variant(sign=-1.0), "wrong sign: δ_t = r_t + γ V(s_{t+1}) − V(s_t) (what happened, minus what was "
                                 "expected)"),
            (variant(forward=True), "the sum ran forwards in time: A_t depends on the TD errors of steps t, t+1, ..., "
                                    "so loop from t = H−1 down to 0"),
        ]
        diagnose(label, out, reference, mistakes, atol=ATOL, rtol=RTOL,
                 hint="A = 0, next_value = 0; for t from H−1 down to 0: δ = r[t] + γ·next_value − V[t]; "
                      "A = mask[t]·(δ + γλ·A); out[t] = A; next_value = mask[t]·V[t]")
    passed(f"GAE (gamma={gamma}, lam={lam}) matches, episode ends and padding included")
