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

The helpers :func:`call_student`, :func:`expect_tensor`, :func:`episode_mask`, :func:`padded`, :func:`data_label`
and :func:`diagnose` are shared with ``checks.rl_meta_gradients`` and ``checks.ppo_maml``. Inputs come from a private ``torch.Generator``: the global
random state is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from metalearn_edu.course.checks.diagnosis import diagnose, student_caller
from metalearn_edu.course.feedback import CheckFailed, expect_shape, passed
from metalearn_edu.rl import advantages as reference_advantages
from metalearn_edu.rl import objectives as reference_objectives

__all__ = [
    "call_student",
    "check_discounted_returns",
    "check_gae",
    "check_ppo_clip_loss",
    "data_label",
    "diagnose",
    "episode_mask",
    "expect_tensor",
    "padded",
]

ATOL, RTOL = 1e-9, 1e-7  # the inputs are float64

HINT_MASK = (
    "numbers after the end of an episode leaked into the answer: a padded step (mask 0) must contribute nothing "
    "and nothing may flow back across the end of an episode. Multiply by mask[t] inside the backward recursion "
    "(running = mask[t] * (...)), not only at the end"
)
HINT_SHAPES = (
    "the inputs are time-major, (H, T, B) = (steps, tasks, episodes): loop over dim 0 (for t in "
    "reversed(range(H))) and let every other dim broadcast; do not hard-code the number of dims"
)
HINT_IN_PLACE = "build a new tensor (torch.zeros_like(rewards), then fill it); do not write into the inputs"

_RL_ERROR_HINTS = (
    ("must match the size", HINT_SHAPES),
    ("shape", HINT_SHAPES),
    ("a leaf Variable that requires grad is being used in an in-place operation", HINT_IN_PLACE),
    ("modified by an inplace operation", "an in-place update (+=, [t] = ... on a tensor in the graph) broke autograd: "
                                         "collect the per-step values in a list and torch.stack them"),
)


call_student = student_caller(_RL_ERROR_HINTS)  # RL shape and mask mistakes get their own hints


def expect_tensor(name: str, got: Any, like: Tensor, hint: str | None = None) -> Tensor:
    """Fail unless ``got`` is a tensor with the shape and dtype of ``like``; return it."""
    if got is None:
        raise CheckFailed(name, expected=f"a tensor of shape {tuple(like.shape)}", got="None",
                          hint="the function returns nothing: end it with `return ...`")
    if not isinstance(got, Tensor):
        raise CheckFailed(name, expected=f"a torch.Tensor of shape {tuple(like.shape)}", got=f"a {type(got).__name__}",
                          hint=hint or "keep the result a tensor (no .item(), .tolist() or .numpy())")
    expect_shape(name, got, tuple(like.shape), hint=hint or HINT_SHAPES)
    if got.dtype != like.dtype:
        raise CheckFailed(f"{name}.dtype", expected=str(like.dtype), got=str(got.dtype),
                          hint="create new tensors like the inputs (torch.zeros_like(rewards)); the inputs are float64")
    return got


# ----------------------------------------------------------------------------------------------
# seeded time-major data with episodes of different lengths


def episode_mask(generator: torch.Generator, horizon: int, batch: Sequence[int]) -> Tensor:
    """(H, *batch) float64: 1.0 up to and including each episode's last step, 0.0 after it.

    Lengths are drawn in [1, H]; the first episode runs the full horizon (truncated) and the second, when
    there is one, ends early, so both kinds of episode end always occur.
    """
    count = 1
    for size in batch:
        count *= int(size)
    lengths = torch.randint(1, horizon + 1, (count,), generator=generator)
    lengths[0] = horizon
    if count > 1:
        lengths[1] = max(1, horizon // 2)
    steps = torch.arange(horizon).unsqueeze(1)  # (H, 1)
    return (steps < lengths.unsqueeze(0)).to(torch.float64).reshape(horizon, *batch)


def padded(values: Tensor, mask: Tensor, padding: str, generator: torch.Generator, offset: float) -> Tensor:
    """``values`` on valid steps; zeros (as the sampler writes) or nonzero numbers ``offset + U[0, 1)`` on padded
    steps. ``mask`` is (T, B) and broadcasts over the trailing dims of ``values``, e.g. (T, B, act_dim)."""
    keep = mask.reshape(mask.shape + (1,) * (values.dim() - mask.dim())) > 0
    if padding == "zeros":
        return torch.where(keep, values, torch.zeros_like(values))
    garbage = offset + torch.rand(values.shape, generator=generator, dtype=values.dtype)
    return torch.where(keep, values, garbage)


def _rollout(seed: int, horizon: int, batch: Sequence[int], padding: str) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = episode_mask(generator, horizon, batch)
    shape = mask.shape
    rewards = torch.randn(shape, generator=generator, dtype=torch.float64) - 0.5
    values = torch.randn(shape, generator=generator, dtype=torch.float64)
    old_log_probs = -1.0 - 0.5 * torch.rand(shape, generator=generator, dtype=torch.float64)
    log_probs = old_log_probs + 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)  # ratios ~0.4..2.5
    advantages = torch.randn(shape, generator=generator, dtype=torch.float64)
    return {
        "mask": mask,
        "rewards": padded(rewards, mask, padding, generator, 2.0),
        "values": padded(values, mask, padding, generator, -3.0),
        "old_log_probs": padded(old_log_probs, mask, padding, generator, -2.0),
        "log_probs": padded(log_probs, mask, padding, generator, 1.0),
        "advantages": padded(advantages, mask, padding, generator, 4.0),
    }


