"""The configuration of a meta-RL run, and the environment presets it is resolved against.

:class:`RLTrainConfig` holds every hyperparameter of :func:`metalearn_edu.rl.train.train_rl` with a one-line
doc each, and :meth:`RLTrainConfig.validate` names the first bad field and its accepted values.
``config.env`` names an :class:`EnvPreset` (defaults for the config and a sampler factory) or any registered
meta-environment; ``register_env_preset`` adds one (for example a MuJoCo task with its own fast sampler).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from metalearn_edu.envs import resolve_env_id, short_name
from metalearn_edu.rl.inner import ESTIMATORS
from metalearn_edu.rl.maml_rl import InnerSpec
from metalearn_edu.rl.sampler import BACKENDS
from metalearn_edu.runtime import config_from_dict

ALGORITHMS = ("maml-vpg", "maml-trpo", "ppo-maml", "ppo-inner", "pretrain")
# the inner-step estimator of each algorithm when config.estimator is "auto": MAML-RL's score-function
# surrogate for Finn's methods, LVC for ProMP (the PPO-inner and pretrain steps carry no meta-gradient)
AUTO_ESTIMATOR = {"maml-vpg": "naive", "maml-trpo": "naive", "ppo-maml": "lvc", "ppo-inner": "naive", "pretrain": "naive"}

ADAM_ALGORITHMS = ("maml-vpg", "ppo-maml", "ppo-inner", "pretrain")  # the outer updates by Adam; maml-trpo steps by its trust region
PPO_ALGORITHMS = ("ppo-maml", "ppo-inner")  # the outer updates by clipped PPO epochs with a KL penalty
# the config fields that only some algorithms read; the CLI refuses one given explicitly to another algorithm, which
# would ignore it (a default value cannot be told from a choice, so RLTrainConfig.validate cannot do this itself)
FIELD_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "outer_lr": ADAM_ALGORITHMS,
    "max_kl": ("maml-trpo",),
    "ppo_epochs": PPO_ALGORITHMS,
    "clip": PPO_ALGORITHMS,
    "kl_coef": PPO_ALGORITHMS,
    "task_chunk": PPO_ALGORITHMS,
    "spread_bonus": ("ppo-maml",),
    "inner_epochs": ("ppo-inner",),
    "estimator": ("maml-vpg", "maml-trpo", "ppo-maml"),  # the PPO-inner and pretrain steps carry no meta-gradient
    "dice_lambda": ("maml-vpg", "maml-trpo", "ppo-maml"),
    "inner_lr": ("maml-vpg", "maml-trpo", "ppo-maml", "ppo-inner"),  # pretrain does not adapt
    "inner_lr_later": ("maml-vpg", "maml-trpo", "ppo-maml"),
    "gae_lambda": ("maml-vpg", "maml-trpo", "ppo-maml", "ppo-inner"),
}


def check_fields_apply(algo: str, given: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the first field of ``given`` (the values the user chose) that ``algo`` would ignore."""
    for name, value in given.items():
        users = FIELD_ALGORITHMS.get(name)
        if users is not None and algo not in users and not (name == "estimator" and value == "auto"):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} is read by {', '.join(users)} only; --algo {algo} would ignore it")


SamplerFactory = Callable[..., Any]  # (env, *, horizon, device, backend) -> an object with MetaSampler's API


@dataclass(frozen=True)
class EnvPreset:
    """A trainable meta-environment: its env id, config defaults and how to sample it."""

    name: str  # the CLI target, e.g. "navigation2d"
    env: str  # registered gymnasium id (or short name)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # RLTrainConfig fields that differ for this env
    make_sampler: SamplerFactory | None = None  # None: MetaSampler (batched twin when there is one)
    description: str = ""


ENV_PRESETS: dict[str, EnvPreset] = {}


def register_env_preset(preset: EnvPreset) -> None:
    """Make ``preset.name`` trainable and evaluable (``train <name>``, ``evaluate <name>``)."""
    unknown = set(preset.defaults) - {f.name for f in fields(RLTrainConfig)}
    if unknown:
        raise ValueError(f"defaults of preset {preset.name!r} name unknown config fields {sorted(unknown)}")
    ENV_PRESETS[preset.name] = preset


