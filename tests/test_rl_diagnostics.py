"""``rl.diagnostics``: the per-step breakdown of an adaptation curve, checked against the evaluation and the env."""

import json
import math

import numpy as np
import torch

from metalearn_edu.cli import main
from metalearn_edu.envs.navigation import Navigation2DEnv
from metalearn_edu.rl.diagnostics import adaptation_diagnostics
from metalearn_edu.rl.evaluate import Protocol, adaptation_returns, protocol_episodes
from metalearn_edu.rl.evaluate import test_tasks as protocol_test_tasks
from metalearn_edu.rl.policies import GaussianMLPPolicy
from metalearn_edu.rl.train import RLTrainConfig, make_sampler

HORIZON = 12


def _policy() -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-0.5, action_scale=0.1)


def test_diagnostics_follow_the_evaluation_and_the_env():
    policy = _policy()
    protocol = Protocol(steps=2, test_tasks=4, rollouts=5, horizon=HORIZON, seed=2)
    config = RLTrainConfig(horizon=HORIZON, action_scale=0.1)
    with make_sampler(config) as sampler:
        rows = adaptation_diagnostics(policy, sampler, protocol)
        returns = adaptation_returns(policy, sampler, protocol)  # (K + 1, N), the same episodes
        tasks = protocol_test_tasks(sampler, protocol)
        first = protocol_episodes(policy, sampler, protocol, tasks, None, 0)  # the episodes of step 0 again
    assert [r.step for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([r.return_ for r in rows], returns.mean(dim=1).numpy(), rtol=1e-5)
    assert math.isclose(rows[0].sigma, 0.1 * math.exp(-0.5), rel_tol=1e-5)
    assert all(0.0 <= r.success <= 1.0 and 1.0 <= r.length <= HORIZON for r in rows)
    # spread: where each of a task's episodes ends (its last valid observation), per-axis std over the episodes, norm
    lengths = first.mask.sum(dim=0).long().numpy()  # (T, B)
    obs = first.observations.numpy()
    spreads = [np.linalg.norm(np.std([obs[lengths[i, b] - 1, i, b] for b in range(protocol.rollouts)], axis=0, ddof=1))
               for i in range(protocol.test_tasks)]
    assert math.isclose(rows[0].spread, float(np.mean(spreads)), rel_tol=1e-5)
    # the mean-action episode of the unadapted policy, stepped by hand in the gymnasium env
    env, last_rewards, totals, starts, ends = Navigation2DEnv(horizon=HORIZON), [], [], [], []
    for task in tasks:
        env.set_task(task)
        obs, _ = env.reset(seed=0)
        total, reward = 0.0, 0.0
        start = obs
        for _ in range(HORIZON):
            end = obs  # the observation of the episode's last step, once the loop ends
            with torch.no_grad():
                action = policy.act(None, torch.as_tensor(obs).unsqueeze(0), deterministic=True).actions[0].numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total += reward
            if terminated or truncated:
                break
        last_rewards.append(reward)
        totals.append(total)
        starts.append(start)
        ends.append(end)
    assert math.isclose(rows[0].mean_last_reward, float(np.mean(last_rewards)), rel_tol=1e-4)
    assert math.isclose(rows[0].mean_return, float(np.mean(totals)), rel_tol=1e-4)
    # heading and reach of those episodes: where they end, seen from the start, against the goal
    goals = np.stack([t["goal"] for t in tasks]).astype(np.float64)
    moved, to_goal = np.stack(ends) - np.stack(starts), goals - np.stack(starts)
    cosines = (moved * to_goal).sum(1) / (np.linalg.norm(moved, axis=1) * np.linalg.norm(to_goal, axis=1))
    assert math.isclose(rows[0].heading, float(cosines.mean()), rel_tol=1e-4, abs_tol=1e-6)
    slope = np.polyfit(np.linalg.norm(to_goal, axis=1), np.linalg.norm(moved, axis=1), 1)[0]
    assert math.isclose(rows[0].reach, float(slope), rel_tol=1e-3, abs_tol=1e-6)
    assert rows[2].as_dict()["return"] == rows[2].return_


def test_evaluate_diagnose_prints_and_records_a_row_per_step(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "navigation2d", "--algo", "maml-vpg", "--iterations", "1", "--meta-batch", "2", "--rollouts", "2",
                 "--horizon", "8", "--hidden", "8", "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    args = ["evaluate", "navigation2d", "--checkpoint", str(run), "--steps", "0", "1", "--test-tasks", "2", "--rollouts", "2", "--diagnose"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mean-action last reward" in printed and "knows the goal's direction, not its distance" in printed
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    (rows,) = record["diagnostics"].values()
    assert [row["step"] for row in rows] == [0, 1] and {"return", "length", "success", "sigma", "spread"} <= set(rows[0])
    assert math.isclose(rows[1]["return"], record["methods"]["maml-vpg"]["mean"][1], rel_tol=1e-5)
    assert len(record["direction_only"]["per_task"]) == 2 and record["direction_only"]["mean"] < 0
