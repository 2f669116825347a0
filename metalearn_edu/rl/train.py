"""Meta-RL training: sample tasks -> pre-update episodes -> inner step -> post-update episodes -> outer update.

One config dataclass, one seed, a progress bar, one metrics line per iteration, periodic checkpoints that a
rerun of the same command resumes from (to the same parameters as an uninterrupted run: every random draw
of iteration k is seeded from (seed, k)), and a guard that stops on a NaN/inf objective or parameter.

Files written to the run folder:
    config.json      the RLTrainConfig as JSON
    metrics.jsonl    per iteration: pre_return and post_return (mean undiscounted return of the episodes
                     sampled before / after the inner step), kl (mean KL(pi_old || pi_new) of the
                     pre-update policy over the pre-update states), the update's own statistics,
                     iteration_s and elapsed_s
    checkpoint.pt    policy, optimizer, iteration, config and the policy's architecture;
                     ``torch.load(..., weights_only=True)`` works

Environments are parameters: ``config.env`` names an :class:`EnvPreset` (defaults for the config and a
sampler factory) or any registered meta-environment; ``register_env_preset`` adds one (for example a
MuJoCo task with its own fast sampler) without touching this loop.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_edu.envs import resolve_env_id, short_name
from metalearn_edu.rl.inner import ESTIMATORS
from metalearn_edu.rl.maml_rl import InnerSpec, MetaBatch, maml_trpo_step, maml_vpg_step, pretrain_step
from metalearn_edu.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, MLPPolicy, policy_for_spaces
from metalearn_edu.rl.ppo_maml import adapt_kl_coef, ppo_adapt, ppo_inner_step, promp_step
from metalearn_edu.rl.sampler import BACKENDS, MetaSampler
from metalearn_edu.runtime import config_from_dict, resolve_device, seed_everything
from metalearn_edu.train import DivergenceError, _atomic_save, read_metrics

ALGORITHMS = ("maml-vpg", "maml-trpo", "ppo-maml", "ppo-inner", "pretrain")
# the inner-step estimator of each algorithm when config.estimator is "auto": MAML-RL's score-function
# surrogate for Finn's methods, LVC for ProMP (the PPO-inner and pretrain steps carry no meta-gradient)
AUTO_ESTIMATOR = {"maml-vpg": "naive", "maml-trpo": "naive", "ppo-maml": "lvc", "ppo-inner": "naive", "pretrain": "naive"}

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
    estimator: str = "auto"  # inner-step meta-gradient estimator: naive | lvc | dice | auto (per algo)
    outer_lr: float = 1e-3  # beta, Adam step size of maml-vpg, ppo-maml, ppo-inner and pretrain
    anneal_lr: bool = False  # decay beta linearly to 0 over `iterations`: beta_i = beta (1 - i / iterations), i = 0, 1, ... (CleanRL's anneal_lr)
    ppo_epochs: int = 5  # outer PPO epochs per sampled meta-batch (ppo-maml, ppo-inner)
    clip: float = 0.3  # epsilon, PPO likelihood-ratio clip range
    kl_coef: float = 5e-4  # eta, weight of KL(pi_theta_old || pi_theta) on the pre-update policy (ProMP); the start value if kl_target is set
    kl_target: float | None = None  # if set, eta is doubled after an update whose KL > 1.5 kl_target, halved if < kl_target / 1.5
    kl_stop: float | None = None  # if set, shrink the outer epoch that takes KL(pi_theta_old || pi_theta) above this back by
                                  # halves until within it (undo it after ten), and end the update (metrics: epochs_kept)
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
    log_std_scale: float = 1.0  # k: log sigma = log c + k * phi for the parameter phi, so an inner step moves log sigma k^2 as far
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
                         later_lr=self.inner_lr_later)

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
        for name in counts + [name for name in ("horizon", "threads") if getattr(self, name) is not None]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("inner_lr", "outer_lr", "clip", "max_kl", "action_scale", "log_std_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("inner_lr_later", "kl_target", "kl_stop"):  # optional positive numbers
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
        if self.anneal_lr and self.algo == "maml-trpo":
            raise ValueError("anneal_lr decays the Adam step size of maml-vpg, ppo-maml, ppo-inner and pretrain; maml-trpo has none")
        if self.kl_stop is not None and self.algo not in ("ppo-maml", "ppo-inner"):
            raise ValueError(f"kl_stop ends the outer epochs of ppo-maml and ppo-inner only, not algo={self.algo!r}")
        if self.kl_target is not None and self.algo not in ("ppo-maml", "ppo-inner"):
            raise ValueError(f"kl_target adapts the KL penalty of ppo-maml and ppo-inner only, not algo={self.algo!r}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be a positive number of seconds or None, got {self.time_limit_s!r}")
        for name in ("kl_coef", "cg_damping"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
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


def make_sampler(config: RLTrainConfig, device: torch.device | str = "cpu") -> Any:
    """The sampler of ``config.env`` (the preset's factory, else :class:`MetaSampler`); raises a ValueError
    naming ``env`` when the environment has no ``sample_tasks``/``set_task``."""
    preset = env_preset(config.env)
    factory = preset.make_sampler or MetaSampler
    return factory(preset.env, horizon=config.horizon, device=device, backend=config.backend)


def build_policy(config: RLTrainConfig, observation_space: Any, action_space: Any) -> MLPPolicy:
    extra = ({"init_log_std": config.init_log_std, "action_scale": config.action_scale, "log_std_scale": config.log_std_scale,
              "state_dependent_std": config.state_dependent_std} if not hasattr(action_space, "n") else {})
    return policy_for_spaces(observation_space, action_space, config.hidden, config.activation, **extra)


def policy_spec(policy: MLPPolicy) -> dict[str, Any]:
    """What rebuilds ``policy`` without its environment (stored in checkpoints)."""
    if isinstance(policy, GaussianMLPPolicy):
        return {"kind": "gaussian", "obs_dim": policy.obs_dim, "out_dim": policy.act_dim, "hidden": list(policy.hidden),
                "activation": policy.activation, "action_scale": policy.action_scale, "log_std_scale": policy.log_std_scale,
                "state_dependent_std": policy.state_dependent_std}
    if isinstance(policy, CategoricalMLPPolicy):
        return {"kind": "categorical", "obs_dim": policy.obs_dim, "out_dim": policy.n_actions, "hidden": list(policy.hidden), "activation": policy.activation}
    raise TypeError(f"policy must be a GaussianMLPPolicy or CategoricalMLPPolicy, got {type(policy).__name__}")


def policy_from_spec(spec: Mapping[str, Any]) -> MLPPolicy:
    if spec["kind"] == "gaussian":  # checkpoints written before action_scale / log_std_scale existed have c = k = 1
        return GaussianMLPPolicy(int(spec["obs_dim"]), int(spec["out_dim"]), tuple(spec["hidden"]), spec["activation"],
                                 action_scale=float(spec.get("action_scale", 1.0)), log_std_scale=float(spec.get("log_std_scale", 1.0)),
                                 state_dependent_std=bool(spec.get("state_dependent_std", False)))
    return CategoricalMLPPolicy(int(spec["obs_dim"]), int(spec["out_dim"]), tuple(spec["hidden"]), spec["activation"])


def load_rl_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[MLPPolicy, RLTrainConfig, dict]:
    """Rebuild the policy of a meta-RL run from its ``checkpoint.pt`` (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass --checkpoint RUN_DIR/checkpoint.pt)")
    state = torch.load(path, map_location=device, weights_only=True)
    if not {"policy", "policy_spec", "config"} <= set(state):
        raise ValueError(f"{path} is not a metalearn-edu meta-RL checkpoint (keys: {sorted(state)})")
    policy = policy_from_spec(state["policy_spec"]).to(device)
    policy.load_state_dict(state["policy"])
    return policy, RLTrainConfig.from_dict(state["config"]), state


def iteration_seed(seed: int, iteration: int, phase: int) -> int:
    """A non-negative int seed for draw ``phase`` of meta-iteration ``iteration`` (independent streams)."""
    return int(np.random.SeedSequence([seed, iteration, phase]).generate_state(1)[0])


@dataclass
class RLTrainResult:
    policy: MLPPolicy
    config: RLTrainConfig
    iterations_done: int
    seconds: float  # wall time of this session (not counting earlier sessions of a resumed run)
    last: dict[str, float]  # the last metrics line
    out_dir: Path | None


class _NonFinite(Exception):
    """Raised inside a meta-iteration when a quantity stops being finite; train_rl turns it into DivergenceError."""


def _require_finite(what: str, tensors: Any) -> None:
    values = tensors.values() if isinstance(tensors, Mapping) else [tensors]
    if not all(bool(torch.isfinite(t).all()) for t in values):
        raise _NonFinite(f"{what} became NaN/inf")


def meta_iteration(
    iteration: int, policy: MLPPolicy, optimizer: torch.optim.Optimizer | None, sampler: Any, config: RLTrainConfig,
    kl_coef: float | None = None,
) -> dict[str, float]:
    """Sample a meta-batch for ``iteration`` and apply one outer update of ``config.algo``; returns its statistics.

    ``kl_coef``: the KL penalty eta of this update (ppo-maml, ppo-inner); None = ``config.kl_coef``.
    """
    kl_coef = config.kl_coef if kl_coef is None else kl_coef
    inner = config.inner_spec()
    tasks = sampler.sample_tasks(config.meta_batch, rng=np.random.default_rng([config.seed, iteration]))
    pre = sampler.sample(policy, tasks, config.rollouts, seed=iteration_seed(config.seed, iteration, 0))
    _require_finite("the pre-update rewards", pre.rewards)
    record = {"pre_return": float(pre.episode_returns().mean())}
    with torch.no_grad():
        old_raw = tuple(r.detach() for r in policy.raw_outputs(None, pre.observations))
    if config.algo == "pretrain":
        stats = pretrain_step(policy, optimizer, MetaBatch(pre), config.gamma)
    else:
        params = policy.parameters_dict()
        if config.algo == "ppo-inner":
            adapted = ppo_adapt(policy, params, pre, inner, epochs=config.inner_epochs, clip=config.clip)
        else:
            adapted = inner.adapt_detached(policy, params, pre)
        mids = []  # with K > 1 inner steps: the episodes after steps 1..K-1, each feeding the next step
        for step in range(1, config.inner_steps):
            _require_finite(f"the parameters after inner step {step}", adapted)
            mids.append(sampler.sample(policy, tasks, config.rollouts, params=adapted, seed=iteration_seed(config.seed, iteration, 1 + step)))
            record[f"return_after_{step}"] = float(mids[-1].episode_returns().mean())
            adapted = inner.adapt_detached(policy, adapted, mids[-1], lr=inner.later_step_size, per_task_params=True)
        _require_finite("the adapted (post-update) parameters", adapted)
        post = sampler.sample(policy, tasks, config.rollouts, params=adapted, seed=iteration_seed(config.seed, iteration, 1))
        record["post_return"] = float(post.episode_returns().mean())
        meta = MetaBatch.build(pre, post, policy, gamma=config.gamma, gae_lambda=config.gae_lambda, mids=tuple(mids),
                               score_mids=config.outer_every_step)
        if config.algo == "maml-vpg":
            stats = maml_vpg_step(policy, optimizer, meta, inner)
        elif config.algo == "maml-trpo":
            stats = maml_trpo_step(policy, meta, inner, max_kl=config.max_kl, cg_iterations=config.cg_iterations,
                                   cg_damping=config.cg_damping, max_backtracks=config.max_backtracks)
        elif config.algo == "ppo-maml":
            stats = promp_step(policy, optimizer, meta, inner, epochs=config.ppo_epochs, clip=config.clip, kl_coef=kl_coef,
                               kl_stop=config.kl_stop, every_step=config.outer_every_step)
        else:
            stats = ppo_inner_step(policy, optimizer, meta, adapted, epochs=config.ppo_epochs, clip=config.clip, kl_coef=kl_coef,
                                   kl_stop=config.kl_stop)
    with torch.no_grad():
        new_raw = policy.raw_outputs(None, pre.observations)
        kl = torch.distributions.kl_divergence(policy.make_distribution(old_raw, False), policy.make_distribution(new_raw, False))
        record["kl"] = float((kl * pre.mask).sum() / pre.mask.sum())
    return record | stats


def _divergence(what: str, iteration: int, config: RLTrainConfig, out: Path | None) -> DivergenceError:
    return DivergenceError(
        f"{what} at iteration {iteration}: training diverged. Try a smaller step size "
        f"(outer_lr={config.outer_lr}, inner_lr={config.inner_lr}, max_kl={config.max_kl})"
        + ("; the last good checkpoint is kept." if out is not None else ".")
    )


def _check_finite(record: dict[str, float], policy: nn.Module, iteration: int, config: RLTrainConfig, out: Path | None) -> None:
    bad = [k for k, v in record.items() if not math.isfinite(v)]
    if bad or not all(torch.isfinite(p).all() for p in policy.parameters()):
        what = f"{bad[0]} became {record[bad[0]]}" if bad else "a policy parameter became NaN/inf"
        raise _divergence(what, iteration, config, out)


def train_rl(
    config: RLTrainConfig, out_dir: str | Path | None = None, *, resume: bool = True, progress: bool = True, sampler: Any = None
) -> RLTrainResult:
    """Meta-train a policy with ``config.algo`` on ``config.env``; resume from ``out_dir/checkpoint.pt`` if present."""
    config.validate()
    device = resolve_device(config.device, threads=config.threads)
    seed_everything(config.seed)
    sampler = sampler if sampler is not None else make_sampler(config, device)
    policy = build_policy(config, sampler.observation_space, sampler.action_space).to(device)
    optimizer = None if config.algo == "maml-trpo" else torch.optim.Adam(policy.parameters(), lr=config.outer_lr)
    start, out = 0, Path(out_dir) if out_dir is not None else None
    kl_coef = config.kl_coef  # eta of the next update; changes only with config.kl_target
    recent: list[float] = []  # the training returns of the last best_window iterations (post-update, else pre-update)
    best_score = -math.inf  # the highest mean of ``recent`` over a full window so far, the score of best.pt
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ckpt = out / "checkpoint.pt"
        if resume and ckpt.exists():
            _, saved, state = load_rl_checkpoint(ckpt, device)
            ignore = {"iterations": 0, "checkpoint_every": 0, "time_limit_s": 0, "threads": 0}
            if config.anneal_lr and saved.iterations != config.iterations:  # the schedule is fixed by the iteration count
                raise ValueError(f"{out} holds an --anneal-lr run over iterations={saved.iterations}; resume it with the same "
                                 f"iterations (got {config.iterations}) or pass a new --out")
            if asdict(saved) | ignore != asdict(config) | ignore:
                raise ValueError(f"{out} holds a run with a different config; pass a new --out or the same options "
                                 f"(saved: {json.dumps(asdict(saved))})")
            policy.load_state_dict(state["policy"])
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
            start = int(state["iteration"])
            kl_coef = float(state.get("kl_coef", config.kl_coef))
            recent, best_score = [float(v) for v in state.get("recent_returns", [])], float(state.get("best_score", -math.inf))
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        metrics = out / "metrics.jsonl"
        kept = [ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln)["iteration"] <= start] if start and metrics.exists() else []
        metrics.write_text("".join(ln + "\n" for ln in kept))

    def snapshot(iteration: int, name: str, **extra: Any) -> None:  # what load_rl_checkpoint needs, plus ``extra``
        if out is not None:
            _atomic_save({"policy": policy.state_dict(), "iteration": iteration, "config": asdict(config),
                          "policy_spec": policy_spec(policy), "best_score": best_score, **extra}, out / name)

    def save(iteration: int) -> None:  # everything a resumed run needs
        snapshot(iteration, "checkpoint.pt", optimizer=optimizer.state_dict() if optimizer else {}, kl_coef=kl_coef,
                 recent_returns=list(recent))

    def save_best(iteration: int) -> None:  # what evaluation needs, without the optimizer
        snapshot(iteration, "best.pt", best_window=config.best_window)

    from tqdm.auto import tqdm

    t0, record = time.perf_counter(), {}
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc=f"{config.algo} on {config.env}",
               disable=not progress, mininterval=1.0)
    for it in bar:
        t_it = time.perf_counter()
        done = it + 1
        annealed = config.outer_lr * (1.0 - it / config.iterations) if config.anneal_lr and optimizer is not None else None
        if annealed is not None:
            for group in optimizer.param_groups:
                group["lr"] = annealed
        try:
            record = meta_iteration(it, policy, optimizer, sampler, config, kl_coef)
        except _NonFinite as err:
            raise _divergence(str(err), done, config, out) from None
        _check_finite(record, policy, done, config, out)
        if annealed is not None:
            record["outer_lr"] = annealed  # the beta this update used
        if config.kl_target is not None:
            record["kl_coef"] = kl_coef  # the eta this update used
            kl_coef = adapt_kl_coef(kl_coef, record["kl"], config.kl_target)
        recent = (recent + [record.get("post_return", record["pre_return"])])[-config.best_window:]
        if len(recent) == config.best_window and sum(recent) / len(recent) > best_score:
            best_score = sum(recent) / len(recent)
            save_best(done)
        record = {"iteration": done, **record, "iteration_s": round(time.perf_counter() - t_it, 4), "elapsed_s": round(time.perf_counter() - t0, 3)}
        bar.set_postfix({k: f"{record[k]:.2f}" for k in ("pre_return", "post_return") if k in record})
        if out is not None and (done % config.log_every == 0 or done == config.iterations):
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        out_of_time = config.time_limit_s is not None and time.perf_counter() - t0 >= config.time_limit_s
        if done % config.checkpoint_every == 0 or done == config.iterations or out_of_time:
            save(done)
        if out_of_time:
            break
    bar.close()
    return RLTrainResult(policy, config, record.get("iteration", start), time.perf_counter() - t0, record, out)


