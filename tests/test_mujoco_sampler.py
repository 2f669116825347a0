"""The MuJoCo sampler: equal to the gymnasium envs step for step, the batched-twin protocol, MetaSampler, bench."""

from __future__ import annotations

import metalearn_edu.envs  # noqa: F401  # registers the envs; imports mujoco_quiet before mujoco  # isort: skip
import gymnasium as gym
import numpy as np
import pytest
import torch

from metalearn_edu.envs.bench_mujoco import bench_mujoco, format_table, handles
from metalearn_edu.envs.mujoco_sampler import BatchedLocomotion, LocomotionSims
from metalearn_edu.rl.policies import GaussianMLPPolicy, stack_params
from metalearn_edu.rl.sampler import MetaSampler

CASES = [
    ("metalearn_edu/HalfCheetahVel-v0", "batch"),
    ("metalearn_edu/HalfCheetahVel-v0", "datas"),
    ("metalearn_edu/HalfCheetahDir-v0", "batch"),
    ("metalearn_edu/HalfCheetahMass-v0", "batch"),
    ("metalearn_edu/AntVel-v0", "datas"),
    ("metalearn_edu/AntDir-v0", "datas"),
]


@pytest.mark.parametrize("env_id, backend", CASES)
def test_sims_equal_the_gymnasium_env_step_for_step(env_id: str, backend: str) -> None:
    steps, seeds = 40, [11, 12, 13]
    probe = gym.make(env_id).unwrapped
    tasks = probe.sample_tasks(3, rng=1)
    sims = LocomotionSims(env_id, tasks, backend=backend)
    refs = [gym.make(env_id).unwrapped for _ in seeds]
    for env, task in zip(refs, tasks):
        env.set_task(task)
    obs = sims.reset(seeds)
    np.testing.assert_allclose(obs, np.stack([env.reset(seed=s)[0] for env, s in zip(refs, seeds)]), rtol=0, atol=1e-9)
    rng, done = np.random.default_rng(0), np.zeros(len(seeds), bool)
    scale = np.array([[0.3], [1.0], [1.0]]) if "Ant" in env_id else 1.0  # ant 0 walks, strong actions flip ants over
    for _ in range(steps):
        actions = (scale * rng.standard_normal((len(seeds), probe.action_space.shape[0]))).astype(np.float32)
        obs, rewards, terminated, info = sims.step(actions)
        for i, env in enumerate(refs):
            if done[i]:
                continue
            o, r, te, _, ref_info = env.step(actions[i])
            np.testing.assert_allclose(obs[i], o, rtol=0, atol=1e-9)
            assert rewards[i] == pytest.approx(r, abs=1e-9) and info["x_velocity"][i] == pytest.approx(ref_info["x_velocity"], abs=1e-9)
            assert bool(terminated[i]) == te
            done[i] |= te
    if "Ant" in env_id:  # the termination path was exercised, and stepping stopped only for the ended episodes
        assert done.any() and not done.all() and np.array_equal(sims.alive, ~done)


@pytest.mark.parametrize("family, backend", [("HalfCheetahVel", "batch"), ("AntDir", "datas")])
def test_threads_give_identical_results(family: str, backend: str) -> None:
    tasks = [{"velocity": 1.0} if "Vel" in family else {"direction": -1.0}] * 5
    runs = []
    for nthread in (1, 2):
        sims = LocomotionSims(family, tasks, backend=backend, nthread=nthread)
        obs = [sims.reset(range(5))]
        rng = np.random.default_rng(0)
        for _ in range(10):
            obs.append(sims.step(0.5 * rng.standard_normal((5, sims.model.nu)))[0])
        sims.close()
        runs.append(np.stack(obs))
    assert np.array_equal(runs[0], runs[1])


