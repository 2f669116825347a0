"""Locomotion meta-envs: registration, gymnasium compliance, reward definitions, tasks, presets, quiet MuJoCo."""

from __future__ import annotations

import subprocess
import sys
import warnings

import metalearn_edu.envs as envs  # registers the envs; imports mujoco_quiet before mujoco below  # isort: skip
import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metalearn_edu.envs import locomotion as loco
from metalearn_edu.envs.locomotion_envs import HalfCheetahVelEnv

IDS = list(loco.LOCOMOTION_ENV_IDS)


def test_families_are_registered_idempotently_with_their_batched_twins() -> None:
    assert set(IDS) == {f"metalearn_edu/{n}-v0" for n in ("HalfCheetahVel", "HalfCheetahDir", "HalfCheetahMass", "AntVel", "AntDir")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered twice
        loco.register_locomotion()
    for env_id in IDS:
        assert env_id in gym.registry and envs.batched_factory(env_id) is not None
    assert envs.resolve_env_id("halfcheetahvel") == "metalearn_edu/HalfCheetahVel-v0"


@pytest.mark.parametrize("env_id", IDS)
def test_check_env_passes_without_warnings(env_id: str) -> None:
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    envs.check_meta_env(env)


@pytest.mark.parametrize("name, obs_dim", [("HalfCheetah", 17), ("Ant", 105)])
def test_observation_and_physics_are_gymnasiums_step_for_step(name: str, obs_dim: int) -> None:
    ours = gym.make(f"metalearn_edu/{name}Dir-v0").unwrapped
    theirs = gym.make(f"{name}-v5").unwrapped
    ours.set_task({"direction": 1.0})
    o1, o2 = ours.reset(seed=3)[0], theirs.reset(seed=3)[0]
    assert o1.shape == (obs_dim,) and np.array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, ours.action_space.shape).astype(np.float32)
        o1, r1, *_, i1 = ours.step(action)
        o2, r2, *_, i2 = theirs.step(action)
        assert np.array_equal(o1, o2) and i1["x_velocity"] == i2["x_velocity"]
        # the direction task with d = +1 is gymnasium's forward reward with Finn's control cost
        assert r1 == pytest.approx(i2["reward_forward"] + i1["reward_ctrl"] + i1.get("reward_contact", 0.0) + i1.get("reward_survive", 0.0))


def test_task_reward_matches_the_definitions_on_hand_set_values() -> None:
    v, a = np.array([1.0, 2.5]), np.full((2, 6), 0.5)  # ||a||^2 = 1.5
    vel, cfg = loco.get_family("HalfCheetahVel"), loco.make_config(loco.get_family("HalfCheetahVel"))
    r, terms = loco.task_reward(vel, cfg, np.array([[2.0], [2.0]]), v, a)
    assert np.allclose(r, [-1.0 - 0.075, -0.5 - 0.075]) and np.allclose(terms["reward_ctrl"], -0.075)
    direction = loco.get_family("HalfCheetahDir")
    r, _ = loco.task_reward(direction, loco.make_config(direction), np.array([[1.0], [-1.0]]), v, a)
    assert np.allclose(r, [1.0 - 0.075, -2.5 - 0.075])
    ant = loco.get_family("AntVel")
    forces = np.zeros((2, 14, 6))
    forces[0, 3, :2] = [5.0, -0.5]  # clipped to 1 and -0.5: ||clip(F)||^2 = 1.25
    r, terms = loco.task_reward(ant, loco.make_config(ant), np.array([[1.5], [1.5]]), v, np.full((2, 8), 0.5), forces, np.array([True, False]))
    expected = -np.abs(v - 1.5) + 1.0 - 0.005 * 2.0 - 0.0005 * np.array([1.25, 0.0]) + 0.05 * np.array([1.0, 0.0])
    assert np.allclose(r, expected) and np.allclose(sum(terms.values()), r)


def test_env_reward_follows_the_definition_on_a_hand_set_state() -> None:
    env = HalfCheetahVelEnv(task={"velocity": 1.5})
    env.reset(seed=0)
    qpos, qvel = env.init_qpos.copy(), np.zeros(env.model.nv)
    qvel[0] = 2.0  # moving forward at 2 m/s
    env.set_state(qpos, qvel)
    action = np.array([0.5, -0.5, 0.0, 0.2, 0.0, -1.0])
    x_before = env.data.qpos[0]
    _, reward, terminated, truncated, info = env.step(action)
    v = (env.data.qpos[0] - x_before) / (env.model.opt.timestep * 5)
    assert info["x_velocity"] == pytest.approx(v) and v > 1.0
    assert reward == pytest.approx(-abs(v - 1.5) - 0.05 * np.sum(action**2))
    assert not terminated and not truncated