# navigation: the policy acts in units of the action bound 0.1 (rllab's normalize, as in Finn et al.), starting
# at sigma = 0.1. With c = 1 the paper's inner step size 0.1 moves actions ~100x further, the meta-learner has to
# squash the network to compensate, and sigma never drops below ~0.09 (docs/RESULTS.md, 2D navigation).
register_env_preset(EnvPreset("navigation2d", "metalearn_edu/Navigation2D-v0", {"action_scale": 0.1, "init_log_std": 0.0}, description=(
    "2D point navigation to an unobserved goal U[-0.5,0.5]^2, horizon 100 (Finn et al. 2017)")))
for _arms in (5, 10):
    register_env_preset(EnvPreset(f"bandit{_arms}", f"metalearn_edu/Bandit{_arms}-v0", {"iterations": 1000},
                                  description=f"{_arms}-armed Bernoulli bandits, arm probabilities U[0,1], 10 pulls per episode"))

__all__ = [
    "ALGORITHMS", "ENV_PRESETS", "EnvPreset", "RLTrainConfig", "RLTrainResult", "build_policy", "env_preset",
    "iteration_seed", "load_rl_checkpoint", "make_sampler", "meta_iteration", "policy_from_spec", "policy_spec",
    "read_metrics", "register_env_preset", "train_rl",
]