def data_label(padding: str) -> str:
    """How the feedback names the data a check ran on: padded with zeros, as the sampler does, or with garbage."""
    return "sampler-like data (zeros after each episode's end)" if padding == "zeros" else (
        "data with nonzero numbers after each episode's end")


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
        data = _rollout(seed, horizon, batch, padding)
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
        data = _rollout(seed, horizon, batch, padding)
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


# ----------------------------------------------------------------------------------------------
# Q3: the PPO clipped loss


def clipped_terms(rho: Tensor, adv: Tensor, clip: float, combine: str = "min") -> Tensor:
    """Per step min(ρA, clip(ρ, 1−ε, 1+ε)A) (``combine="min"``), or one of the usual mistakes in its place.

    ``combine``: "clipped" (clipped term only), "unclipped", "max", "min_ratio" (min of the ratios, times A),
    "upper_only" / "lower_only" (the ratio clipped on one side only). Shared by the PPO and ProMP checks.
    """
    clipped = torch.clamp(rho, 1.0 - clip, 1.0 + clip)
    return {
        "min": torch.minimum(rho * adv, clipped * adv),
        "max": torch.maximum(rho * adv, clipped * adv),
        "clipped": clipped * adv,
        "unclipped": rho * adv,
        "min_ratio": torch.minimum(rho, clipped) * adv,
        "upper_only": torch.minimum(rho * adv, torch.clamp(rho, max=1.0 + clip) * adv),
        "lower_only": torch.minimum(rho * adv, torch.clamp(rho, min=1.0 - clip) * adv),
    }[combine]


def _ppo_variant(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: float, *,
                 use_mask: bool = True, combine: str = "min", ratio: str = "exp", sign: float = -1.0,
                 reduction: str = "episodes") -> Tensor:
    """The PPO loss with one deliberate change, to recognise a common mistake.

    ``combine``: "min" (right), "clipped" (clipped term only), "unclipped", "max", "min_ratio" (min of the ratios).
    ``ratio``: "exp" (right), "log" (the log-ratio itself), "inverse" (π_old / π).
    ``reduction``: "episodes" (sum over time, mean over episodes: right), "steps" (mean over valid steps),
    "sum" (sum over time and episodes).
    """
    m = mask if use_mask else torch.ones_like(mask)
    lp, old, adv = log_probs * m, old_log_probs * m, advantages * m
    rho = {"exp": torch.exp(lp - old), "log": lp - old, "inverse": torch.exp(old - lp)}[ratio]
    per_step = clipped_terms(rho, adv, clip, combine) * m
    dims = (0, -1)
    if reduction == "episodes":
        value = per_step.sum(0).mean(-1)
    elif reduction == "steps":
        value = per_step.sum(dims) / m.sum(dims).clamp_min(1.0)
    else:
        value = per_step.sum(dims)
    return sign * value


