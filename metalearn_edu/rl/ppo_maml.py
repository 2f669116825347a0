"""PPO-MAML: ProMP (Rothfuss et al. 2019) and the PPO-inner variant (first-order outer update).

ProMP maximises, with several Adam epochs on the same sampled meta-batch,

    J(theta) = (1/T) sum_i J^clip_i(theta'_i(theta)) - eta * (1/T) sum_i KL(pi_theta_old || pi_theta)   on D_i

    J^clip_i(theta') = (1/N_i) sum_b sum_t min(rho_t A'_t, clip(rho_t, 1 - eps, 1 + eps) A'_t)   on D'_i
    rho_t = pi_theta'_i(theta)(a_t | s_t) / pi_theta'_i(theta_old)(a_t | s_t)

theta'_i(theta) = theta + alpha grad L^LVC_i(theta) is recomputed from the current theta at every epoch,
so the likelihood ratio and its gradient flow through the inner step (Hessian terms of the chosen
estimator, LVC by default). At the first epoch theta = theta_old: every rho_t is 1 and the KL term is 0.

PPO-inner: each task is adapted from theta by a few PPO epochs (plain gradient ascent of step alpha on the
clipped surrogate of its pre-update episodes, the first epoch being exactly the policy-gradient step), and
the outer update is first order: Delta_i = theta'_i - theta_old is held constant and the same clipped
objective is maximised over theta'_i(theta) = theta + Delta_i (d theta'_i / d theta = I).

Shapes: H steps, T tasks, B episodes per task; adapted parameters carry a leading T on every tensor.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from metalearn_edu.rl.advantages import crowd_spread_advantages
from metalearn_edu.rl.batch import EpisodeBatch
from metalearn_edu.rl.maml_rl import InnerSpec, MetaBatch, Params, estimate_advantages, per_step, post_log_probs
from metalearn_edu.rl.objectives import kl_divergence, ppo_clip_loss
from metalearn_edu.rl.trpo import backtracking_line_search, flatten, unflatten


def clipped_objective(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: float) -> Tensor:
    """(1/T) sum_i (1/N_i) sum_b sum_t min(rho A, clip(rho) A): the PPO surrogate per valid step, averaged over tasks."""
    return per_step(-ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip), mask)


def pre_update_kl(policy: nn.Module, old_raw: tuple[Tensor, ...], pre: EpisodeBatch, new_raw: tuple[Tensor, ...] | None = None) -> Tensor:
    """(1/T) sum_i mean_t KL(pi_theta_old(.|s_t) || pi_theta(.|s_t)) over the pre-update states (scalar).
    ``new_raw``: the policy's raw outputs on ``pre.observations`` when the caller has them already."""
    new_raw = policy.raw_outputs(None, pre.observations) if new_raw is None else new_raw
    kl = kl_divergence(policy.make_distribution(old_raw, validate=False), policy.make_distribution(new_raw, validate=False), pre.mask)
    return kl.mean()


def post_update_kl(policy: nn.Module, old_raw: tuple[Tensor, ...], adapted: Params, post: EpisodeBatch) -> Tensor:
    """(1/T) sum_i mean_t KL(pi_theta'_i(theta_old)(.|s_t) || pi_theta'_i(theta)(.|s_t)) over task i's post-update states
    (scalar): how far an outer step moved the adapted policies, the quantity MAML-TRPO's trust region bounds.
    ``old_raw``: the raw outputs of the adapted policies at theta_old on ``post.observations``, detached."""
    new_raw = policy.raw_outputs(adapted, post.observations, task_dim=1)
    kl = kl_divergence(policy.make_distribution(old_raw, validate=False), policy.make_distribution(new_raw, validate=False), post.mask)
    return kl.mean()


def shrink_step_to_kl(params: Params, start: Params, kl: Callable[[], float], bound: float, halvings: int = 10) -> float:
    """Pull ``params`` back toward ``start`` along the step just taken until ``kl()`` <= ``bound``, in place.

    theta <- theta_start + f (theta - theta_start) with f = 1, 1/2, 1/4, ... (at most ``halvings`` halvings,
    TRPO's :func:`backtracking_line_search` with a factor of 1/2 and no improvement test); if none is within
    the bound, theta <- theta_start. Returns the fraction f kept (1.0: untouched, 0.0: undone).
    """
    with torch.no_grad():
        if kl() <= bound:
            return 1.0
        base = flatten(start)

        def move_to(step: Tensor) -> tuple[float, float]:  # theta_start + step; the search only reads the KL
            for name, value in unflatten(base + step, params).items():
                params[name].copy_(value)
            return 0.0, kl()

        half_step = 0.5 * (flatten(params) - base)
        found = backtracking_line_search(move_to, half_step, -math.inf, max_kl=bound, backtrack=0.5, max_tries=halvings)
        if found.fraction == 0.0:
            move_to(torch.zeros_like(base))
        return 0.5 * found.fraction


