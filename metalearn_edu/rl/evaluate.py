"""Evaluation harness for meta-RL: return after 0..K adaptation steps on a fixed, seeded set of test tasks.

The protocol of Finn et al. 2017 (section 5.3, and their result files): for each of N test tasks,

    theta_0 = theta (the meta-trained parameters, never re-initialised per task)
    for k = 0..K:  sample B episodes with pi_theta_k on the task; record their mean return R_k;
                   theta_{k+1} = theta_k + alpha_k grad L(theta_k)      (vanilla policy gradient,
                   standardised advantages over the linear feature baseline, per-step average)
    alpha_0 = 0.1, alpha_k = 0.05 for k >= 1; N = 40, B = 20, K = 3, horizon 100 for 2D navigation and
    200 for the locomotion tasks (:func:`paper_protocol`).

Every method (meta-trained, pretrained, random initialisation) is adapted the same way. A curve is the
mean over test tasks of R_k; with several training seeds, the mean over seeds of that per-seed mean, with a
Student-t 95% confidence interval over seeds (over tasks when there is one seed).

One reading is noisy: the B episodes of each step, and so the steps taken from them, are random. With
``Protocol.repeats`` R > 1 the protocol is read R times on the same test tasks (evaluation seeds seed..seed+R-1)
and each checkpoint's returns are averaged over the readings before anything else (:func:`protocol_readings`).

Oracles (:data:`ORACLES`) are exact: for navigation, the best any policy can do knowing the goal (see
:func:`navigation_oracle_returns`); for bandits, pulling the best arm every time, H max_k p_k. The MuJoCo
tasks have no exact oracle; Finn et al.'s (a policy trained on each test task) is quoted as a reference
(:func:`finn_reference`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metalearn_edu.envs import resolve_env_id, short_name
from metalearn_edu.envs.navigation import MAX_STEP, SUCCESS_TOLERANCE, goal_from_task
from metalearn_edu.rl.batch import EpisodeBatch, concat_episodes
from metalearn_edu.rl.maml_rl import InnerSpec
from metalearn_edu.rl.train import RLTrainConfig, iteration_seed, load_rl_checkpoint, make_sampler

# Finn et al. 2017, 2D navigation, mean return after 0..3 steps (their result files), and their oracle
FINN_NAVIGATION = {"maml": [-40.41, -11.68, -3.33, -3.23], "oracle": -2.29}
# Finn et al. 2017, locomotion (section 5.3): mean return after 0..3 steps of MAML and of the pretrained
# (multi-task) policy, and their oracle (a policy trained on each test task), by env short name
FINN_LOCOMOTION: dict[str, dict[str, Any]] = {
    "halfcheetahvel": {"maml": [-129.5, -78.6, -66.6, -60.8], "pretrained": [-158.0, -135.4, -128.5, -133.6], "oracle": -54.5},
    "halfcheetahdir": {"maml": [-50.7, 293.2, 313.5, 315.7], "pretrained": [-43.0, -24.8, -12.9, 19.6], "oracle": 442.7},
    "antvel": {"maml": [30.6, 96.7, 100.1, 101.4], "pretrained": [-1.8, 6.1, 8.5, 9.5], "oracle": 107.9},
    "antdir": {"maml": [8.7, 499.2, 500.7, 499.1], "pretrained": [3.2, 1.3, 6.5, 6.9], "oracle": 524.8},
}
PAPER_HORIZONS = {"navigation2d": 100, **{name: 200 for name in FINN_LOCOMOTION}}  # H of Finn et al.'s protocol
TEST_TASK_STREAM = 7357  # mixed into the test-task seed so test tasks never coincide with training tasks
EXTRA_EPISODES_PHASE = 100  # seed streams 101, 102, ... of the episodes past the first B (with batch_steps)

# two-sided 95% Student-t critical values t_{0.975, df}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_critical(df: int) -> float:
    """t_{0.975, df} (the nearest tabulated df at or below ``df``; 1.96 beyond 120)."""
    if df < 1:
        return float("nan")
    if df > 120:
        return 1.96
    return _T975[max(k for k in _T975 if k <= df)]


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the Student-t 95% CI of the mean); the half-width is 0.0 for one value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(t_critical(x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


@dataclass(frozen=True)
class Protocol:
    """What a curve is measured with (defaults: Finn et al.'s RL protocol)."""

    steps: int = 3  # K, adaptation steps (returns are reported after 0..K)
    test_tasks: int = 40  # N, test tasks, drawn once from task_seed
    rollouts: int = 20  # B, episodes per task per step
    step_sizes: tuple[float, ...] = (0.1, 0.05)  # alpha_k: the first step, then every later one
    gamma: float = 0.99  # discount of the advantages of the adaptation steps
    gae_lambda: float = 1.0  # GAE lambda of those advantages over the linear baseline (1: reward-to-go minus baseline)
    horizon: int | None = None  # H (None: the env's own, 100 for navigation)
    task_seed: int = 0  # fixes the test tasks (the same for every checkpoint evaluated)
    seed: int = 0  # fixes the evaluation episodes
    batch_steps: int | None = None  # if set: whole episodes per task until their lengths sum to this (rllab's batch_size), B at a time
    repeats: int = 1  # R, readings averaged: the protocol run R times on the same test tasks, evaluation seeds seed..seed+R-1

    def __post_init__(self) -> None:
        for name in ("test_tasks", "rollouts", "repeats") + (("batch_steps",) if self.batch_steps is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        if not self.step_sizes or any(not a > 0 for a in self.step_sizes):
            raise ValueError(f"step_sizes must be positive numbers, got {self.step_sizes!r}")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")

    def step_size(self, k: int) -> float:
        return self.step_sizes[min(k, len(self.step_sizes) - 1)]


def _short(env: str) -> str:
    """The short name of ``env`` (a CLI target, short name or gymnasium id), or ``env`` itself if unregistered."""
    try:
        return short_name(resolve_env_id(env))
    except ValueError:
        return env


def paper_protocol(env: str, *, task_seed: int = 0, seed: int = 0) -> Protocol:
    """Finn et al. 2017's protocol for ``env``: N = 40, B = 20, K = 3, step sizes 0.1 then 0.05, and
    H = 100 for navigation2d, 200 for the locomotion families (the env's own horizon for any other env)."""
    return Protocol(steps=3, test_tasks=40, rollouts=20, step_sizes=(0.1, 0.05), horizon=PAPER_HORIZONS.get(_short(env)),
                    task_seed=task_seed, seed=seed)


def finn_reference(env: str) -> dict[str, Any] | None:
    """Finn et al. 2017's numbers for ``env`` (``finn2017_maml`` and, where reported, ``finn2017_pretrained``:
    returns after 0..3 steps; ``finn2017_oracle``), or None when the paper has no such experiment."""
    name = _short(env)
    if name == "navigation2d":
        return {"finn2017_maml": FINN_NAVIGATION["maml"], "finn2017_oracle": FINN_NAVIGATION["oracle"]}
    if name in FINN_LOCOMOTION:
        ref = FINN_LOCOMOTION[name]
        return {"finn2017_maml": ref["maml"], "finn2017_pretrained": ref["pretrained"], "finn2017_oracle": ref["oracle"]}
    return None


def test_tasks(sampler: Any, protocol: Protocol) -> list[Any]:
    """The fixed test tasks of ``protocol`` (independent of every training task stream)."""
    return sampler.sample_tasks(protocol.test_tasks, rng=np.random.default_rng([protocol.task_seed, TEST_TASK_STREAM, 1]))


def adaptation_path(policy: nn.Module, sampler: Any, protocol: Protocol, tasks: list[Any] | None = None,
                    after_step: Callable[[int, dict[str, Tensor]], dict[str, Tensor]] | None = None) -> Iterator[tuple[int, dict[str, Tensor] | None, Any]]:
    """The protocol's adaptation, one step at a time: yields ``(k, params_k, batch_k)`` for k = 0..K.

    ``params_k`` are the parameters after k steps, stacked per task on a leading T dim (None for k = 0:
    the policy's own), and ``batch_k`` the B episodes per task sampled with them; theta_{k+1} is one vanilla
    policy-gradient step of size alpha_k on ``batch_k`` (standardised advantages over the linear baseline).
    ``after_step(k, params_k)``, for probes only (not the protocol), replaces ``params_k`` (k >= 1) before they are used.
    """
    tasks = test_tasks(sampler, protocol) if tasks is None else tasks
    params = {n: p.detach() for n, p in policy.parameters_dict().items()}
    per_task = False
    for k in range(protocol.steps + 1):
        batch = protocol_episodes(policy, sampler, protocol, tasks, params if per_task else None, k)
        yield k, (params if per_task else None), batch
        if k < protocol.steps:
            inner = InnerSpec(lr=protocol.step_size(k), estimator="naive", gamma=protocol.gamma, gae_lambda=protocol.gae_lambda)
            params = inner.adapt_detached(policy, params, batch, per_task_params=per_task)
            if after_step is not None:
                params = after_step(k + 1, params)
            per_task = True


def protocol_episodes(policy: nn.Module, sampler: Any, protocol: Protocol, tasks: list[Any], params: dict[str, Tensor] | None, k: int) -> EpisodeBatch:
    """The episodes of step k: B per task; with ``protocol.batch_steps``, whole episodes per task until their
    lengths sum to at least that many steps (Finn et al.'s test scripts: rllab's batch of 4000 steps),
    sampled B at a time, the surplus masked out (:meth:`EpisodeBatch.first_episodes_reaching`)."""
    chunks = [sampler.sample(policy, tasks, protocol.rollouts, params=params, seed=iteration_seed(protocol.seed, k, 2))]
    if protocol.batch_steps is None:
        return chunks[0]
    while min(sum(c.mask.sum(dim=(0, 2)) for c in chunks).tolist()) < protocol.batch_steps:
        chunks.append(sampler.sample(policy, tasks, protocol.rollouts, params=params,
                                     seed=iteration_seed(protocol.seed, k, EXTRA_EPISODES_PHASE + len(chunks))))
    return concat_episodes(chunks).first_episodes_reaching(protocol.batch_steps)


def protocol_readings(policy: nn.Module, sampler: Any, protocol: Protocol, tasks: list[Any] | None = None,
                      after_step: Callable[[int, dict[str, Tensor]], dict[str, Tensor]] | None = None) -> Tensor:
    """The mean episode return of each test task after 0..K steps in each of the protocol's R readings: (R, K + 1, N).

    Reading r is :func:`adaptation_path` with evaluation seed ``protocol.seed + r`` on the same test tasks, so
    it differs from the others only in the episodes sampled (and hence in the adaptation steps taken from them).
    ``after_step``: see :func:`adaptation_path`.
    """
    tasks = test_tasks(sampler, protocol) if tasks is None else tasks
    readings = []
    for r in range(protocol.repeats):
        reading = replace(protocol, seed=protocol.seed + r, repeats=1)
        returns = [batch.mean_over_episodes(batch.episode_returns()).cpu() for _, _, batch in adaptation_path(policy, sampler, reading, tasks, after_step)]
        readings.append(torch.stack(returns).double())  # (K + 1, N)
    return torch.stack(readings)  # (R, K + 1, N)


def adaptation_returns(policy: nn.Module, sampler: Any, protocol: Protocol, tasks: list[Any] | None = None,
                       after_step: Callable[[int, dict[str, Tensor]], dict[str, Tensor]] | None = None) -> Tensor:
    """Mean episode return of each test task after 0..K adaptation steps, averaged over the protocol's R readings
    (:func:`protocol_readings`): (K + 1, N) (``after_step``: see :func:`adaptation_path`)."""
    return protocol_readings(policy, sampler, protocol, tasks, after_step).mean(dim=0)  # (K + 1, N)


@dataclass
class Curve:
    """Return after 0..K steps of one method: mean and 95% CI over seeds (over tasks for one seed)."""

    mean: list[float]
    ci95: list[float]
    seeds: int
    per_seed: list[list[float]] = field(default_factory=list)  # (S, K + 1) mean over tasks of each seed
    sources: list[str] = field(default_factory=list)
    per_task: list[list[float]] = field(default_factory=list)  # (K + 1, N) mean over seeds of each test task
    repeats: int = 1  # R, the protocol's readings averaged into each seed's returns
    reading_sd: list[float] = field(default_factory=list)  # (K + 1) spread of one reading of one checkpoint (R > 1 only)
    per_reading: list[list[list[float]]] = field(default_factory=list)  # (S, R, K + 1) mean over tasks of each reading (R > 1 only)

    @classmethod
    def from_runs(cls, runs: Sequence[Tensor], sources: Sequence[str] = ()) -> "Curve":
        """``runs``: one (K + 1, N) tensor per training seed."""
        per_seed = [r.mean(dim=1).tolist() for r in runs]
        if len(runs) == 1:
            stats = [mean_ci95(row.tolist()) for row in runs[0]]
        else:
            stats = [mean_ci95(col) for col in zip(*per_seed)]
        per_task = torch.stack(list(runs)).mean(dim=0).tolist()
        return cls([m for m, _ in stats], [c for _, c in stats], len(runs), per_seed, list(sources), per_task)

    @classmethod
    def from_readings(cls, readings: Sequence[Tensor], sources: Sequence[str] = ()) -> "Curve":
        """``readings``: one (R, K + 1, N) tensor per training seed (:func:`protocol_readings`). Each seed's returns
        are averaged over its R readings first, so the means and intervals are those of :meth:`from_runs` on the
        averages. With R > 1, ``reading_sd`` is the standard deviation over readings of one checkpoint's mean over
        tasks, pooled over the seeds: sqrt of the mean over seeds of the variance (ddof 1) over its R readings."""
        curve = cls.from_runs([r.mean(dim=0) for r in readings], sources)
        curve.repeats = int(readings[0].shape[0])
        if curve.repeats > 1:
            task_means = torch.stack([r.mean(dim=2) for r in readings])  # (S, R, K + 1)
            curve.reading_sd = task_means.var(dim=1).mean(dim=0).sqrt().tolist()
            curve.per_reading = task_means.tolist()
        return curve

    def minus(self, other: "Curve") -> tuple[list[float], list[float]]:
        """Paired difference self - other on the same test tasks: (mean, 95% CI over tasks) per step.

        Both curves must come from the same protocol (same test tasks); the task-to-task spread of the
        returns cancels, so this is the interval to read when two methods are compared."""
        stats = [mean_ci95((np.asarray(a) - np.asarray(b)).tolist()) for a, b in zip(self.per_task, other.per_task)]
        return [m for m, _ in stats], [c for _, c in stats]


def navigation_oracle_returns(tasks: Sequence[Any], horizon: int = 100) -> np.ndarray:
    """The best possible return on each navigation task, exactly: (N,).

    From s_0 = 0 with steps clipped to [-0.1, 0.1] per coordinate, the positions reachable after k steps
    form the square [-0.1k, 0.1k]^2, so no policy can be closer to g after k steps than
    s_k* = clip(g, -0.1k, 0.1k) (element-wise), and that sequence is feasible (each coordinate moves by at
    most 0.1). Following it minimises every reward -||s_k - g|| at once and, being closest in each
    coordinate, reaches the termination square |s - g| < 0.01 first, so R* = -sum_{k=1}^{n} ||s_k* - g||
    with n the first k where both |s_k* - g| < 0.01 (or the horizon). This is
    "move to the goal at maximum speed" with the element-wise clip: both coordinates move at full speed
    until the nearer one is reached (slightly better than the straight line, which slows one coordinate).
    """
    out = []
    for task in tasks:
        goal = goal_from_task(task).astype(np.float64)
        total = 0.0
        for k in range(1, horizon + 1):
            offset = np.clip(goal, -MAX_STEP * k, MAX_STEP * k) - goal
            total -= float(np.linalg.norm(offset))
            if np.all(np.abs(offset) < SUCCESS_TOLERANCE):
                break
        out.append(total)
    return np.asarray(out)


def bandit_oracle_returns(tasks: Sequence[Any], horizon: int = 10) -> np.ndarray:
    """Expected return of pulling the best arm every time, H max_k p_k, per task: (N,)."""
    return np.asarray([horizon * float(np.max(task["probs"])) for task in tasks])


ORACLES: dict[str, Callable[[Sequence[Any], int], np.ndarray]] = {
    "metalearn_edu/Navigation2D-v0": navigation_oracle_returns,
    "metalearn_edu/Bandit5-v0": bandit_oracle_returns,
    "metalearn_edu/Bandit10-v0": bandit_oracle_returns,
}


def oracle_returns(env: str, tasks: Sequence[Any], horizon: int) -> np.ndarray | None:
    """The exact oracle return of each task of ``env``, or None when no oracle is known."""
    fn = ORACLES.get(resolve_env_id(env))
    return None if fn is None else fn(tasks, horizon)


def evaluate_checkpoints(paths: Sequence[str | Path], protocol: Protocol, device: str | torch.device = "cpu") -> dict[str, Curve]:
    """Evaluate checkpoints under ``protocol``; checkpoints of the same algorithm are aggregated as seeds."""
    runs: dict[str, list[Tensor]] = {}
    sources: dict[str, list[str]] = {}
    for path in paths:
        policy, config, _ = load_rl_checkpoint(path, device)
        with make_sampler(eval_config(config, protocol), device) as sampler:
            runs.setdefault(config.algo, []).append(protocol_readings(policy, sampler, protocol))
        sources.setdefault(config.algo, []).append(str(path))
    return {algo: Curve.from_readings(r, sources[algo]) for algo, r in runs.items()}


def evaluate_random_init(config: RLTrainConfig, protocol: Protocol, seeds: Sequence[int], device: str | torch.device = "cpu") -> Curve:
    """The random-initialisation baseline: fresh policies (the architecture of ``config``), adapted the same way."""
    from metalearn_edu.rl.train import build_policy

    runs = []
    with make_sampler(eval_config(config, protocol), device) as sampler:
        for seed in seeds:
            torch.manual_seed(seed)
            policy = build_policy(config, sampler.observation_space, sampler.action_space).to(device)
            runs.append(protocol_readings(policy, sampler, protocol))
    return Curve.from_readings(runs, [f"random init, seed {s}" for s in seeds])


def evaluate_oracle(config: RLTrainConfig, protocol: Protocol) -> dict[str, Any] | None:
    """The exact oracle on the test tasks (flat over adaptation steps), or None when none is known."""
    from metalearn_edu.rl.train import env_preset

    if resolve_env_id(env_preset(config.env).env) not in ORACLES:
        return None
    with make_sampler(eval_config(config, protocol), "cpu") as sampler:
        values = oracle_returns(config.env, test_tasks(sampler, protocol), sampler.horizon)
    if values is None:
        return None
    mean, ci = mean_ci95(values.tolist())
    return {"mean": mean, "ci95": ci, "how": (ORACLES[resolve_env_id(config.env)].__doc__ or "").strip().splitlines()[0]}


def eval_config(config: RLTrainConfig, protocol: Protocol) -> RLTrainConfig:
    """``config`` with the protocol's horizon (the config's own when the protocol leaves it None)."""
    horizon = protocol.horizon if protocol.horizon is not None else config.horizon
    return RLTrainConfig.from_dict(asdict(config) | {"horizon": horizon})


def plot_adaptation(curves: dict[str, Curve], oracle: dict[str, Any] | None, *, title: str = "", reference: dict[str, list[float]] | None = None,
                    reference_oracle: float | None = None, ax=None):
    """Return against adaptation steps, one line (mean, 95% CI band) per method; the exact oracle dashed black;
    published curves (``reference``: label -> returns after 0..K steps) dotted grey, a published oracle dash-dotted grey."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5.5, 3.6))[1]
    for name, curve in curves.items():
        steps = np.arange(len(curve.mean))
        mean, ci = np.asarray(curve.mean), np.asarray(curve.ci95)
        ax.plot(steps, mean, marker="o", label=f"{name} ({curve.seeds} seed{'s' if curve.seeds > 1 else ''})")
        ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2)
    for (name, values), marker in zip((reference or {}).items(), "x+*d"):
        ax.plot(np.arange(len(values)), values, ls=":", marker=marker, color="gray", label=name)
    if reference_oracle is not None:
        ax.axhline(reference_oracle, ls="-.", color="gray", lw=1, label="Finn et al. 2017 oracle")
    if oracle is not None:
        ax.axhline(oracle["mean"], ls="--", color="black", lw=1, label="oracle (exact optimum)")
    ax.set_xlabel("adaptation steps (policy-gradient)")
    ax.set_ylabel("mean return")
    ax.set_xticks(range(max(len(c.mean) for c in curves.values()) if curves else 1))
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


__all__ = [
    "Curve", "FINN_LOCOMOTION", "FINN_NAVIGATION", "ORACLES", "PAPER_HORIZONS", "Protocol", "adaptation_path", "adaptation_returns",
    "bandit_oracle_returns", "eval_config", "evaluate_checkpoints", "evaluate_oracle", "evaluate_random_init", "finn_reference",
    "mean_ci95", "navigation_oracle_returns", "oracle_returns", "paper_protocol", "plot_adaptation", "protocol_episodes", "protocol_readings",
    "t_critical", "test_tasks",
]