def check_ppo_clip_loss(ppo_clip_loss: Callable[..., Tensor], *, seed: int = 0, clip: float = 0.2, horizon: int = 6,
                        batch: Sequence[int] = (2, 4)) -> None:
    """``ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip)`` = −mean_b Σ_t m_t min(ρA, clip(ρ)A).

    Compared with ``rl.objectives.ppo_clip_loss``: the value (per task, shape (T,)), the gradient with
    respect to ``log_probs``, and that no gradient reaches ``old_log_probs`` or ``advantages`` (they are
    data collected with the old policy: constants).
    """
    for padding in ("zeros", "garbage"):
        data = _rollout(seed, horizon, batch, padding)
        mask = data["mask"]
        log_probs = data["log_probs"].clone().requires_grad_(True)
        old_log_probs = data["old_log_probs"].clone().requires_grad_(True)
        advantages = data["advantages"].clone().requires_grad_(True)
        out = call_student(ppo_clip_loss, "ppo_clip_loss", log_probs, old_log_probs, advantages, mask.clone(), clip)
        label = f"ppo_clip_loss(..., clip={clip}) on {data_label(padding)}"
        expected_shape = mask.sum(0).mean(-1)
        expect_tensor(label, out, expected_shape,
                      hint="one loss per task: sum over time (dim 0), then mean over episodes (the last dim): "
                           "(H, T, B) -> (T,)")
        reference = reference_objectives.ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip)
        variant = lambda **change: _ppo_variant(log_probs.detach(), old_log_probs.detach(), advantages.detach(),  # noqa: E731
                                               mask, clip, **change)
        mistakes = [
            (variant(sign=1.0), "wrong sign: this is the clipped objective, which PPO maximises; the loss to minimise "
                                "is its negative"),
            (variant(combine="clipped"), "only the clipped term was used: PPO takes min(ρA, clip(ρ, 1−ε, 1+ε)A), so "
                                         "that a ratio that moved the wrong way is not clipped (the bound is pessimistic)"),
            (variant(combine="unclipped"), "the ratio was never clipped: use torch.clamp(ratio, 1 − clip, 1 + clip) "
                                           "and the min of both terms"),
            (variant(combine="min_ratio"), "the min was taken of the ratios, then multiplied by A: take the min of "
                                           "the two PRODUCTS ρA and clip(ρ)A (when A < 0 the order flips)"),
            (variant(combine="max"), "max instead of min: PPO keeps the smaller (pessimistic) of ρA and clip(ρ)A"),
            (variant(ratio="log"), "the log-ratio was used as the ratio: ρ = exp(log π − log π_old)"),
            (variant(ratio="inverse"), "the ratio is upside down: ρ = π/π_old = exp(log_probs − old_log_probs)"),
            (variant(reduction="steps"), "reduction: sum over time (dim 0), then the mean over episodes (last dim), "
                                         "not the mean over all valid steps"),
            (variant(reduction="sum"), "reduction: sum over time, then the MEAN over episodes (last dim), not the sum"),
            (variant(use_mask=False), HINT_MASK.split(":")[0] + ": multiply each step's term by mask (padded steps "
                                                               "contribute nothing)"),
        ]
        diagnose(label, out, reference, mistakes, atol=ATOL, rtol=RTOL,
                 hint="ratio = exp(log_probs − old_log_probs); per step min(ratio·A, clamp(ratio, 1−clip, 1+clip)·A)·mask; "
                      "then −(sum over dim 0).mean(-1)")

        if not out.requires_grad:
            raise CheckFailed(f"{label}: gradient", expected="a loss that autograd can differentiate with respect to log_probs",
                              got="a tensor with requires_grad=False",
                              hint="do not detach log_probs (or use .item(), torch.no_grad()): the loss must move the policy")
        grads = torch.autograd.grad(out.sum(), (log_probs, old_log_probs, advantages), allow_unused=True)
        (reference_grad,) = torch.autograd.grad(reference.sum(), log_probs)
        got_grad = torch.zeros_like(log_probs) if grads[0] is None else grads[0]
        diagnose(f"{label}: d loss / d log_probs", got_grad, reference_grad, [
            (torch.zeros_like(reference_grad), "the gradient is zero: log_probs was detached on the way to the loss"),
        ], atol=ATOL, rtol=RTOL, hint="the gradient flows through the ratio only where it is not clipped: build the "
                                      "loss from log_probs with torch operations (exp, clamp, minimum)")
        for name, grad in (("old_log_probs", grads[1]), ("advantages", grads[2])):
            if grad is not None and grad.abs().max() > 0:
                raise CheckFailed(f"{label}: d loss / d {name}", expected="no gradient (a constant)",
                                  got=f"a nonzero gradient (max |.| {grad.abs().max().item():.3g})",
                                  hint=f"{name} are data collected with the old policy: use {name}.detach() so that "
                                       "the loss moves the policy only through log_probs")
    passed(f"PPO clipped loss (clip={clip}) matches: value per task, gradient, constants detached")