def task_slices(num_tasks: int, chunk: int | None) -> list[slice]:
    """The slices of ``chunk`` consecutive tasks that cover 0..num_tasks-1 (one slice of all with ``chunk`` None)."""
    if chunk is None:
        return [slice(0, num_tasks)]
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"task_chunk must be a positive integer or None, got {chunk!r}")
    return [slice(first, min(first + chunk, num_tasks)) for first in range(0, num_tasks, chunk)]


def ppo_outer_epochs(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: MetaBatch,
    adapted_fn: Callable[[Params, MetaBatch, slice], list[Params]],
    *,
    epochs: int,
    clip: float,
    kl_coef: float,
    kl_stop: float | None = None,
    every_step: bool = False,
    post_kl_stop: float | None = None,
    task_chunk: int | None = None,
    spread_bonus: float = 0.0,
    gamma: float = 0.99,
) -> dict[str, float]:
    """``epochs`` Adam steps on J(theta) = J^clip(adapted_fn(theta)[-1]) - kl_coef KL(pi_theta_old || pi_theta).

    ``adapted_fn(theta, chunk, tasks)`` lists the adapted parameters after each inner step 1..K of the tasks in the
    slice ``tasks``, whose data is ``chunk = meta.select(tasks)``. With ``every_step``
    J^clip is the mean over k of J^clip_k(theta^(k)) on the episodes sampled after step k (``meta.scored``;
    the multi-step loss of MAML++, Antoniou et al. 2019), so the returns after fewer steps are trained too.
    The old log-probabilities of the ratio are those of the first epoch (theta = theta_old), detached,
    so rho = 1 exactly at the first epoch. With ``kl_stop``, an epoch whose step takes the pre-update
    KL(pi_theta_old || pi_theta) above ``kl_stop`` is shrunk back along its own direction by halves
    (:func:`shrink_step_to_kl`) until the KL is within the bound, and the remaining epochs are skipped;
    if ten halvings do not suffice the step is undone, Adam's state included. ``post_kl_stop`` guards the
    same way the post-update KL of the last adapted policies (:func:`post_update_kl`); with both set, an epoch
    is shrunk until both are within their bounds. ``task_chunk``: compute J and its gradient ``task_chunk`` tasks
    at a time and add the chunks up, weighted by their share of the T tasks. J is a mean of per-task terms, so
    this is the same update (up to rounding) with smaller tensors, which a CPU's caches favour for large meta-batches.
    ``spread_bonus`` beta > 0 adds beta * J^clip(theta) on the pre-update episodes themselves, with the advantages of
    :func:`~metalearn_edu.rl.advantages.crowd_spread_advantages` (discount ``gamma``): an exploration bonus that pays
    the policy before adaptation for spreading a task's episodes apart (a tested option, off by default).
    Returns the objective, KL and clip fraction at the first and last epochs, ``epochs_kept`` (full epochs plus the
    fraction kept of the shrunk one) and, with ``post_kl_stop``, ``post_kl``: the post-update KL of the update kept.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"ppo_epochs must be a positive integer, got {epochs!r}")
    params = policy.parameters_dict()
    num_tasks = meta.pre.num_tasks
    chunks = [(tasks, meta.select(tasks), (tasks.stop - tasks.start) / num_tasks) for tasks in task_slices(num_tasks, task_chunk)]
    with torch.no_grad():
        old_raw = [tuple(r.detach() for r in policy.raw_outputs(None, chunk.pre.observations)) for _, chunk, _ in chunks]
    scored = [chunk.scored(every_step) for _, chunk, _ in chunks]  # per chunk [(episodes, advantages)], the last = post
    if not spread_bonus >= 0:
        raise ValueError(f"spread_bonus must be a non-negative number, got {spread_bonus!r}")
    bonus_advantages = [crowd_spread_advantages(chunk.pre.observations, chunk.pre.mask, gamma) if spread_bonus else None
                        for _, chunk, _ in chunks]  # per chunk (H, T', B)
    old_log_probs: list[list[Tensor]] = []  # per chunk, per scored stage: (H, T', B) at theta_old
    old_post_raw: list[tuple[Tensor, ...]] = []  # per chunk: the last adapted policies' raw outputs at theta_old
    stats = {"epochs_kept": float(epochs)}
    guarded = kl_stop is not None or post_kl_stop is not None

    def post_kl() -> float:  # the inner steps need autograd even inside the guard's no_grad
        total = 0.0
        for (tasks, chunk, weight), old in zip(chunks, old_post_raw):
            with torch.enable_grad():
                adapted = {n: v.detach() for n, v in adapted_fn(params, chunk, tasks)[-1].items()}
            total += weight * float(post_update_kl(policy, old, adapted, chunk.post))
        return total

    def pre_kl() -> float:
        return sum(weight * float(pre_update_kl(policy, old, chunk.pre)) for (_, chunk, weight), old in zip(chunks, old_raw))

    def guard_ratio() -> float:  # <= 1 when every guarded KL is within its bound
        ratios = [] if kl_stop is None else [pre_kl() / kl_stop]
        return max(ratios + ([] if post_kl_stop is None else [post_kl() / post_kl_stop]))

    # the pre-update guard alone compares the KL with its own bound, as it did before the post-update guard existed
    check, bound = (pre_kl, kl_stop) if post_kl_stop is None else (guard_ratio, 1.0)

    for epoch in range(epochs):
        if guarded:  # where an overshooting step is pulled back toward
            saved = ({n: v.detach().clone() for n, v in params.items()}, copy.deepcopy(optimizer.state_dict()))
        optimizer.zero_grad(set_to_none=True)
        objective_total = kl_total = clipped_steps = valid_steps = deviation = 0.0
        for c, ((tasks, chunk, weight), chunk_scored) in enumerate(zip(chunks, scored)):
            stages = adapted_fn(params, chunk, tasks)[-len(chunk_scored):]
            stage_log_probs = [post_log_probs(policy, adapted, batch) for adapted, (batch, _) in zip(stages, chunk_scored)]  # each (H, T', B)
            if epoch == 0:
                old_log_probs.append([log_probs.detach() for log_probs in stage_log_probs])
                if post_kl_stop is not None:
                    with torch.no_grad():
                        old_post_raw.append(tuple(r.detach() for r in policy.raw_outputs(stages[-1], chunk.post.observations, task_dim=1)))
            surrogate = sum(clipped_objective(log_probs, old, advantages, batch.mask, clip)
                            for log_probs, old, (batch, advantages) in zip(stage_log_probs, old_log_probs[c], chunk_scored)) / len(chunk_scored)
            pre_raw = policy.raw_outputs(None, chunk.pre.observations)  # at theta, for the KL term and the bonus
            kl = pre_update_kl(policy, old_raw[c], chunk.pre, new_raw=pre_raw)
            objective = weight * (surrogate - kl_coef * kl)
            if spread_bonus:  # the pre-update episodes were sampled at theta_old: their log-probabilities are the ratio's base
                pre_log_probs = policy.make_distribution(pre_raw).log_prob(chunk.pre.actions)  # (H, T', B)
                bonus = clipped_objective(pre_log_probs, chunk.pre.infos["log_probs"], bonus_advantages[c], chunk.pre.mask, clip)
                objective = objective + weight * spread_bonus * bonus
            (-objective).backward()
            with torch.no_grad():  # the epoch's statistics on the post-update episodes, at the parameters it started from
                mask = chunk.post.mask
                ratios = torch.exp(torch.where(mask > 0, stage_log_probs[-1] - old_log_probs[c][-1], 0.0))  # 1 on padded steps
                clipped_steps += float((((ratios - 1.0).abs() > clip).float() * mask).sum())
                valid_steps += float(mask.sum())
                deviation = max(deviation, float(((ratios - 1.0).abs() * mask).max()))
            objective_total += float(objective.detach())
            kl_total += weight * float(kl.detach())
        optimizer.step()
        tag = "first" if epoch == 0 else "last"
        stats |= {f"objective_{tag}": objective_total, f"kl_{tag}": kl_total, f"clip_fraction_{tag}": clipped_steps / valid_steps,
                  f"ratio_deviation_{tag}": deviation}
        if guarded:
            kept = shrink_step_to_kl(params, saved[0], check, bound)
            if kept == 0.0:
                optimizer.load_state_dict(saved[1])
            if kept < 1.0:
                stats["epochs_kept"] = epoch + kept
                break
    if post_kl_stop is not None:
        stats["post_kl"] = post_kl()
    return stats


def promp_step(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: MetaBatch,
    inner: InnerSpec,
    *,
    epochs: int = 5,
    clip: float = 0.3,
    kl_coef: float = 5e-4,
    kl_stop: float | None = None,
    every_step: bool = False,
    post_kl_stop: float | None = None,
    task_chunk: int | None = None,
    spread_bonus: float = 0.0,
) -> dict[str, float]:
    """ProMP: ``epochs`` Adam steps on J(theta) (module docstring), theta'_i(theta) recomputed through the inner step.

    ``every_step``: score the episodes after every inner step, not only the last; ``kl_stop`` and ``post_kl_stop``:
    the guards on the pre- and post-update KL; ``task_chunk``: tasks per gradient chunk; ``spread_bonus``: the weight
    of the exploration bonus on the pre-update episodes (see :func:`ppo_outer_epochs`).
    """
    return ppo_outer_epochs(
        policy, optimizer, meta, lambda params, chunk, _: inner.adapt_meta_path(policy, params, chunk, create_graph=True),
        epochs=epochs, clip=clip, kl_coef=kl_coef, kl_stop=kl_stop, every_step=every_step, post_kl_stop=post_kl_stop,
        task_chunk=task_chunk, spread_bonus=spread_bonus, gamma=inner.gamma,
    )


def adapt_kl_coef(kl_coef: float, kl: float, target: float) -> float:
    """ProMP's (and PPO's) adaptive KL penalty, applied after each outer update with its measured KL:

        eta <- 2 eta    if KL > 1.5 target      (the policy moved too far: penalise more)
        eta <- eta / 2  if KL < target / 1.5    (it barely moved: penalise less)
        eta unchanged   otherwise
    """
    if not target > 0 or not math.isfinite(target):
        raise ValueError(f"kl_target must be a positive number, got {target!r}")
    if kl > 1.5 * target:
        return 2.0 * kl_coef
    if kl < target / 1.5:
        return kl_coef / 2.0
    return kl_coef


def ppo_adapt(policy: nn.Module, params: Params, batch: EpisodeBatch, inner: InnerSpec, *, epochs: int = 3, clip: float = 0.3) -> Params:
    """Adapt every task by ``epochs`` steps of gradient ascent (step ``inner.lr``) on its PPO clipped surrogate.

    theta_i^(k+1) = theta_i^(k) + alpha grad J^clip_i(theta_i^(k)),  theta_i^(0) = theta, ratios against pi_theta,
    J^clip_i per step-averaged on task i's pre-update episodes with standardised GAE advantages.
    Returns {name: (T, ...)} constants.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"inner_epochs must be a positive integer, got {epochs!r}")
    advantages = estimate_advantages(batch, policy, gamma=inner.gamma, gae_lambda=inner.gae_lambda)  # (H, T, B)
    num_tasks = batch.num_tasks
    current = {n: v.detach().unsqueeze(0).expand(num_tasks, *v.shape).clone().requires_grad_(True) for n, v in params.items()}
    old_log_probs = None
    for _ in range(epochs):
        log_probs = policy.distribution(current, batch.observations, task_dim=1).log_prob(batch.actions)  # (H, T, B)
        if old_log_probs is None:
            old_log_probs = log_probs.detach()
        # summed over tasks: slice i of the gradient is task i's own gradient
        objective = clipped_objective(log_probs, old_log_probs, advantages, batch.mask, clip) * num_tasks
        grads = torch.autograd.grad(objective, list(current.values()))
        current = {n: (v + inner.lr * g).detach().requires_grad_(True) for (n, v), g in zip(current.items(), grads)}
    return {n: v.detach() for n, v in current.items()}


def ppo_inner_step(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: MetaBatch,
    adapted: Params,
    *,
    epochs: int = 5,
    clip: float = 0.3,
    kl_coef: float = 5e-4,
    kl_stop: float | None = None,
    post_kl_stop: float | None = None,
    task_chunk: int | None = None,
) -> dict[str, float]:
    """First-order outer update of PPO-inner: Delta_i = ``adapted``_i - theta_old held fixed, theta'_i = theta + Delta_i."""
    with torch.no_grad():
        deltas = {n: adapted[n] - p.detach().unsqueeze(0) for n, p in policy.parameters_dict().items()}  # (T, ...)
    return ppo_outer_epochs(
        policy, optimizer, meta, lambda params, _, tasks: [{n: params[n].unsqueeze(0) + deltas[n][tasks] for n in params}],
        epochs=epochs, clip=clip, kl_coef=kl_coef, kl_stop=kl_stop, post_kl_stop=post_kl_stop, task_chunk=task_chunk,
    )


__all__ = ["adapt_kl_coef", "clipped_objective", "post_update_kl", "ppo_adapt", "ppo_inner_step", "ppo_outer_epochs", "pre_update_kl", "promp_step",
           "shrink_step_to_kl", "task_slices"]
