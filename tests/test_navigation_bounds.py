"""rl.navigation_bounds: the return of a policy that knows the goal's direction but not its distance, checked against
the exact oracle (which knows both), a policy that never moves, and a step-by-step run of the gymnasium env."""

import numpy as np
import pytest

from metalearn_edu.envs.navigation import Navigation2DEnv, sample_goals
from metalearn_edu.rl.evaluate import navigation_oracle_returns
from metalearn_edu.rl.navigation_bounds import DISTANCE_GRID, direction_only_bound, fixed_distance_returns

GOALS = np.stack([t["goal"] for t in sample_goals(12, np.random.default_rng(4))]).astype(np.float64)


def test_the_goals_own_distance_is_the_oracle_and_distance_zero_stays_at_the_start():
    for goal in GOALS:
        (known,) = fixed_distance_returns(goal[None], float(np.linalg.norm(goal)), horizon=100)
        assert known == pytest.approx(navigation_oracle_returns([{"goal": goal}], horizon=100)[0], abs=1e-9)
    still = fixed_distance_returns(GOALS, 0.0, horizon=30)
    np.testing.assert_allclose(still, -30 * np.linalg.norm(GOALS, axis=1))


def test_it_is_the_return_of_that_policy_in_the_env():
    env, distance = Navigation2DEnv(horizon=40), 0.3
    for goal in GOALS[:4]:
        env.set_task({"goal": goal.astype(np.float32)})
        obs, _ = env.reset(seed=0)
        rest, total = distance * goal / np.linalg.norm(goal), 0.0
        for _ in range(40):
            obs, reward, terminated, truncated, _ = env.step(np.clip(rest - obs, -0.1, 0.1).astype(np.float32))
            total += reward
            if terminated or truncated:
                break
        assert fixed_distance_returns(goal[None], distance, horizon=40)[0] == pytest.approx(total, abs=1e-4)


def test_the_bound_takes_the_best_distance_on_other_goals():
    choice = np.stack([t["goal"] for t in sample_goals(500, np.random.default_rng(5))])
    bound = direction_only_bound([{"goal": g} for g in GOALS], 100, choice)
    means = {d: fixed_distance_returns(choice, d).mean() for d in DISTANCE_GRID}
    assert bound["distance"] == max(means, key=means.get)
    assert bound["mean"] == pytest.approx(fixed_distance_returns(GOALS, bound["distance"]).mean())
    assert len(bound["per_task"]) == len(GOALS)
    assert bound["mean"] < navigation_oracle_returns([{"goal": g} for g in GOALS]).mean()  # not knowing the distance costs
    with pytest.raises(ValueError, match="distance must be a non-negative number"):
        fixed_distance_returns(GOALS, -0.1)
