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
MuJoCo task with its own fast sampler) without touching this loop. The config, its validation and the
presets live in :mod:`metalearn_edu.rl.config`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_edu.rl.config import (  # the config and presets are re-exported: part of the training API
    ADAM_ALGORITHMS, ALGORITHMS, ENV_PRESETS, EnvPreset, RLTrainConfig, env_preset, register_env_preset,
)
from metalearn_edu.rl.maml_rl import MetaBatch, maml_trpo_step, maml_vpg_step, pretrain_step
from metalearn_edu.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, MLPPolicy, policy_for_spaces
from metalearn_edu.rl.ppo_maml import adapt_kl_coef, ppo_adapt, ppo_inner_step, promp_step
from metalearn_edu.rl.sampler import MetaSampler
from metalearn_edu.runtime import resolve_device, seed_everything
from metalearn_edu.train import DivergenceError, _atomic_save, read_metrics


def make_sampler(config: RLTrainConfig, device: torch.device | str = "cpu") -> Any:
    """The sampler of ``config.env`` (the preset's factory, else :class:`MetaSampler`); raises a ValueError
    naming ``env`` when the environment has no ``sample_tasks``/``set_task``."""
    preset = env_preset(config.env)
    factory = preset.make_sampler or MetaSampler
    return factory(preset.env, horizon=config.horizon, device=device, backend=config.backend)


# the config fields that are keyword arguments of GaussianMLPPolicy (continuous actions only)
GAUSSIAN_POLICY_FIELDS = ("init_log_std", "action_scale", "log_std_scale", "state_dependent_std", "min_std")


def build_policy(config: RLTrainConfig, observation_space: Any, action_space: Any) -> MLPPolicy:
    """The policy of ``config`` for these spaces; a ValueError names a Gaussian-only field set away from its default
    for an env with discrete actions, whose categorical policy would ignore it."""
    if not hasattr(action_space, "n"):
        extra = {name: getattr(config, name) for name in GAUSSIAN_POLICY_FIELDS}
        return policy_for_spaces(observation_space, action_space, config.hidden, config.activation, **extra)
    defaults = RLTrainConfig()
    for name in (*GAUSSIAN_POLICY_FIELDS, "log_std_lr_scale"):  # and the outer step size of the Gaussian log sigma
        if getattr(config, name) != getattr(defaults, name):
            raise ValueError(f"{name} sets the Gaussian policy of continuous actions; {config.env} has {action_space.n} discrete "
                             f"actions (a categorical policy), which would ignore {name}={getattr(config, name)!r}")
    return policy_for_spaces(observation_space, action_space, config.hidden, config.activation)


def policy_spec(policy: MLPPolicy) -> dict[str, Any]:
    """What rebuilds ``policy`` without its environment (stored in checkpoints)."""
    if isinstance(policy, GaussianMLPPolicy):
        return {"kind": "gaussian", "obs_dim": policy.obs_dim, "out_dim": policy.act_dim, "hidden": list(policy.hidden),
                "activation": policy.activation, "action_scale": policy.action_scale, "log_std_scale": policy.log_std_scale,
                "state_dependent_std": policy.state_dependent_std, "min_std": policy.min_std}
    if isinstance(policy, CategoricalMLPPolicy):
        return {"kind": "categorical", "obs_dim": policy.obs_dim, "out_dim": policy.n_actions, "hidden": list(policy.hidden), "activation": policy.activation}
    raise TypeError(f"policy must be a GaussianMLPPolicy or CategoricalMLPPolicy, got {type(policy).__name__}")