@pytest.mark.parametrize("env_id", ["metalearn_edu/HalfCheetahVel-v0", "metalearn_edu/HalfCheetahDir-v0", "metalearn_edu/AntVel-v0"])
def test_tasks_change_the_reward_of_the_same_transition(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    key = env.family.task_key
    action = np.full(env.action_space.shape, 0.3, dtype=np.float32)
    rewards = []
    for goal in (0.5, -1.0) if key == "direction" else (0.5, 1.5):
        env.set_task({key: goal})
        env.reset(seed=1)
        rewards.append(env.step(action)[1])
    assert rewards[0] != pytest.approx(rewards[1])


def test_mass_tasks_change_the_dynamics_and_default_restores_the_model() -> None:
    env = gym.make("metalearn_edu/HalfCheetahMass-v0").unwrapped
    base = env.model.body_mass.copy()
    action = np.full(6, 0.7, dtype=np.float32)
    env.reset(seed=0)
    light = env.step(action)[0]
    env.set_task({"mass_scale": np.full(7, 2.0)})
    assert np.allclose(env.model.body_mass[1:], 2 * base[1:]) and env.model.body_mass[0] == base[0]
    env.reset(seed=0)
    assert not np.allclose(env.step(action)[0], light)
    env.set_task(loco.default_task(env.family))
    assert np.array_equal(env.model.body_mass, base)


def test_sample_tasks_ranges_and_seeding() -> None:
    for name, key, low, high in (("HalfCheetahVel", "velocity", 0, 2), ("AntVel", "velocity", 0, 3)):
        env = gym.make(f"metalearn_edu/{name}-v0").unwrapped
        goals = np.array([t[key] for t in env.sample_tasks(500, rng=0)])
        assert goals.min() >= low and goals.max() <= high and goals.max() - goals.min() > 0.9 * (high - low)
    env = gym.make("metalearn_edu/HalfCheetahDir-v0").unwrapped
    assert {t["direction"] for t in env.sample_tasks(50, rng=0)} == {-1.0, 1.0}
    env.reset(seed=4)
    first = env.sample_tasks(10)
    env.reset(seed=4)
    assert first == env.sample_tasks(10)
    scales = np.stack([t["mass_scale"] for t in gym.make("metalearn_edu/HalfCheetahMass-v0").unwrapped.sample_tasks(200, rng=0)])
    assert scales.shape == (200, 7) and scales.min() >= 0.5 and scales.max() <= 2.0


def test_presets_horizons_and_constants_are_visible_config_fields() -> None:
    paper = gym.make("metalearn_edu/HalfCheetahVel-v0").unwrapped.config
    fast = gym.make("metalearn_edu/HalfCheetahVel-v0", preset="fast").unwrapped
    assert (paper.horizon, paper.ctrl_cost_weight, paper.velocity_range) == (200, 0.05, (0.0, 2.0))
    assert fast.config.horizon == 100 and fast.horizon == 100
    ant = loco.make_config(loco.get_family("AntDir"))
    assert (ant.ctrl_cost_weight, ant.contact_cost_weight, ant.healthy_reward, ant.healthy_z_range) == (0.005, 0.0005, 0.05, (0.2, 1.0))
    env = gym.make("metalearn_edu/HalfCheetahDir-v0", horizon=3)
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_bad_arguments_raise_value_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="preset must be one of"):
        gym.make("metalearn_edu/HalfCheetahVel-v0", preset="huge")
    with pytest.raises(ValueError, match="unknown HalfCheetahVel config field"):
        gym.make("metalearn_edu/HalfCheetahVel-v0", ctrl_cost=0.1)
    env = gym.make("metalearn_edu/HalfCheetahVel-v0").unwrapped
    with pytest.raises(ValueError, match="'velocity'"):
        env.set_task({"direction": 1.0})
    with pytest.raises(ValueError, match="family must be one of"):
        loco.get_family("Hopper")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        env.sample_tasks(0)


def test_making_a_halfcheetah_prints_nothing_and_writes_no_mujoco_log(tmp_path) -> None:
    code = (
        "import metalearn_edu.envs, gymnasium as gym, numpy as np\n"
        "env = gym.make('metalearn_edu/HalfCheetahVel-v0'); env.reset(seed=0); env.step(np.zeros(6))\n"
        "gym.make('HalfCheetah-v5').reset(seed=0)\n"  # gymnasium's own env, once our module is imported
        "from metalearn_edu.envs.mujoco_quiet import recent_mujoco_warnings\n"
        "assert any('settotalmass' in m for m in recent_mujoco_warnings())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_unexpected_mujoco_warnings_still_reach_python() -> None:
    import mujoco

    from metalearn_edu.envs.mujoco_quiet import MujocoWarning

    env = HalfCheetahVelEnv()
    data = mujoco.MjData(env.model)
    data.qvel[:] = 1e30  # an unstable simulation
    with pytest.warns(MujocoWarning, match="unstable"):
        mujoco.mj_step(env.model, data)
