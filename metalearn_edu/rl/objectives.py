"""Policy-gradient surrogates and losses: naive score function, DiCE, LVC, Loaded DiCE, PPO clip, KL penalty.

All inputs are time-major with a mask, (H, T, B) in the usual layout (H steps, T tasks, B episodes
per task); any (H, ..., B) layout works. The reduction is the same everywhere so the objectives are
comparable:

- surrogates and the PPO loss: sum over time (dim 0), mean over episodes (last dim) -> (T,) per task;
  a (H, B) input gives a scalar;
- KL penalties: mean over the valid steps (dims 0 and last) -> (T,) per task.

Surrogates are objectives to MAXIMISE (their gradient estimates the policy gradient); the PPO loss is
negated, a loss to minimise. Advantages, rewards, baselines and old log-probabilities are treated as
constants (detached). Padded steps (mask 0) contribute nothing, even if their log-probabilities are
not finite.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from metalearn_edu.rl.advantages import validate_time_major, validate_unit_interval


def _sum_time_mean_episodes(per_step: Tensor) -> Tensor:
    """(H, ..., B) -> (...): sum over time, mean over episodes; (H,) -> scalar sum."""
    total = per_step.sum(dim=0)
    return total.mean(dim=-1) if total.dim() > 0 else total


def _masked_step_mean(per_step: Tensor, mask: Tensor) -> Tensor:
    """(H, ..., B) -> (...): mean over the valid steps of time and episodes."""
    dims = (0, -1) if per_step.dim() > 1 else (0,)
    return (per_step * mask).sum(dim=dims) / mask.sum(dim=dims).clamp_min(1.0)


def _valid(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` on valid steps, 0 on padded ones (also where ``values`` is inf or nan there)."""
    return torch.where(mask > 0, values, torch.zeros_like(values))


def mean_episode_length(mask: Tensor) -> Tensor:
    """The mean number of valid steps per episode, (1/B) sum_{t,b} m_t: (H, T, B) -> (T,).

    Dividing a surrogate of this module by it turns "mean over episodes of the sum over time" into
    "mean over valid steps", the reduction of rllab / pytorch-maml-rl / ProMP, for which their step
    sizes (e.g. Finn's inner lr 0.1) were tuned. It is a constant, so only the scale of the gradient
    changes.
    """
    return _sum_time_mean_episodes(mask.detach()).clamp_min(1.0)


def magic_box(x: Tensor) -> Tensor:
    """DiCE's MagicBox: exp(x - stop_grad(x)). Its value is 1; its gradient is MagicBox(x) * grad x."""
    return torch.exp(x - x.detach())


