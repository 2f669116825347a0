"""What a 2D-navigation policy can score when it knows the goal's direction but not its distance.

Before adaptation a meta-learned navigation policy keeps its episodes near the start (``spread`` in
:mod:`metalearn_edu.rl.diagnostics`). The rewards r_t = -||s_{t+1} - g|| seen there tell the first inner step which way
the goal lies, but hardly how far: near s the reward changes by -(g - s)/||g - s|| per unit step whatever the distance.
A policy that knows only the direction has to pick its travel distance without it. The one measured here takes the same
distance D for every goal: it moves at full speed towards the point p = D g / ||g|| and stays there; with the element-wise clip of the actions the fastest path
to p is s_k = clip(p, -0.1 k, 0.1 k) (as for :func:`metalearn_edu.rl.evaluate.navigation_oracle_returns`, whose path is
the case p = g), so its return is, exactly,

    R_D(g) = - sum_{k=1}^{n} ||clip(p, -0.1 k, 0.1 k) - g||,   n = the first k inside the goal square, or the horizon,

with no exploration noise. :func:`direction_only_bound` picks the D with the best mean return on goals drawn apart from
the test tasks and reports it on the test goals: a reference for the return after one adaptation step of a policy whose
episodes before adaptation reveal the direction only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metalearn_edu.envs.navigation import MAX_STEP, SUCCESS_TOLERANCE, goals_from_tasks

DISTANCE_GRID = tuple(np.round(np.arange(0.20, 0.601, 0.01), 2))  # candidate D; goals are U[-0.5, 0.5]^2, ||g|| <= 0.71


def fixed_distance_returns(goals: np.ndarray, distance: float, horizon: int = 100) -> np.ndarray:
    """R_D(g) of the module docstring for each goal: (N, 2) goals -> (N,) returns, in float64."""
    goals = np.asarray(goals, dtype=np.float64).reshape(-1, 2)
    if not distance >= 0:
        raise ValueError(f"distance must be a non-negative number, got {distance!r}")
    norms = np.linalg.norm(goals, axis=1, keepdims=True)  # (N, 1)
    rest = distance * goals / np.where(norms > 0, norms, 1.0)  # (N, 2) the point p the policy stops at
    totals, alive = np.zeros(len(goals)), np.ones(len(goals), dtype=bool)
    for k in range(1, horizon + 1):
        offset = np.clip(rest, -MAX_STEP * k, MAX_STEP * k) - goals  # (N, 2) s_k - g
        totals -= np.where(alive, np.linalg.norm(offset, axis=1), 0.0)
        alive &= ~np.all(np.abs(offset) < SUCCESS_TOLERANCE, axis=1)  # an episode ends inside the goal square
    return totals


def direction_only_bound(tasks: Sequence[Any], horizon: int, choice_goals: np.ndarray,
                         grid: Sequence[float] = DISTANCE_GRID) -> dict[str, Any]:
    """The best fixed travel distance D* on ``choice_goals`` (the grid's best mean), and its returns on ``tasks``.

    Returns ``{"distance": D*, "mean": mean return on tasks, "per_task": [...]}``.
    """
    means = [float(fixed_distance_returns(choice_goals, d, horizon).mean()) for d in grid]
    best = float(grid[int(np.argmax(means))])
    returns = fixed_distance_returns(goals_from_tasks(tasks), best, horizon)
    return {"distance": best, "mean": float(returns.mean()), "per_task": returns.tolist()}


__all__ = ["DISTANCE_GRID", "direction_only_bound", "fixed_distance_returns"]