def env_preset(name: str) -> EnvPreset:
    """The preset called ``name``, else a default one for a registered meta-env id or short name."""
    if name in ENV_PRESETS:
        return ENV_PRESETS[name]
    try:
        env_id = resolve_env_id(name, argument="env")
    except ValueError as err:
        raise ValueError(f"{err}; presets: {', '.join(sorted(ENV_PRESETS))}") from None
    for preset in ENV_PRESETS.values():
        if resolve_env_id(preset.env) == env_id:
            return preset
    return EnvPreset(name=short_name(env_id), env=env_id)


@dataclass
class RLTrainConfig:
    """Hyperparameters of a meta-RL run (defaults: ProMP / Finn et al. on 2D navigation, sized for a laptop CPU)."""

    env: str = "navigation2d"  # preset name, short name or gymnasium id of the meta-environment
    algo: str = "ppo-maml"  # maml-vpg | maml-trpo | ppo-maml (ProMP) | ppo-inner | pretrain (multi-task baseline)
    iterations: int = 300  # number of meta-iterations (each samples a fresh meta-batch of tasks)
    meta_batch: int = 20  # T, tasks per meta-iteration
    rollouts: int = 20  # B, episodes per task for the inner step and again after it
    horizon: int | None = None  # H, steps per episode (None: the env's own, 100 for navigation)
    gamma: float = 0.99  # discount gamma of returns and advantages
    gae_lambda: float = 1.0  # lambda of GAE over the linear feature baseline (1.0: reward-to-go minus baseline)
    inner_lr: float = 0.1  # alpha, inner policy-gradient step size on the per-step-averaged surrogate
    inner_steps: int = 1  # K, inner steps during meta-training; steps 2..K each on fresh episodes of the adapted policy, as at evaluation
    inner_lr_later: float | None = None  # alpha of inner steps 2..K (None: inner_lr / 2, the paper's evaluation schedule 0.1 then 0.05)
    outer_every_step: bool = False  # ppo-maml with K > 1: the outer objective averages the clipped surrogate after every inner step 1..K, not only K (MAML++'s multi-step loss)
    estimator: str = "auto"  # inner-step meta-gradient estimator: naive | lvc | dice | loaded-dice | auto (per algo)
    dice_lambda: float | None = None  # loaded-dice only: discount of the earlier actions' scores in the inner step's Hessian (None: gae_lambda)
    outer_lr: float = 1e-3  # beta, Adam step size of maml-vpg, ppo-maml, ppo-inner and pretrain
    anneal_lr: bool = False  # decay beta linearly to 0 over `iterations`: beta_i = beta (1 - i / iterations), i = 0, 1, ... (CleanRL's anneal_lr)
    ppo_epochs: int = 5  # outer PPO epochs per sampled meta-batch (ppo-maml, ppo-inner)
    clip: float = 0.3  # epsilon, PPO likelihood-ratio clip range
    kl_coef: float = 5e-4  # eta, weight of KL(pi_theta_old || pi_theta) on the pre-update policy (ProMP); the start value if kl_target is set
    kl_target: float | None = None  # if set, eta is doubled after an update whose KL > 1.5 kl_target, halved if < kl_target / 1.5
    kl_stop: float | None = None  # if set, shrink the outer epoch that takes KL(pi_theta_old || pi_theta) above this back by
                                  # halves until within it (undo it after ten), and end the update (metrics: epochs_kept)
    post_kl_stop: float | None = None  # the same guard on the post-update KL of the adapted policies (MAML-TRPO bounds that KL); metrics: post_kl
    task_chunk: int | None = None  # compute the outer PPO objective this many tasks at a time, adding up the gradients: the same
                                   # update with smaller tensors, faster on a CPU for large meta-batches (ppo-maml, ppo-inner; None: all at once)
    spread_bonus: float = 0.0  # beta_s: ppo-maml's outer objective adds beta_s * (clipped surrogate of the pre-update episodes for
                               # a reward that pays them for spreading apart, rl.advantages.crowd_spread_advantages); 0: off
    inner_epochs: int = 3  # PPO epochs of the inner adaptation (ppo-inner)
    max_kl: float = 0.01  # delta, TRPO trust region on the mean KL of the post-update policy (maml-trpo)
    cg_iterations: int = 10  # conjugate-gradient iterations for the natural gradient (maml-trpo)
    cg_damping: float = 1e-5  # damping added to the Fisher-vector products (maml-trpo)
    max_backtracks: int = 15  # line-search tries, step shrunk by 0.8 each time (maml-trpo)
    hidden: tuple[int, ...] = (64, 64)  # policy MLP hidden widths
    activation: str = "tanh"  # policy MLP nonlinearity: tanh | relu
    init_log_std: float = 0.0  # initial log sigma of the Gaussian policy, in units of action_scale (continuous actions)
    action_scale: float = 1.0  # c: the Gaussian policy's mean is c * MLP(s) and sigma is c * exp(log_std)
    state_dependent_std: bool = False  # Gaussian log sigma(s) = log c + k phi + a linear head on the last hidden layer (False: state-independent)
    min_std: float | None = None  # floor on the Gaussian sigma in units of c (sigma >= c * min_std; None: no floor, as rllab's min_std)
    log_std_scale: float = 1.0  # k: log sigma = log c + k * phi for the parameter phi, so an inner step moves log sigma k^2 as far
    log_std_lr_scale: float = 1.0  # the outer Adam step size of phi is beta times this; 1 / k keeps log sigma's outer step at beta
    backend: str = "auto"  # sampler backend: auto | batched | loop | vector
    seed: int = 0  # fixes the initial policy, the tasks and every episode
    log_every: int = 1  # write a metrics line every this many iterations
    checkpoint_every: int = 25  # save checkpoint.pt every this many iterations
    best_window: int = 25  # also keep best.pt: the policy when the mean training return of the last this-many iterations was highest
    time_limit_s: float | None = None  # stop (after a checkpoint) once this session has run this many seconds
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    threads: int | None = None  # torch CPU threads (None: $METALEARN_EDU_THREADS, else 1); 2 lets one run use both cores

    def resolved_estimator(self) -> str:
        return AUTO_ESTIMATOR[self.algo] if self.estimator == "auto" else self.estimator

    def inner_spec(self) -> InnerSpec:
        return InnerSpec(lr=self.inner_lr, estimator=self.resolved_estimator(), gamma=self.gamma, gae_lambda=self.gae_lambda,
                         later_lr=self.inner_lr_later, dice_lambda=self.dice_lambda)

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field and the accepted values."""
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {', '.join(ALGORITHMS)}, got {self.algo!r}")
        if self.estimator not in ("auto", *ESTIMATORS):
            raise ValueError(f"estimator must be one of auto, {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        counts = ["iterations", "meta_batch", "rollouts", "inner_steps", "ppo_epochs", "inner_epochs", "cg_iterations",
                  "max_backtracks", "log_every", "checkpoint_every", "best_window"]
        for name in counts + [name for name in ("horizon", "threads", "task_chunk") if getattr(self, name) is not None]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("inner_lr", "outer_lr", "clip", "max_kl", "action_scale", "log_std_scale", "log_std_lr_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("inner_lr_later", "kl_target", "kl_stop", "post_kl_stop", "min_std"):  # optional positive numbers
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        if self.inner_steps > 1 and self.algo not in ("maml-vpg", "maml-trpo", "ppo-maml"):
            raise ValueError(f"inner_steps > 1 needs algo maml-vpg, maml-trpo or ppo-maml, not {self.algo!r}")
        for name in ("anneal_lr", "outer_every_step", "state_dependent_std"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.outer_every_step and self.algo != "ppo-maml":
            raise ValueError(f"outer_every_step scores every inner step in the outer objective of ppo-maml only, not algo={self.algo!r}")
        adam = ", ".join(ADAM_ALGORITHMS)
        if self.anneal_lr and self.algo not in ADAM_ALGORITHMS:
            raise ValueError(f"anneal_lr decays the Adam step size of {adam}; {self.algo} has none")
        if self.log_std_lr_scale != 1.0 and self.algo not in ADAM_ALGORITHMS:
            raise ValueError(f"log_std_lr_scale scales the Adam step size of log sigma in {adam}; {self.algo} has none (leave it at 1)")
        ppo = " and ".join(PPO_ALGORITHMS)
        for name in ("kl_stop", "post_kl_stop"):
            if getattr(self, name) is not None and self.algo not in PPO_ALGORITHMS:
                raise ValueError(f"{name} ends the outer epochs of {ppo} only, not algo={self.algo!r}")
        if self.kl_target is not None and self.algo not in PPO_ALGORITHMS:
            raise ValueError(f"kl_target adapts the KL penalty of {ppo} only, not algo={self.algo!r}")
        if self.min_std is not None and self.min_std > math.exp(self.init_log_std):
            raise ValueError(f"min_std ({self.min_std}) must be at most the initial sigma exp(init_log_std) = {math.exp(self.init_log_std):.4g}, "
                             "or sigma would start pinned at the floor with no gradient")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be a positive number of seconds or None, got {self.time_limit_s!r}")
        if isinstance(self.spread_bonus, bool) or not isinstance(self.spread_bonus, (int, float)) or not 0 <= self.spread_bonus < math.inf:
            raise ValueError(f"spread_bonus must be a non-negative number, got {self.spread_bonus!r}")
        if self.spread_bonus and self.algo != "ppo-maml":
            raise ValueError(f"spread_bonus adds to the outer objective of ppo-maml only, not algo={self.algo!r}")
        for name in ("kl_coef", "cg_damping"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.dice_lambda is not None:
            if isinstance(self.dice_lambda, bool) or not isinstance(self.dice_lambda, (int, float)) or not 0.0 <= self.dice_lambda <= 1.0:
                raise ValueError(f"dice_lambda must be in [0, 1] or None, got {self.dice_lambda!r}")
            if self.resolved_estimator() != "loaded-dice":
                raise ValueError(f"dice_lambda is read by the loaded-dice estimator only, not {self.resolved_estimator()!r}")
        env_preset(self.env)  # a clear error for an unknown env

    @classmethod
    def for_env(cls, env: str, **overrides: Any) -> "RLTrainConfig":
        """The config of ``env``: dataclass defaults, then the preset's defaults, then ``overrides`` (None = keep)."""
        preset = env_preset(env)
        values = {**preset.defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return cls.from_dict({"env": env, **values})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RLTrainConfig":
        return config_from_dict(cls, data)


# navigation: the policy acts in units of the action bound 0.1 (rllab's normalize, as in Finn et al.), starting
# at sigma = 0.1. With c = 1 the paper's inner step size 0.1 moves actions ~100x further, the meta-learner has to
# squash the network to compensate, and sigma never drops below ~0.09 (docs/RESULTS.md, 2D navigation).
register_env_preset(EnvPreset("navigation2d", "metalearn_edu/Navigation2D-v0", {"action_scale": 0.1, "init_log_std": 0.0}, description=(
    "2D point navigation to an unobserved goal U[-0.5,0.5]^2, horizon 100 (Finn et al. 2017)")))
for _arms in (5, 10):
    register_env_preset(EnvPreset(f"bandit{_arms}", f"metalearn_edu/Bandit{_arms}-v0", {"iterations": 1000},
                                  description=f"{_arms}-armed Bernoulli bandits, arm probabilities U[0,1], 10 pulls per episode"))

__all__ = ["ADAM_ALGORITHMS", "ALGORITHMS", "PPO_ALGORITHMS", "AUTO_ESTIMATOR", "ENV_PRESETS", "FIELD_ALGORITHMS", "EnvPreset", "RLTrainConfig", "SamplerFactory", "check_fields_apply",
           "env_preset", "register_env_preset"]