def pg_surrogate(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """The naive score-function surrogate of MAML-RL.

    L(theta) = (1/B) sum_b sum_t m_t log pi_theta(a_t | s_t) A_t

    Its gradient is the REINFORCE estimate of grad J; its Hessian, (1/B) sum sum grad^2 log pi A_t,
    misses the score outer-product terms of the true Hessian of J.

    Args:
        log_probs: (H, T, B) log pi_theta(a_t | s_t), differentiable.
        advantages: (H, T, B) advantages or returns (constants).
        mask: (H, T, B) 1.0 on valid steps.

    Returns:
        (T,) per-task surrogate.
    """
    validate_time_major(mask, log_probs=log_probs, advantages=advantages)
    per_step = _valid(log_probs, mask) * _valid(advantages.detach(), mask)  # (H, T, B)
    return _sum_time_mean_episodes(per_step)


def dice_surrogate(
    log_probs: Tensor, rewards: Tensor, mask: Tensor, gamma: float, baseline: Tensor | None = None
) -> Tensor:
    """The DiCE surrogate of Foerster et al. 2018, with the optional baseline term.

    L(theta) = (1/B) sum_b [ sum_t gamma^t r_t MagicBox(sum_{t' <= t} log pi(a_t' | s_t'))
                             + sum_t (1 - MagicBox(log pi(a_t | s_t))) gamma^t b_t ]

    Its value is the discounted return; every order of its derivatives is an unbiased estimate of
    the derivatives of J(theta) = E[sum_t gamma^t r_t]. The baseline term has zero value and zero
    expected gradient; it only reduces the variance of the first derivative.

    Args:
        log_probs: (H, T, B) log pi_theta(a_t | s_t), differentiable.
        rewards: (H, T, B) rewards (constants).
        mask: (H, T, B) 1.0 on valid steps.
        gamma: discount in [0, 1].
        baseline: optional (H, T, B) values b_t = V(s_t) (constants).

    Returns:
        (T,) per-task surrogate.
    """
    gamma = validate_unit_interval(gamma, "gamma")
    validate_time_major(mask, log_probs=log_probs, rewards=rewards)
    if baseline is not None:
        validate_time_major(mask, baseline=baseline)
    step_log_probs = _valid(log_probs, mask)  # (H, T, B)
    horizon = log_probs.shape[0]
    discounts = gamma ** torch.arange(horizon, dtype=log_probs.dtype, device=log_probs.device)
    discounts = discounts.view(horizon, *([1] * (log_probs.dim() - 1)))  # (H, 1, 1)
    cumulative = torch.cumsum(step_log_probs, dim=0)  # (H, T, B) sum_{t' <= t} log pi
    per_step = magic_box(cumulative) * discounts * _valid(rewards.detach(), mask)
    if baseline is not None:
        per_step = per_step + (1.0 - magic_box(step_log_probs)) * discounts * _valid(baseline.detach(), mask)
    return _sum_time_mean_episodes(per_step)


def lvc_surrogate(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """The low-variance curvature (LVC) surrogate of Rothfuss et al. 2019 (ProMP).

    L(theta) = (1/B) sum_b sum_t m_t [pi_theta(a_t | s_t) / stop_grad(pi_theta(a_t | s_t))] A_t
             = (1/B) sum_b sum_t m_t exp(log pi_t - stop_grad(log pi_t)) A_t

    Same value and gradient as the naive surrogate at the sampling policy; its Hessian adds the
    per-step score outer product, grad log pi grad log pi^T A_t, which in expectation is the H1 + H2
    part of the Hessian of J (it drops the cross-time terms H12 + H12^T).

    Args:
        log_probs: (H, T, B) log pi_theta(a_t | s_t), differentiable.
        advantages: (H, T, B) advantages or returns (constants).
        mask: (H, T, B) 1.0 on valid steps.

    Returns:
        (T,) per-task surrogate.
    """
    validate_time_major(mask, log_probs=log_probs, advantages=advantages)
    ratios = magic_box(_valid(log_probs, mask))  # (H, T, B), value 1
    per_step = ratios * _valid(advantages.detach(), mask)
    return _sum_time_mean_episodes(per_step)


def loaded_dice_surrogate(log_probs: Tensor, advantages: Tensor, mask: Tensor, lam: float) -> Tensor:
    """The Loaded DiCE surrogate of Farquhar et al. 2019 on advantages: LVC plus the cross-time Hessian terms.

    w_t = v_t + log pi_t,   v_t = lam * w_{t-1}   (w_{-1} = 0: v_t = sum_{t' < t} lam^(t - t') log pi_t')
    L(theta) = (1/B) sum_b sum_t m_t [MagicBox(w_t) - MagicBox(v_t)] A_t

    Its value is 0 and its gradient sum_t g_t A_t, the same step as the naive and LVC surrogates
    (g_t = grad log pi_t). Its Hessian is sum_t A_t [g_t g_t^T + grad^2 log pi_t + g_t u_t^T + u_t g_t^T]
    with u_t = grad v_t, the lam-discounted scores of the earlier actions: LVC's H1 + H2 plus an estimate
    of the cross-time terms H12 + H12^T (how an earlier action moves the later steps' policy gradient).
    lam = 1 keeps every earlier action (with A_t the reward-to-go from the start its expected Hessian is
    the full Hessian of J, as DiCE's); lam = 0 gives LVC; in between trades that term's bias for variance.

    Args:
        log_probs: (H, T, B) log pi_theta(a_t | s_t), differentiable.
        advantages: (H, T, B) advantages or returns (constants).
        mask: (H, T, B) 1.0 on valid steps.
        lam: the discount lam in [0, 1] of the earlier actions' scores.

    Returns:
        (T,) per-task surrogate.
    """
    lam = validate_unit_interval(lam, "lam")
    validate_time_major(mask, log_probs=log_probs, advantages=advantages)
    step_log_probs = _valid(log_probs, mask)  # (H, T, B)
    horizon = step_log_probs.shape[0]
    time = torch.arange(horizon, device=log_probs.device)
    lags = (time.view(-1, 1) - time.view(1, -1)).to(log_probs.dtype)  # (H, H): t - t'
    earlier = torch.where(lags > 0, lam ** lags.clamp_min(1.0), torch.zeros_like(lags))  # lam^(t - t') for t' < t
    past = torch.tensordot(earlier, step_log_probs, dims=([1], [0]))  # (H, T, B) v_t
    per_step = (magic_box(past + step_log_probs) - magic_box(past)) * _valid(advantages.detach(), mask)
    return _sum_time_mean_episodes(per_step)


def ppo_clip_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: float
) -> Tensor:
    """The negated PPO clipped surrogate (Schulman et al. 2017), a loss to minimise.

    rho_t = exp(log pi_theta(a_t | s_t) - log pi_old(a_t | s_t))
    loss  = -(1/B) sum_b sum_t m_t min(rho_t A_t, clip(rho_t, 1 - clip, 1 + clip) A_t)

    At theta = theta_old its gradient is minus the naive / LVC policy gradient.

    Args:
        log_probs: (H, T, B) log-probabilities under the policy being optimised.
        old_log_probs: (H, T, B) log-probabilities the actions were sampled with (constants).
        advantages: (H, T, B) advantages (constants).
        mask: (H, T, B) 1.0 on valid steps.
        clip: the clip range epsilon > 0 (0.2 in PPO, 0.3 in ProMP).

    Returns:
        (T,) per-task loss.
    """
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
        raise ValueError(f"clip must be a float > 0, got {clip!r}")
    validate_time_major(mask, log_probs=log_probs, old_log_probs=old_log_probs, advantages=advantages)
    log_ratio = _valid(log_probs, mask) - _valid(old_log_probs.detach(), mask)
    ratios = torch.exp(log_ratio)  # (H, T, B)
    adv = _valid(advantages.detach(), mask)
    clipped = torch.clamp(ratios, 1.0 - clip, 1.0 + clip)
    per_step = torch.minimum(ratios * adv, clipped * adv) * mask
    return -_sum_time_mean_episodes(per_step)


def kl_divergence(old_distribution: Distribution, new_distribution: Distribution, mask: Tensor) -> Tensor:
    """Mean over valid steps of the exact KL(pi_old(.|s_t) || pi_new(.|s_t)).

    KL = (sum_{t,b} m_t KL_t) / (sum_{t,b} m_t), per task. A distribution whose batch shape carries
    one extra trailing dim (independent action dims, e.g. a plain Normal over (H, T, B, act_dim))
    has that dim summed. Build ``old_distribution`` from detached parameters for a penalty.

    Args:
        old_distribution, new_distribution: distributions with batch shape (H, T, B) (or
            (H, T, B, act_dim)).
        mask: (H, T, B) 1.0 on valid steps.

    Returns:
        (T,) per-task mean KL.
    """
    if not isinstance(old_distribution, Distribution) or not isinstance(new_distribution, Distribution):
        raise TypeError("old_distribution and new_distribution must be torch.distributions.Distribution objects")
    per_step = torch.distributions.kl_divergence(old_distribution, new_distribution)
    if per_step.dim() == mask.dim() + 1:
        per_step = per_step.sum(dim=-1)  # independent action dims
    validate_time_major(mask, kl=per_step)
    return _masked_step_mean(_valid(per_step, mask), mask)


def sampled_kl(log_probs: Tensor, old_log_probs: Tensor, mask: Tensor) -> Tensor:
    """Sample estimate of KL(pi_old || pi_new) from actions drawn from pi_old, per task.

    KL ~= (sum_{t,b} m_t (log pi_old(a_t|s_t) - log pi_new(a_t|s_t))) / (sum_{t,b} m_t)

    Args:
        log_probs: (H, T, B) log pi_new(a_t | s_t), differentiable.
        old_log_probs: (H, T, B) log pi_old(a_t | s_t), the sampling policy (constants).
        mask: (H, T, B) 1.0 on valid steps.

    Returns:
        (T,) per-task estimate.
    """
    validate_time_major(mask, log_probs=log_probs, old_log_probs=old_log_probs)
    per_step = _valid(old_log_probs.detach(), mask) - _valid(log_probs, mask)
    return _masked_step_mean(per_step, mask)