def test_batched_twin_protocol_shapes_truncation_and_seeds() -> None:
    tasks = [{"velocity": 0.5}, {"velocity": 1.5}]
    twin = BatchedLocomotion(tasks, 3, family="HalfCheetahVel", generator=torch.Generator().manual_seed(0), horizon=4)
    again = BatchedLocomotion(tasks, 3, family="HalfCheetahVel", generator=torch.Generator().manual_seed(0), horizon=4)
    assert twin.reset_seeds == again.reset_seeds and len(set(twin.reset_seeds)) == 6
    obs = twin.reset()
    assert obs.shape == (2, 3, 17) and obs.dtype == torch.get_default_dtype()
    for step in range(4):
        obs, rewards, terminated, truncated = twin.step(torch.zeros(2, 3, 6))
        assert rewards.shape == (2, 3) and terminated.dtype == torch.bool and not terminated.any()
        assert bool(truncated.all()) == (step == 3)
    with pytest.raises(ValueError, match="actions must have shape"):
        twin.step(torch.zeros(6, 6))


def test_bad_arguments_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="backend='batch' cannot reproduce Ant"):
        LocomotionSims("AntVel", [{"velocity": 1.0}], backend="batch")
    with pytest.raises(ValueError, match="backend must be one of"):
        LocomotionSims("HalfCheetahVel", [{"velocity": 1.0}], backend="gpu")
    with pytest.raises(ValueError, match="seeds must hold one seed per simulation"):
        LocomotionSims("HalfCheetahVel", [{"velocity": 1.0}]).reset([1, 2])
    with pytest.raises(ValueError, match="episodes_per_task must be a positive integer"):
        BatchedLocomotion([{"velocity": 1.0}], 0, family="HalfCheetahVel")


def test_meta_sampler_uses_the_twin_and_matches_a_gymnasium_replay() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6)
    with MetaSampler("halfcheetahvel", env_kwargs={"preset": "fast", "horizon": 15}) as sampler:
        assert sampler.backend == "batched"
        tasks = sampler.sample_tasks(3, rng=0)
        adapted = stack_params([{k: v + 0.01 * i for k, v in policy.parameters_dict().items()} for i in range(3)])
        batch = sampler.sample(policy, tasks, 2, params=adapted, seed=5)
    assert batch.observations.shape == (15, 3, 2, 17) and batch.actions.shape == (15, 3, 2, 6)
    assert batch.mask.sum() == 15 * 3 * 2 and batch.infos["log_probs"].shape == (15, 3, 2)
    # the twin drew its reset seeds from the env generator the sampler seeded; replay episode (t=2, b=1)
    from metalearn_edu.rl.sampler import derive_seeds

    env_seed = derive_seeds(5, 6)[1]
    seeds = torch.randint(0, 2**31 - 1, (6,), generator=torch.Generator().manual_seed(env_seed)).tolist()
    env = gym.make("metalearn_edu/HalfCheetahVel-v0", preset="fast", horizon=15).unwrapped
    env.set_task(tasks[2])
    obs, _ = env.reset(seed=seeds[2 * 2 + 1])
    for t in range(15):
        np.testing.assert_allclose(batch.observations[t, 2, 1].numpy(), obs.astype(np.float32), rtol=0, atol=1e-6)
        obs, reward, *_ = env.step(batch.actions[t, 2, 1].numpy())
        assert batch.rewards[t, 2, 1].item() == pytest.approx(reward, rel=1e-6, abs=1e-6)


def test_bench_reports_the_three_measurements_and_ratios() -> None:
    assert handles("halfcheetah") and handles("Ant") and not handles("navigation2d")
    results = bench_mujoco("halfcheetah", tasks=2, episodes=2, horizon=5, repeats=1, budget=40)
    for name in ("raw_mj_step", "batch_physics", "sync_vector_env", "ours"):
        assert results[name]["env_steps_per_s"] > 0
    assert results["ours"]["env_steps"] == 2 * 2 * 5
    assert results["ours_vs_sync_vector_env"] > 0 and "ours / raw mj_step" in format_table(results)
    with pytest.raises(ValueError, match="--env must be one of"):
        bench_mujoco("hopper")
