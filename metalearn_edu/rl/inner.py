"""The differentiable inner policy-gradient step of MAML-RL, with a choice of surrogate estimator.

For each task i, on that task's episodes of ``batch``:

    theta'_i = theta + lr * grad_theta L_i(theta)        (gradient ASCENT on the surrogate L)

With ``first_order=False`` the gradient is taken with ``create_graph=True``, so theta'_i stays a
differentiable function of theta and an outer objective on theta'_i back-propagates through the
step, Hessian of L included. With ``first_order=True`` the gradient is detached: d theta' / d theta = I
(first-order MAML). Which Hessian the step carries depends on the surrogate L (``estimator``):

- ``"naive"``: :func:`pg_surrogate` (MAML-RL). Expected Hessian: H2 only.
- ``"lvc"``: :func:`lvc_surrogate` (ProMP). Expected Hessian: H1 + H2.
- ``"dice"``: :func:`dice_surrogate` (Foerster et al. 2018). Expected Hessian: the full Hessian of J.
- ``"loaded-dice"``: :func:`loaded_dice_surrogate` (Farquhar et al. 2019) on the same advantages as LVC, the
  earlier actions' scores discounted by ``dice_lambda`` (default ``gae_lambda``): the same step as naive and LVC,
  and a Hessian of H1 + H2 plus an estimate of H12 + H12^T (unbiased with ``dice_lambda=1`` and the reward-to-go from
  the start as weights, as :mod:`metalearn_edu.rl.exact` checks).

(see :mod:`metalearn_edu.rl.exact` for the terms and tests/test_estimators.py for the proofs.)

Advantages for "naive" and "lvc" are GAE over the baseline values (``gae_lambda=1``: the reward-to-go
G_t = sum_{k>=t} gamma^(k-t) r_k minus the baseline), the usual MAML-RL choice. With gamma < 1 this
drops the gamma^t weight of the gradient of J = E[sum_t gamma^t r_t], which DiCE keeps; compare
estimators against exact meta-gradients with gamma = 1 (the horizon is finite).

Scale: by default L is the mean over episodes of the sum over time, whose gradient estimates grad J;
``reduction="step"`` averages over valid steps instead, the convention of rllab and pytorch-maml-rl
for which Finn's inner lr 0.1 (with normalised advantages) was tuned. On a 100-step horizon the two
differ by a factor of 100 in step size.

Speed: with a policy whose ``distribution`` takes per-task stacked params (``task_dim``, as the
policies of :mod:`metalearn_edu.rl.policies` and the tabular policy do), all T tasks are adapted in one
forward/backward pass; otherwise in a Python loop over tasks (one pass per task), the reference
implementation, which gives the same result.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
from torch import Tensor

from metalearn_edu.rl.advantages import LinearFeatureBaseline, gae, normalize_advantages, validate_unit_interval
from metalearn_edu.rl.batch import EpisodeBatch
from metalearn_edu.rl.objectives import dice_surrogate, loaded_dice_surrogate, lvc_surrogate, mean_episode_length, pg_surrogate

ESTIMATORS = ("naive", "dice", "lvc", "loaded-dice")
REDUCTIONS = ("episode", "step")


def inner_surrogate(
    estimator: str,
    log_probs: Tensor,
    rewards: Tensor,
    mask: Tensor,
    *,
    gamma: float,
    values: Tensor | None = None,
    gae_lambda: float = 1.0,
    normalize: bool = False,
    dice_lambda: float | None = None,
) -> Tensor:
    """The inner-loop surrogate L of ``estimator`` on time-major episodes, per task (T,).

    naive: L = mean_b sum_t log pi_t A_t;  lvc: L = mean_b sum_t exp(log pi_t - stop_grad(log pi_t)) A_t;
    loaded-dice: L = mean_b sum_t [MagicBox(w_t) - MagicBox(v_t)] A_t, v_t = dice_lambda * w_{t-1}, w_t = v_t + log pi_t;
    dice:  L = mean_b [sum_t gamma^t r_t MagicBox(sum_{t'<=t} log pi_t') + sum_t (1 - MagicBox(log pi_t)) gamma^t b_t]
    with A_t = GAE(gamma, gae_lambda) over ``values`` (zero when None), optionally normalised, and
    b_t = ``values``.

    Args:
        estimator: one of "naive", "dice", "lvc", "loaded-dice".
        log_probs, rewards, mask: (H, T, B).
        gamma: discount in [0, 1].
        values: optional (H, T, B) baseline values V(s_t).
        gae_lambda: GAE lambda for naive / lvc / loaded-dice; DiCE takes the rewards themselves (must stay 1).
        normalize: standardise the advantages per task (not for dice).
        dice_lambda: loaded-dice's discount of the earlier actions' scores (None: ``gae_lambda``); others ignore it.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    gamma = validate_unit_interval(gamma, "gamma")
    gae_lambda = validate_unit_interval(gae_lambda, "gae_lambda")
    if estimator == "dice":
        if gae_lambda != 1.0 or normalize:
            raise ValueError("gae_lambda and normalize apply to the naive and lvc estimators only (dice uses rewards)")
        return dice_surrogate(log_probs, rewards, mask, gamma, baseline=values)
    baseline_values = torch.zeros_like(rewards) if values is None else values
    advantages = gae(rewards, baseline_values, mask, gamma, gae_lambda)  # (H, T, B)
    if normalize:
        advantages = normalize_advantages(advantages, mask)
    if estimator == "loaded-dice":
        return loaded_dice_surrogate(log_probs, advantages, mask, gae_lambda if dice_lambda is None else dice_lambda)
    surrogate = pg_surrogate if estimator == "naive" else lvc_surrogate
    return surrogate(log_probs, advantages, mask)


def _check_arguments(policy: Any, params: Mapping[str, Tensor], batch: EpisodeBatch, lr: float, steps: int) -> None:
    if not callable(getattr(policy, "distribution", None)):
        raise TypeError(f"policy must have a distribution(params, obs) method, got {type(policy).__name__}")
    if not isinstance(params, Mapping) or not params or not all(isinstance(v, Tensor) for v in params.values()):
        raise TypeError("params must be a non-empty dict of name -> torch.Tensor")
    if not isinstance(batch, EpisodeBatch):
        raise TypeError(f"batch must be an EpisodeBatch, got {type(batch).__name__}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a float > 0 (the inner step size), got {lr!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def _takes_task_dim(policy: Any) -> bool:
    """Whether ``policy.distribution`` accepts per-task stacked params with a ``task_dim`` keyword."""
    try:
        return "task_dim" in inspect.signature(policy.distribution).parameters
    except (TypeError, ValueError):
        return False


def _ascend(
    policy: Any,
    start: dict[str, Tensor],
    episodes: EpisodeBatch,
    values: Tensor | None,
    task_dim: int | None,
    options: dict[str, Any],
) -> dict[str, Tensor]:
    """``steps`` ascent steps from ``start`` on ``episodes``; one task (task_dim None) or T stacked tasks.

    With T stacked tasks the surrogate summed over tasks is differentiated once: task i's loss only
    depends on slice i of the stacked params, so slice i of the gradient is grad L_i.
    """
    lr, steps, first_order = options["lr"], options["steps"], options["first_order"]
    current = dict(start)
    for _ in range(steps):
        extra = {} if task_dim is None else {"task_dim": task_dim}
        log_probs = policy.distribution(current, episodes.observations, **extra).log_prob(episodes.actions)
        surrogate = inner_surrogate(
            options["estimator"], log_probs, episodes.rewards, episodes.mask, gamma=options["gamma"],
            values=values, gae_lambda=options["gae_lambda"], normalize=options["normalize"], dice_lambda=options["dice_lambda"],
        )  # (T,)
        if options["reduction"] == "step":
            surrogate = surrogate / mean_episode_length(episodes.mask)  # mean over valid steps
        surrogate = surrogate.sum()  # task i's loss only reaches task i's params
        grads = torch.autograd.grad(surrogate, list(current.values()), create_graph=not first_order, allow_unused=True)
        current = {
            name: value if grad is None else value + lr * (grad.detach() if first_order else grad)
            for (name, value), grad in zip(current.items(), grads)
        }
    return current


def adapt_policy(
    policy: Any,
    params: Mapping[str, Tensor],
    batch: EpisodeBatch,
    *,
    lr: float,
    estimator: str = "naive",
    first_order: bool = False,
    gamma: float = 0.99,
    steps: int = 1,
    baseline: LinearFeatureBaseline | None = None,
    gae_lambda: float = 1.0,
    normalize: bool = False,
    per_task_params: bool = False,
    reduction: str = "episode",
    vectorize: bool | None = None,
    dice_lambda: float | None = None,
) -> dict[str, Tensor]:
    """Per-task policy-gradient ascent theta'_i = theta + lr * grad L_i(theta), ``steps`` times.

    Args:
        policy: has ``distribution(params, obs)`` whose ``log_prob(actions)`` is (H, 1, B) for one
            task's episodes; with ``distribution(params, obs, task_dim=...)`` it may also take
            params stacked per task (see ``vectorize``).
        params: the meta-parameters theta (shared by all tasks), or with ``per_task_params=True``
            a dict of (T, ...) tensors, one set per task (e.g. the result of a previous adaptation).
        batch: T tasks x B episodes sampled with the policy at ``params``.
        lr: the inner step size alpha > 0.
        estimator: the surrogate, "naive", "dice", "lvc" or "loaded-dice" (see the module docstring).
        first_order: detach the inner gradient (first-order MAML).
        gamma: discount in [0, 1].
        steps: gradient steps on the same batch.
        baseline: a :class:`LinearFeatureBaseline`, fitted here (per task) on the discounted
            returns of ``batch``; its predictions are the values of GAE and of DiCE's baseline term.
        gae_lambda, normalize: advantage options of the naive and lvc estimators.
        per_task_params: ``params`` carries a leading task dimension T.
        reduction: "episode": the surrogate is the mean over episodes of the sum over time (its
            gradient estimates grad J); "step": the mean over valid steps (the surrogate divided by
            the mean episode length), the convention Finn's inner lr 0.1 was tuned with (rllab,
            pytorch-maml-rl, with ``normalize=True``). With "episode" on long horizons use a
            correspondingly smaller lr.
        vectorize: adapt all T tasks in one pass with params expanded to (T, ...) and
            ``task_dim=1``, instead of a loop over tasks (same result). None: when the policy's
            ``distribution`` takes ``task_dim``.
        dice_lambda: loaded-dice's discount of the earlier actions' scores (None: ``gae_lambda``).

    Returns:
        the adapted parameters, each of shape (T, ...): ``{name: stack_i theta'_i[name]}``.
    """
    _check_arguments(policy, params, batch, lr, steps)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    gamma = validate_unit_interval(gamma, "gamma")
    values = None
    if baseline is not None:
        if not isinstance(baseline, LinearFeatureBaseline):
            raise TypeError(f"baseline must be a LinearFeatureBaseline or None, got {type(baseline).__name__}")
        returns = gae(batch.rewards, torch.zeros_like(batch.rewards), batch.mask, gamma, 1.0)  # (H, T, B)
        values = baseline.fit(batch, returns).predict(batch)  # (H, T, B)
    num_tasks = batch.num_tasks
    if per_task_params and any(v.shape[:1] != (num_tasks,) for v in params.values()):
        raise ValueError(f"per_task_params=True needs every params tensor to start with T = {num_tasks}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if vectorize is None:
        vectorize = _takes_task_dim(policy)
    options = dict(lr=lr, steps=steps, first_order=first_order, estimator=estimator, gamma=gamma,
                   gae_lambda=gae_lambda, normalize=normalize, reduction=reduction, dice_lambda=dice_lambda)
    # a leaf that does not require grad (e.g. evaluation params) still gets adapted
    start = {n: v if v.requires_grad else v.detach().requires_grad_(True) for n, v in params.items()}

    if vectorize:
        if not per_task_params:  # the same theta for every task, differentiably
            start = {n: v.unsqueeze(0).expand(num_tasks, *v.shape) for n, v in start.items()}
        return _ascend(policy, start, batch, values, 1, options)
    adapted = []
    for task in range(num_tasks):  # one forward / backward per task
        task_start = {n: (v[task] if per_task_params else v) for n, v in start.items()}
        task_values = None if values is None else values[:, task : task + 1]
        adapted.append(_ascend(policy, task_start, batch.task(task), task_values, None, options))
    return {name: torch.stack([task_params[name] for task_params in adapted]) for name in params}
