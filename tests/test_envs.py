"""Meta-environments: gymnasium compliance, task API, Navigation2D dynamics, batched == gymnasium."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import metalearn_edu.envs as envs
from metalearn_edu.envs.bandit import BatchedBernoulliBandit, BernoulliBanditEnv
from metalearn_edu.envs.navigation import BatchedNavigation2D, Navigation2DEnv, goals_from_tasks

OUR_IDS = ["metalearn_edu/Bandit5-v0", "metalearn_edu/Bandit10-v0", "metalearn_edu/Navigation2D-v0"]


def test_our_envs_are_registered_on_import_and_registration_is_idempotent() -> None:
    for env_id in OUR_IDS:
        assert env_id in gym.registry
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered twice
        envs.register_envs()


@pytest.mark.parametrize("env_id", envs.meta_env_ids())
def test_check_env_passes_without_warnings(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
    envs.check_meta_env(env)


@pytest.mark.parametrize("env_id", OUR_IDS)
def test_sample_tasks_follows_the_env_seed_or_an_explicit_rng(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=7)
    first = env.sample_tasks(5)
    env.reset(seed=7)
    again = env.sample_tasks(5)
    key = "goal" if "goal" in first[0] else "probs"
    assert all(np.array_equal(a[key], b[key]) for a, b in zip(first, again))
    assert np.array_equal(env.sample_tasks(3, rng=11)[2][key], env.sample_tasks(3, rng=np.random.default_rng(11))[2][key])
    assert not np.array_equal(first[0][key], first[1][key])


def test_task_distributions_have_the_paper_ranges() -> None:
    goals = np.stack([t["goal"] for t in Navigation2DEnv().sample_tasks(2000, rng=0)])
    assert goals.shape == (2000, 2) and goals.dtype == np.float32
    assert goals.min() >= -0.5 and goals.max() <= 0.5 and goals.min() < -0.49 and goals.max() > 0.49
    probs = np.stack([t["probs"] for t in BernoulliBanditEnv(num_arms=10).sample_tasks(500, rng=0)])
    assert probs.shape == (500, 10) and probs.min() >= 0.0 and probs.max() <= 1.0
    assert abs(probs.mean() - 0.5) < 0.02


def test_navigation_reward_clipping_and_termination_on_hand_set_states() -> None:
    env = Navigation2DEnv(task={"goal": np.array([0.3, 0.0])})
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and np.array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, truncated, _ = env.step(np.array([5.0, -0.03]))  # x clipped to 0.1
    np.testing.assert_allclose(obs, [0.1, -0.03], rtol=0, atol=1e-7)
    assert reward == pytest.approx(-np.hypot(0.2, 0.03), abs=1e-6)
    assert not terminated and not truncated
    obs, reward, terminated, _, _ = env.step(np.array([0.1, 0.025]))  # 5 mm from the goal
    np.testing.assert_allclose(obs, [0.2, -0.005], atol=1e-7)
    assert reward == pytest.approx(-np.hypot(0.1, 0.005), abs=1e-6) and not terminated
    obs, reward, terminated, _, _ = env.step(np.array([0.095, 0.0]))
    assert reward == pytest.approx(-np.hypot(0.005, 0.005), abs=1e-6)  # both coordinates within 0.01
    assert terminated


def test_navigation_terminates_in_finn_et_al_s_square_not_a_disc() -> None:
    """Finn et al.'s env ends when |x - gx| < 0.01 and |y - gy| < 0.01: a corner of the square (distance
    0.0127 > 0.01) ends the episode, a point 0.0105 away along one axis (inside the disc of 0.0127) does not."""
    goal = np.array([0.3, 0.0])
    for action, ends in (([0.1, 0.009], True), ([0.1, 0.0105], False), ([0.1, -0.0099], True)):
        env = Navigation2DEnv(task={"goal": goal})
        env.reset(seed=0)
        for _ in range(2):
            env.step(np.array([0.1, 0.0]))
        _, reward, terminated, _, _ = env.step(np.array(action))
        assert terminated is ends, action
        assert reward == pytest.approx(-np.hypot(0.0, action[1]), abs=1e-6)
        batched = BatchedNavigation2D([{"goal": goal}], 1, horizon=10)
        batched.reset()
        for _ in range(2):
            batched.step(torch.tensor([[[0.1, 0.0]]]))
        assert batched.step(torch.tensor([[action]], dtype=torch.float32))[2].item() is ends


def test_navigation_truncates_at_the_horizon() -> None:
    env = gym.make("metalearn_edu/Navigation2D-v0", horizon=4)
    env.reset(seed=0)
    flags = [env.step(np.zeros(2, dtype=np.float32))[3] for _ in range(4)]
    assert flags == [False, False, False, True]


def test_batched_navigation_equals_the_gymnasium_env_step_for_step() -> None:
    rng = np.random.default_rng(0)
    tasks = Navigation2DEnv().sample_tasks(4, rng=1)
    tasks.append({"goal": np.array([0.05, 0.0], dtype=np.float32)})  # reachable: exercises termination
    B, horizon = 3, 30
    single = [[Navigation2DEnv(horizon=horizon, task=task) for _ in range(B)] for task in tasks]
    batched = BatchedNavigation2D(tasks, B, horizon=horizon)
    obs = batched.reset()
    assert torch.equal(obs, torch.zeros(len(tasks), B, 2))
    seen_terminal = False
    for _ in range(horizon):
        actions = rng.normal(scale=0.08, size=(len(tasks), B, 2)).astype(np.float32)
        actions[-1] = [0.05, 0.0]  # walk straight to the near goal
        obs, rewards, terminated, truncated = batched.step(torch.as_tensor(actions))
        for i in range(len(tasks)):
            for j in range(B):
                o, r, term, trunc, _ = single[i][j].step(actions[i, j])
                assert np.array_equal(o, obs[i, j].numpy())
                assert r == rewards[i, j].item()
                assert (term, trunc) == (terminated[i, j].item(), truncated[i, j].item())
                seen_terminal |= term
    assert seen_terminal and truncated[0].all()


def test_goals_from_tasks_stacks_the_sampled_goals_in_task_order() -> None:
    tasks = Navigation2DEnv().sample_tasks(5)
    goals = goals_from_tasks(tasks)
    assert goals.shape == (5, 2) and goals.dtype == np.float32
    np.testing.assert_array_equal(goals, np.asarray([task["goal"] for task in tasks], dtype=np.float32))


def test_bandit_episode_framing_and_reward_law() -> None:
    env = BernoulliBanditEnv(num_arms=3, horizon=10, task={"probs": [0.0, 1.0, 0.5]})
    obs, _ = env.reset(seed=0)
    steps = [env.step(1) for _ in range(10)]
    assert all(np.array_equal(s[0], obs) for s in steps)  # constant observation
    assert [s[1] for s in steps] == [1.0] * 10  # p = 1
    assert [s[3] for s in steps] == [False] * 9 + [True] and not any(s[2] for s in steps)
    assert env.step(0)[4]["regret"] == 1.0
    batched = BatchedBernoulliBandit([{"probs": [0.0, 1.0, 0.5]}] * 2, 4000, num_arms=3, generator=torch.Generator().manual_seed(0))
    batched.reset()
    arms = torch.tensor([[0], [2]]).expand(2, 4000)
    _, rewards, _, _ = batched.step(arms)
    assert rewards[0].sum() == 0 and abs(rewards[1].mean().item() - 0.5) < 0.03


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: Navigation2DEnv(horizon=0), "horizon"),
        (lambda: BernoulliBanditEnv(horizon=-3), "horizon"),
        (lambda: BernoulliBanditEnv(num_arms=1), "num_arms"),
        (lambda: Navigation2DEnv().set_task({"goal": [1.0, 2.0, 3.0]}), "goal"),
        (lambda: Navigation2DEnv().set_task([0.1, 0.2]), "task"),
        (lambda: BernoulliBanditEnv(num_arms=2).set_task({"probs": [0.5, 1.5]}), "probs"),
        (lambda: Navigation2DEnv().sample_tasks(0), "n"),
        (lambda: goals_from_tasks([{"goal": [0.1, 0.2]}, {"goal": [float("nan"), 0.0]}]), "goal"),
        (lambda: BatchedNavigation2D([{"goal": [0, 0]}], 0), "episodes_per_task"),
        (lambda: envs.resolve_env_id("navigation3d"), "env"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_argument(make, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        make()


def test_short_names_resolve_and_non_meta_envs_are_rejected() -> None:
    assert envs.resolve_env_id("navigation2d") == "metalearn_edu/Navigation2D-v0"
    assert envs.resolve_env_id("Bandit10") == "metalearn_edu/Bandit10-v0"
    assert envs.resolve_env_id("halfcheetah-vel") == envs.resolve_env_id("HalfCheetahVel") == "metalearn_edu/HalfCheetahVel-v0"
    with pytest.raises(ValueError, match="navigation2d"):  # the message lists the accepted names
        envs.resolve_env_id("nope")
    with pytest.raises(ValueError, match="set_task"):
        envs.make_meta_env("CartPole-v1")