def policy_from_spec(spec: Mapping[str, Any]) -> MLPPolicy:
    if spec["kind"] == "gaussian":  # checkpoints written before action_scale / log_std_scale existed have c = k = 1
        return GaussianMLPPolicy(int(spec["obs_dim"]), int(spec["out_dim"]), tuple(spec["hidden"]), spec["activation"],
                                 action_scale=float(spec.get("action_scale", 1.0)), log_std_scale=float(spec.get("log_std_scale", 1.0)),
                                 state_dependent_std=bool(spec.get("state_dependent_std", False)), min_std=spec.get("min_std"))
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
    last: dict[str, float]  # the last metrics line (of an earlier session if this one trained nothing)
    out_dir: Path | None
    iterations_this_session: int = 0  # 0 when out_dir already held every iteration


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
                               kl_stop=config.kl_stop, every_step=config.outer_every_step, post_kl_stop=config.post_kl_stop,
                               task_chunk=config.task_chunk, spread_bonus=config.spread_bonus)
        else:
            stats = ppo_inner_step(policy, optimizer, meta, adapted, epochs=config.ppo_epochs, clip=config.clip, kl_coef=kl_coef,
                                   kl_stop=config.kl_stop, post_kl_stop=config.post_kl_stop, task_chunk=config.task_chunk)
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


def outer_optimizer(policy: nn.Module, config: RLTrainConfig) -> torch.optim.Adam:
    """Adam with step size beta = ``config.outer_lr``; with ``log_std_lr_scale`` s != 1 the log sigma parameter phi
    gets its own group with step size s * beta (its ``lr_scale`` s, which ``--anneal-lr`` keeps)."""
    scale = config.log_std_lr_scale
    if scale == 1.0:
        return torch.optim.Adam(policy.parameters(), lr=config.outer_lr)
    named = dict(policy.named_parameters())
    if "log_std" not in named:
        raise ValueError(f"log_std_lr_scale={scale} needs a Gaussian policy with a log_std parameter")
    rest = [p for name, p in named.items() if name != "log_std"]
    return torch.optim.Adam([{"params": rest, "lr_scale": 1.0},
                             {"params": [named["log_std"]], "lr": scale * config.outer_lr, "lr_scale": scale}], lr=config.outer_lr)


def train_rl(
    config: RLTrainConfig, out_dir: str | Path | None = None, *, resume: bool = True, progress: bool = True, sampler: Any = None
) -> RLTrainResult:
    """Meta-train a policy with ``config.algo`` on ``config.env``; resume from ``out_dir/checkpoint.pt`` if present."""
    config.validate()
    device = resolve_device(config.device, threads=config.threads)
    seed_everything(config.seed)
    sampler = sampler if sampler is not None else make_sampler(config, device)
    policy = build_policy(config, sampler.observation_space, sampler.action_space).to(device)
    optimizer = outer_optimizer(policy, config) if config.algo in ADAM_ALGORITHMS else None
    start, out = 0, Path(out_dir) if out_dir is not None else None
    kept: list[str] = []  # the metrics lines of the sessions before this one
    kl_coef = config.kl_coef  # eta of the next update; changes only with config.kl_target
    recent: list[float] = []  # the training returns of the last best_window iterations (post-update, else pre-update)
    best_score = -math.inf  # the highest mean of ``recent`` over a full window so far, the score of best.pt
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ckpt = out / "checkpoint.pt"
        if resume and ckpt.exists():
            _, saved, state = load_rl_checkpoint(ckpt, device)
            ignore = {"iterations": 0, "checkpoint_every": 0, "time_limit_s": 0, "threads": 0, "task_chunk": 0}  # same update
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

    t0, record = time.perf_counter(), json.loads(kept[-1]) if kept else {}
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc=f"{config.algo} on {config.env}",
               disable=not progress, mininterval=1.0)
    for it in bar:
        t_it = time.perf_counter()
        done = it + 1
        annealed = config.outer_lr * (1.0 - it / config.iterations) if config.anneal_lr and optimizer is not None else None
        if annealed is not None:
            for group in optimizer.param_groups:
                group["lr"] = annealed * group.get("lr_scale", 1.0)
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
    done_now = record.get("iteration", start) - start
    return RLTrainResult(policy, config, record.get("iteration", start), time.perf_counter() - t0, record, out, done_now)


__all__ = [
    "ALGORITHMS", "ENV_PRESETS", "EnvPreset", "RLTrainConfig", "RLTrainResult", "build_policy", "env_preset",
    "iteration_seed", "load_rl_checkpoint", "make_sampler", "meta_iteration", "policy_from_spec", "policy_spec",
    "read_metrics", "register_env_preset", "train_rl",
]
