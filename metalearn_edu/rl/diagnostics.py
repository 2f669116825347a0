"""What the policy does after each adaptation step: where a return after k steps comes from.

The return after k steps of :mod:`metalearn_edu.rl.evaluate` is one number per step. On a task whose
reward is minus a distance (2D navigation: r_t = -||s_{t+1} - g||), it splits into how close the adapted
policy's *mean* gets to the goal, how much its exploration noise sigma scatters it there, and how often an
episode ends early at the goal. :func:`adaptation_diagnostics` measures those along the very adaptation
path of the protocol (same test tasks, same episodes, same steps):

    return          mean undiscounted return of the protocol's B episodes per task (the evaluation's number)
    length          mean episode length (an episode ends early only at the goal)
    success         fraction of episodes that ended early (terminated before the horizon)
    sigma           geometric mean over tasks and action dims of the Gaussian policy's sigma (NaN otherwise)
    spread          how far apart a task's B episodes end: the norm of the per-dimension standard deviation, over
                    the episodes, of their last observation, averaged over tasks (for navigation the final
                    position; before adaptation, how widely the episodes the first step learns from explore)
    mean_return     return of one episode per task that takes the mean action mu(s) at every step
    mean_last_reward  the reward of that episode's last step; for navigation minus the distance from
                    the goal at which the mean action comes to rest (0 when it ends at the goal)
    heading, reach  for navigation (NaN otherwise), where that episode ends, seen from its start s_0: heading is
                    the mean over tasks of the cosine between (end - s_0) and (g - s_0), reach the least-squares
                    slope over tasks of ||end - s_0|| on ||g - s_0||. Heading 1 and reach 1: the mean action knows
                    where the goal is; heading 1 and reach 0: it knows the direction and goes the same distance
                    whatever the goal's (see :mod:`metalearn_edu.rl.navigation_bounds`)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_edu.envs.navigation import goals_from_tasks
from metalearn_edu.rl.evaluate import Protocol, adaptation_path, eval_config
from metalearn_edu.rl.policies import GaussianMLPPolicy
from metalearn_edu.rl.train import iteration_seed, load_rl_checkpoint, make_sampler

DETERMINISTIC_PHASE = 3  # the seed stream of the mean-action episodes (the protocol's episodes use phase 2)


@dataclass(frozen=True)
class StepDiagnostics:
    """The policy after ``step`` adaptation steps, averaged over the test tasks (see the module docstring)."""

    step: int
    return_: float
    length: float
    success: float
    sigma: float
    spread: float
    mean_return: float
    mean_last_reward: float
    heading: float
    reach: float

    def as_dict(self) -> dict[str, float]:
        return {("return" if key == "return_" else key): value for key, value in asdict(self).items()}


def _sigma(policy: nn.Module, params: dict[str, torch.Tensor] | None, batch: Any) -> float:
    """Geometric mean of sigma over the tasks, episodes and action dims at the first observation (the start state;
    the same everywhere unless the policy has a state-dependent sigma)."""
    if not isinstance(policy, GaussianMLPPolicy):
        return float("nan")
    first_obs = batch.observations[:1]  # (1, T, B, obs_dim)
    log_std = policy.raw_outputs(params, first_obs, task_dim=None if params is None else 1)[1]  # (1, T, B, act_dim)
    return float(log_std.mean().exp())


def _heading_and_reach(mean_batch: Any) -> tuple[float, float]:
    """(heading, reach) of the module docstring from one mean-action episode per task, NaN unless navigation tasks."""
    try:
        goals = goals_from_tasks(mean_batch.tasks).astype(np.float64)  # (T, 2)
    except ValueError:
        return float("nan"), float("nan")
    start = mean_batch.observations[0, :, 0].double().cpu().numpy()  # (T, 2)
    end = mean_batch.last_observations()[:, 0].double().cpu().numpy()  # (T, 2)
    to_goal, moved = goals - start, end - start
    goal_distance, moved_distance = np.linalg.norm(to_goal, axis=1), np.linalg.norm(moved, axis=1)
    heading = float(np.mean((to_goal * moved).sum(axis=1) / np.maximum(goal_distance * moved_distance, 1e-12)))
    reach = float(np.polyfit(goal_distance, moved_distance, 1)[0]) if len(goals) > 1 and np.ptp(goal_distance) > 0 else float("nan")
    return heading, reach


def adaptation_diagnostics(policy: nn.Module, sampler: Any, protocol: Protocol, tasks: list[Any] | None = None) -> list[StepDiagnostics]:
    """One :class:`StepDiagnostics` per k = 0..K along :func:`adaptation_path` (the protocol's own episodes)."""
    rows = []
    for k, params, batch in adaptation_path(policy, sampler, protocol, tasks):  # the steps themselves need autograd
        returns = batch.episode_returns()  # (T, B)
        lengths = batch.mask.sum(dim=0)  # (T, B)
        ended = batch.infos["terminated"].sum(dim=0)  # (T, B): 1 where the episode ended early
        mean_batch = sampler.sample(policy, batch.tasks, 1, params=params, seed=iteration_seed(protocol.seed, k, DETERMINISTIC_PHASE),
                                    deterministic=True)
        last = mean_batch.last_steps()  # (T, 1) index of each episode's last step
        last_reward = mean_batch.rewards.gather(0, last.unsqueeze(0)).squeeze(0)  # (T, 1)
        with torch.no_grad():
            sigma = _sigma(policy, params, batch)
            final_obs = batch.last_observations()  # (T, B, obs_dim)
            spread = float(final_obs.std(dim=1).norm(dim=-1).mean()) if final_obs.shape[1] > 1 else float("nan")
        heading, reach = _heading_and_reach(mean_batch)
        rows.append(StepDiagnostics(
            step=k, return_=float(batch.mean_over_episodes(returns).mean()), length=float(batch.mean_over_episodes(lengths).mean()),
            success=float(batch.mean_over_episodes(ended).mean()), sigma=sigma, spread=spread,
            mean_return=float(mean_batch.episode_returns().mean()), mean_last_reward=float(last_reward.mean()),
            heading=heading, reach=reach,
        ))
    return rows


def diagnose_checkpoint(path: str | Path, protocol: Protocol, device: str | torch.device = "cpu") -> list[StepDiagnostics]:
    """:func:`adaptation_diagnostics` of the policy saved at ``path`` on the protocol's test tasks."""
    policy, config, _ = load_rl_checkpoint(path, device)
    with make_sampler(eval_config(config, protocol), device) as sampler:
        return adaptation_diagnostics(policy, sampler, protocol)


def format_diagnostics(name: str, rows: list[StepDiagnostics]) -> str:
    """A fixed-width table of ``rows`` under the heading ``name``."""
    lines = [name, f"{'k':>3}{'return':>10}{'length':>9}{'success':>9}{'sigma':>9}{'spread':>9}{'mean-action return':>20}"
                   f"{'mean-action last reward':>25}{'heading':>9}{'reach':>8}"]
    for r in rows:
        lines.append(f"{r.step:>3}{r.return_:>10.2f}{r.length:>9.1f}{r.success:>9.2f}{r.sigma:>9.4f}{r.spread:>9.4f}{r.mean_return:>20.2f}"
                     f"{r.mean_last_reward:>25.3f}{r.heading:>9.3f}{r.reach:>8.3f}")
    return "\n".join(lines)


__all__ = ["StepDiagnostics", "adaptation_diagnostics", "diagnose_checkpoint", "format_diagnostics"]
