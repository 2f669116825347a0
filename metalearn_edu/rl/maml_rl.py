"""MAML-RL outer updates: MAML-VPG (Adam) and MAML-TRPO (Finn et al. 2017), plus the pretrained baseline.

One meta-iteration of MAML-RL, for T tasks and B episodes per task:

    1. sample D_i  ~ pi_theta            on task i          (the pre-update batch, ``MetaBatch.pre``)
    2. theta'_i = theta + alpha grad_theta L_i(theta; D_i)   (the inner step, :class:`InnerSpec`)
    3. sample D'_i ~ pi_theta'_i          on task i          (the post-update batch, ``MetaBatch.post``)
    4. improve  J(theta) = (1/T) sum_i J_i(theta'_i(theta); D'_i)   through the inner step

Conventions shared with :mod:`metalearn_edu.rl.ppo_maml`:

- Surrogates are averaged over each task's valid steps, (1/N_i) sum_b sum_t with N_i = sum_{b,t} m_t, as in
  rllab, pytorch-maml-rl and ProMP, so the step sizes of the papers (inner alpha = 0.1, TRPO delta = 0.01,
  Adam 1e-3) mean what they meant there. The library's surrogates (:mod:`metalearn_edu.rl.objectives`)
  average over episodes and sum over time, so they are divided by the mean episode length here
  (:func:`per_step`), and the inner step uses ``reduction="step"`` of :func:`adapt_policy`.
- Advantages are GAE(gamma, lambda) over the linear feature baseline fitted per task, standardised per task
  (rllab's ``center_adv``), for both the inner step and the outer objective.

Shapes: H steps, T tasks, B episodes per task; adapted parameters carry a leading T on every tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from metalearn_edu.rl.advantages import LinearFeatureBaseline, discounted_returns, gae, normalize_advantages
from metalearn_edu.rl.batch import EpisodeBatch
from metalearn_edu.rl.inner import ESTIMATORS, adapt_policy
from metalearn_edu.rl.objectives import kl_divergence, mean_episode_length, pg_surrogate
from metalearn_edu.rl.trpo import backtracking_line_search, conjugate_gradient, flatten, trust_region_step, unflatten

Params = dict[str, Tensor]


def make_baseline(batch: EpisodeBatch, policy: nn.Module) -> LinearFeatureBaseline:
    """A fresh linear feature baseline for ``batch`` (one-hot features for integer observations)."""
    discrete = not torch.is_floating_point(batch.observations)
    return LinearFeatureBaseline(num_observations=int(policy.obs_dim) if discrete else None)


def estimate_advantages(
    batch: EpisodeBatch, policy: nn.Module, *, gamma: float, gae_lambda: float = 1.0, normalize: bool = True
) -> Tensor:
    """A_t = GAE(gamma, lambda) over a per-task linear baseline fitted to the discounted returns; (H, T, B).

    With ``normalize`` the advantages are standardised per task over its valid steps.
    """
    baseline = make_baseline(batch, policy)
    returns = discounted_returns(batch.rewards, batch.mask, gamma)  # (H, T, B)
    values = baseline.fit(batch, returns).predict(batch)  # (H, T, B)
    advantages = gae(batch.rewards, values, batch.mask, gamma, gae_lambda)
    return normalize_advantages(advantages, batch.mask) if normalize else advantages


@dataclass(frozen=True)
class InnerSpec:
    """The inner policy-gradient step theta' = theta + alpha grad L(theta), ``steps`` times, on a task's batch.

    ``lr`` is alpha on the per-step-averaged surrogate (1/N_i) sum_b sum_t (the papers' convention).
    ``later_lr`` is alpha of the steps taken on fresh episodes (:meth:`adapt_meta` with ``MetaBatch.mids``).
    ``estimator``: "naive" (MAML-RL), "lvc" (ProMP), "dice" (unbiased, no advantage standardisation) or
    "loaded-dice" (LVC's step with the cross-time Hessian terms, earlier actions discounted by ``dice_lambda``).
    """

    lr: float = 0.1  # alpha, inner step size on the per-step-averaged surrogate
    estimator: str = "naive"  # which surrogate the inner step differentiates: naive | lvc | dice | loaded-dice
    steps: int = 1  # inner gradient steps on the same pre-update batch
    gamma: float = 0.99  # discount of the returns and advantages
    gae_lambda: float = 1.0  # lambda of GAE (1.0: reward-to-go minus the baseline)
    normalize: bool = True  # standardise the inner advantages per task (naive / lvc)
    later_lr: float | None = None  # alpha of steps 2.. on fresh episodes (None: lr / 2, the evaluation's 0.1 then 0.05)
    dice_lambda: float | None = None  # loaded-dice: discount of the earlier actions' scores in the Hessian (None: gae_lambda)

    @property
    def later_step_size(self) -> float:
        return self.lr / 2 if self.later_lr is None else self.later_lr

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"inner_lr must be a positive number, got {self.lr!r}")

    def adapt(
        self,
        policy: nn.Module,
        params: Params,
        batch: EpisodeBatch,
        *,
        create_graph: bool,
        lr: float | None = None,
        per_task_params: bool = False,
    ) -> Params:
        """Per-task adapted parameters {name: (T, ...)}; differentiable in ``params`` when ``create_graph``."""
        dice = self.estimator == "dice"
        return adapt_policy(
            policy,
            params,
            batch,
            lr=self.lr if lr is None else lr,
            estimator=self.estimator,
            first_order=not create_graph,
            gamma=self.gamma,
            steps=self.steps,
            baseline=make_baseline(batch, policy),
            gae_lambda=1.0 if dice else self.gae_lambda,
            normalize=self.normalize and not dice,
            per_task_params=per_task_params,
            reduction="step",
            dice_lambda=self.dice_lambda,
        )

    def adapt_meta(self, policy: nn.Module, params: Params, meta: "MetaBatch", *, create_graph: bool) -> Params:
        """theta'_i after one step on ``meta.pre``, then one step of ``later_step_size`` on each of ``meta.mids``.

        theta^(1)_i = theta + alpha grad L_i(theta) on D_i;  theta^(k+1)_i = theta^(k)_i + alpha' grad L_i(theta^(k)_i)
        on D^(k)_i, episodes sampled with theta^(k)_i. With ``create_graph`` the whole chain is differentiable in
        theta; the estimator's surrogate on D^(k)_i carries the dependence of its sampling distribution on theta.
        """
        return self.adapt_meta_path(policy, params, meta, create_graph=create_graph)[-1]

    def adapt_meta_path(self, policy: nn.Module, params: Params, meta: "MetaBatch", *, create_graph: bool) -> list[Params]:
        """[theta^(1)_i, ..., theta^(K)_i]: the parameters after every step of :meth:`adapt_meta` (K = 1 + len(meta.mids))."""
        path = [self.adapt(policy, params, meta.pre, create_graph=create_graph)]
        for mid in meta.mids:
            path.append(self.adapt(policy, path[-1], mid, create_graph=create_graph, lr=self.later_step_size, per_task_params=True))
        return path

    def adapt_detached(self, policy: nn.Module, params: Params, batch: EpisodeBatch, **kwargs: Any) -> Params:
        """The adapted parameters as constants, for sampling the post-update batch or for evaluation."""
        params = {name: value.detach() for name, value in params.items()}
        return {name: value.detach() for name, value in self.adapt(policy, params, batch, create_graph=False, **kwargs).items()}


@dataclass
class MetaBatch:
    """The data of one meta-iteration: pre-update episodes, post-update episodes and their advantages.

    ``post_advantages`` (H, T, B) are constants computed once (see :func:`estimate_advantages`).
    ``mids``: with several inner steps on fresh episodes, the episodes of the policy after steps 1..K-1.
    ``mid_advantages``: their advantages, when an outer objective scores every step (``score_mids`` of :meth:`build`).
    """

    pre: EpisodeBatch
    post: EpisodeBatch | None = None
    post_advantages: Tensor | None = None
    mids: tuple[EpisodeBatch, ...] = ()
    mid_advantages: tuple[Tensor, ...] = ()

    @classmethod
    def build(cls, pre: EpisodeBatch, post: EpisodeBatch | None, policy: nn.Module, *, gamma: float, gae_lambda: float = 1.0,
              mids: tuple[EpisodeBatch, ...] = (), score_mids: bool = False) -> "MetaBatch":
        if post is None:
            return cls(pre, mids=tuple(mids))
        scored = (*mids, post) if score_mids else (post,)
        advantages = [estimate_advantages(batch, policy, gamma=gamma, gae_lambda=gae_lambda) for batch in scored]  # each (H, T, B)
        return cls(pre, post, advantages[-1], tuple(mids), tuple(advantages[:-1]))

    def select(self, tasks: slice) -> "MetaBatch":
        """The same meta-batch restricted to the tasks in the slice ``tasks``: every batch and advantage sliced on T."""
        return MetaBatch(
            self.pre.select(tasks),
            None if self.post is None else self.post.select(tasks),
            None if self.post_advantages is None else self.post_advantages[:, tasks],
            tuple(mid.select(tasks) for mid in self.mids),
            tuple(advantages[:, tasks] for advantages in self.mid_advantages),
        )

    def scored(self, every_step: bool = False) -> list[tuple[EpisodeBatch, Tensor]]:
        """The (episodes, advantages) an outer objective scores: the post-update batch, or with ``every_step``
        the batch after each inner step 1..K (``build(score_mids=True)`` must have estimated the mids' advantages)."""
        if not every_step or not self.mids:
            return [(self.post, self.post_advantages)]
        if len(self.mid_advantages) != len(self.mids):
            raise ValueError("every_step needs the advantages of the mid-adaptation episodes: MetaBatch.build(..., score_mids=True)")
        return [*zip(self.mids, self.mid_advantages), (self.post, self.post_advantages)]


def per_step(per_task: Tensor, mask: Tensor) -> Tensor:
    """Turn per-task surrogates (T,) of the library (mean over episodes, sum over time) into the mean over
    valid steps and average over tasks: (1/T) sum_i surrogate_i / (N_i / B), a scalar."""
    return (per_task / mean_episode_length(mask)).mean()


def post_log_probs(policy: nn.Module, adapted: Params, post: EpisodeBatch) -> Tensor:
    """log pi_theta'_i(a_t | s_t) on task i's post-update episodes: (H, T, B)."""
    return policy.distribution(adapted, post.observations, task_dim=1).log_prob(post.actions)


def maml_vpg_objective(policy: nn.Module, meta: MetaBatch, inner: InnerSpec) -> Tensor:
    """J(theta) = (1/T) sum_i (1/N_i) sum_b sum_t log pi_theta'_i(theta)(a_t | s_t) A'_t  on D'_i (scalar).

    Its gradient is the policy gradient at theta'_i chained through the inner step:
    grad J = (1/T) sum_i (d theta'_i / d theta)^T grad_theta' J_i, with the Hessian term of ``inner.estimator``.
    """
    adapted = inner.adapt_meta(policy, policy.parameters_dict(), meta, create_graph=True)
    log_probs = post_log_probs(policy, adapted, meta.post)  # (H, T, B)
    return per_step(pg_surrogate(log_probs, meta.post_advantages, meta.post.mask), meta.post.mask)


def maml_vpg_step(policy: nn.Module, optimizer: torch.optim.Optimizer, meta: MetaBatch, inner: InnerSpec) -> dict[str, float]:
    """MAML-VPG: one Adam step on -J(theta) of :func:`maml_vpg_objective`. Returns {"objective": J before the step}."""
    objective = maml_vpg_objective(policy, meta, inner)
    optimizer.zero_grad(set_to_none=True)
    (-objective).backward()
    optimizer.step()
    return {"objective": float(objective.detach())}


def pretrain_objective(policy: nn.Module, meta: MetaBatch, gamma: float) -> Tensor:
    """J(theta) = (1/T) sum_i (1/N_i) sum_b sum_t log pi_theta(a_t | s_t) A_t on the pre-update batch (no adaptation)."""
    advantages = estimate_advantages(meta.pre, policy, gamma=gamma)
    log_probs = policy.distribution(None, meta.pre.observations).log_prob(meta.pre.actions)  # (H, T, B)
    return per_step(pg_surrogate(log_probs, advantages, meta.pre.mask), meta.pre.mask)


def pretrain_step(policy: nn.Module, optimizer: torch.optim.Optimizer, meta: MetaBatch, gamma: float) -> dict[str, float]:
    """The multi-task baseline: plain policy gradient (one Adam step) on tasks drawn from the distribution."""
    objective = pretrain_objective(policy, meta, gamma)
    optimizer.zero_grad(set_to_none=True)
    (-objective).backward()
    optimizer.step()
    return {"objective": float(objective.detach())}


class _PostUpdateProblem:
    """The TRPO quantities of MAML as functions of theta: surrogate and KL on the post-update episodes.

    L(theta)  = (1/T) sum_i (1/N_i) sum_b sum_t [pi_theta'_i(theta)(a_t|s_t) / pi_theta'_i(theta_old)(a_t|s_t)] A'_t
    KL(theta) = (1/T) sum_i mean_t KL(pi_theta'_i(theta_old)(.|s_t) || pi_theta'_i(theta)(.|s_t))
    """

    def __init__(self, policy: nn.Module, meta: MetaBatch, inner: InnerSpec) -> None:
        self.policy, self.meta, self.inner = policy, meta, inner
        self.params = policy.parameters_dict()
        adapted = {n: v.detach() for n, v in inner.adapt_meta(policy, self.params, meta, create_graph=False).items()}  # theta'_i(theta_old)
        with torch.no_grad():
            self.old_log_probs = post_log_probs(policy, adapted, meta.post)  # (H, T, B)
            self.old_raw = tuple(r.detach() for r in policy.raw_outputs(adapted, meta.post.observations, task_dim=1))

    def evaluate(self, create_graph: bool) -> tuple[Tensor, Tensor]:
        """(L, KL) at the policy's current parameters; differentiable in theta when ``create_graph``."""
        policy, post = self.policy, self.meta.post
        adapted = self.inner.adapt_meta(policy, self.params, self.meta, create_graph=create_graph)
        raw = policy.raw_outputs(adapted, post.observations, task_dim=1)
        ratios = torch.exp(policy.log_prob(raw, post.actions) - self.old_log_probs)  # (H, T, B)
        surrogate = per_step((ratios * self.meta.post_advantages * post.mask).sum(0).mean(-1), post.mask)  # (H,T,B) -> (T,) -> scalar
        kl = kl_divergence(policy.make_distribution(self.old_raw, validate=False), policy.make_distribution(raw, validate=False), post.mask)
        return surrogate, kl.mean()


def maml_trpo_step(
    policy: nn.Module,
    meta: MetaBatch,
    inner: InnerSpec,
    *,
    max_kl: float = 0.01,
    cg_iterations: int = 10,
    cg_damping: float = 1e-5,
    backtrack: float = 0.8,
    max_backtracks: int = 15,
) -> dict[str, float]:
    """MAML-TRPO (Finn et al. 2017): a natural-gradient step on L(theta) under KL(theta) <= ``max_kl``.

    L and KL are those of :class:`_PostUpdateProblem`, both differentiated through the inner step:
    g = grad L(theta_old); F v = grad (grad KL(theta_old) . v) + damping v (KL Hessian-vector products);
    x = CG(F, g); d = sqrt(2 delta / x^T F x) x; then the backtracking line search of
    :func:`backtracking_line_search` on theta_old + beta^k d checks improvement of L and the measured KL.
    The parameters of ``policy`` are updated in place; nothing is changed when no step is accepted.
    """
    problem = _PostUpdateProblem(policy, meta, inner)
    params = list(problem.params.values())
    surrogate, kl = problem.evaluate(create_graph=True)
    grads = flatten(torch.autograd.grad(surrogate, params, retain_graph=True))  # (P,)
    kl_grads = flatten(torch.autograd.grad(kl, params, create_graph=True))  # (P,), zero at theta_old

    def fisher_vector_product(v: Tensor) -> Tensor:
        return flatten(torch.autograd.grad(kl_grads.dot(v), params, retain_graph=True)) + cg_damping * v

    direction = conjugate_gradient(fisher_vector_product, grads, iterations=cg_iterations)
    full_step = trust_region_step(direction, fisher_vector_product(direction), max_kl)
    start = flatten([p.detach() for p in params]).clone()

    def set_params(flat: Tensor) -> None:
        with torch.no_grad():
            for p, value in zip(params, unflatten(flat, problem.params).values()):
                p.copy_(value)

    def evaluate(step: Tensor) -> tuple[float, float]:
        set_params(start + step)
        new_surrogate, new_kl = problem.evaluate(create_graph=False)
        return float(new_surrogate.detach()), float(new_kl.detach())

    result = backtracking_line_search(evaluate, full_step, float(surrogate.detach()), max_kl=max_kl, backtrack=backtrack, max_tries=max_backtracks)
    if result.fraction == 0.0:
        set_params(start)
    else:
        set_params(start + result.fraction * full_step)
    return {"objective": float(surrogate.detach()), "improvement": result.improvement, "post_kl": result.kl, "step_fraction": result.fraction}


__all__ = [
    "InnerSpec",
    "MetaBatch",
    "estimate_advantages",
    "make_baseline",
    "maml_trpo_step",
    "maml_vpg_objective",
    "maml_vpg_step",
    "per_step",
    "post_log_probs",
    "pretrain_objective",
    "pretrain_step",
]
