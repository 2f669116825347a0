"""Sampler: batch shapes and masks, seeding, backends agreeing, per-task params, errors, and the bench CLI."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from metalearn_edu.cli import main as cli_main
from metalearn_edu.envs.navigation import Navigation2DEnv
from metalearn_edu.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, stack_params
from metalearn_edu.rl.sampler import MetaSampler, sample_episodes

torch.set_num_threads(1)


def nav_policy(seed: int = 0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    return GaussianMLPPolicy(2, 2, hidden=(16, 16), init_log_std=np.log(0.1))


def constant_step_policy(step: tuple[float, float]) -> GaussianMLPPolicy:
    """A policy whose mean action is ``step`` wherever it is."""
    policy = nav_policy()
    with torch.no_grad():
        policy.net[-1].weight.zero_()
        policy.net[-1].bias.copy_(torch.tensor(step))
    return policy


GOALS = [(0.05, 0.0), (0.1, 0.0), (0.5, 0.5)]  # reached after 1 step, after 2 steps, never (0.05 per step)


@pytest.mark.parametrize("backend", ["batched", "loop", "vector"])
def test_shapes_masks_and_padding_after_the_terminal_step(backend: str) -> None:
    sampler = MetaSampler("navigation2d", backend=backend)
    tasks = [{"goal": np.array(g, dtype=np.float32)} for g in GOALS]
    batch = sampler.sample(constant_step_policy((0.05, 0.0)), tasks, 2, seed=0, horizon=5, deterministic=True)
    assert batch.observations.shape == (5, 3, 2, 2) and batch.actions.shape == (5, 3, 2, 2)
    assert batch.rewards.shape == batch.mask.shape == batch.infos["log_probs"].shape == (5, 3, 2)
    assert batch.tasks == tasks
    expected_lengths = torch.tensor([1.0, 2.0, 5.0])[:, None].expand(3, 2)
    torch.testing.assert_close(batch.mask.sum(0), expected_lengths)
    assert torch.equal(batch.mask[:, 0, 0], torch.tensor([1.0, 0, 0, 0, 0]))  # 1 up to and including the terminal step
    after = batch.mask == 0
    assert (batch.rewards[after] == 0).all() and (batch.infos["log_probs"][after] == 0).all()
    assert (batch.observations[after] == 0).all() and (batch.actions[after] == 0).all()
    torch.testing.assert_close(batch.infos["terminated"].sum(0), torch.tensor([1.0, 1.0, 0.0])[:, None].expand(3, 2))
    torch.testing.assert_close(batch.observations[1, 2, 0], torch.tensor([0.05, 0.0]))  # s_1 of a live episode
    torch.testing.assert_close(batch.rewards[0, 2, 0], -torch.tensor([0.45, 0.5]).norm())


def test_all_episodes_ending_early_still_gives_horizon_steps() -> None:
    tasks = [{"goal": np.array([0.05, 0.0], dtype=np.float32)}]
    batch = MetaSampler("navigation2d").sample(constant_step_policy((0.05, 0.0)), tasks, 3, horizon=7, deterministic=True)
    assert batch.horizon == 7 and batch.mask.sum() == 3


def test_same_seed_gives_an_identical_batch_and_another_seed_does_not() -> None:
    sampler = MetaSampler("navigation2d", horizon=20)
    policy, tasks = nav_policy(), sampler.sample_tasks(3, rng=0)
    first, again, other = (sampler.sample(policy, tasks, 4, seed=s) for s in (5, 5, 6))
    for name in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert torch.equal(first.infos["log_probs"], again.infos["log_probs"])
    assert not torch.equal(first.actions, other.actions)


def test_the_three_backends_give_the_same_navigation_batch() -> None:
    policy = nav_policy()
    tasks = Navigation2DEnv().sample_tasks(3, rng=1)
    batches = [MetaSampler("navigation2d", backend=b, horizon=15).sample(policy, tasks, 4, seed=3) for b in ("batched", "loop", "vector")]
    for other in batches[1:]:
        for name in ("observations", "actions", "rewards", "mask"):
            assert torch.equal(getattr(batches[0], name), getattr(other, name)), name


def test_log_probs_are_those_of_the_sampled_actions_and_detached() -> None:
    policy = nav_policy()
    sampler = MetaSampler("navigation2d", horizon=10)
    batch = sampler.sample(policy, sampler.sample_tasks(2, rng=0), 3, seed=0)
    recomputed = policy.distribution(None, batch.observations).log_prob(batch.actions) * batch.mask
    torch.testing.assert_close(batch.infos["log_probs"], recomputed.detach())
    assert not batch.infos["log_probs"].requires_grad


@pytest.mark.parametrize("backend", ["batched", "loop"])
def test_per_task_params_are_used_for_their_own_task(backend: str) -> None:
    policy = nav_policy()
    base = policy.parameters_dict()
    per_task = []
    for direction in [(0.1, 0.0), (0.0, 0.1), (-0.1, 0.0)]:  # task t's policy heads in its own direction
        params = {n: p.detach().clone() for n, p in base.items()}
        params["net.4.weight"].zero_()
        params["net.4.bias"].copy_(torch.tensor(direction))
        per_task.append(params)
    sampler = MetaSampler("navigation2d", backend=backend, horizon=3)
    tasks = sampler.sample_tasks(3, rng=0)
    batch = sampler.sample(policy, tasks, 2, params=stack_params(per_task), deterministic=True)
    assert torch.equal(batch.actions[0, :, 0], torch.tensor([[0.1, 0.0], [0.0, 0.1], [-0.1, 0.0]]))
    as_list = sampler.sample(policy, tasks, 2, params=per_task, seed=4)
    stacked = sampler.sample(policy, tasks, 2, params=stack_params(per_task), seed=4)
    assert torch.equal(as_list.actions, stacked.actions)
    log_probs = policy.distribution(stack_params(per_task), stacked.observations, task_dim=1).log_prob(stacked.actions)
    torch.testing.assert_close(stacked.infos["log_probs"], log_probs * stacked.mask)
    shared = sampler.sample(policy, tasks, 2, params=per_task[1], deterministic=True)  # one dict: every task
    assert torch.equal(shared.actions[0, :, 0], torch.tensor([[0.0, 0.1]] * 3))


def test_discrete_bandit_batches_and_any_gymnasium_factory() -> None:
    torch.manual_seed(0)
    policy = CategoricalMLPPolicy(1, 5, hidden=(8,))
    for backend in ("batched", "loop"):
        sampler = MetaSampler("bandit5", backend=backend)
        batch = sampler.sample(policy, sampler.sample_tasks(4, rng=0), 6, seed=0)
        assert batch.actions.shape == (10, 4, 6) and batch.actions.dtype == torch.long
        assert batch.mask.all() and set(batch.rewards.unique().tolist()) <= {0.0, 1.0}
    batch = sample_episodes(lambda: Navigation2DEnv(horizon=4), nav_policy(), [{"goal": np.zeros(2)}], 2)
    assert batch.horizon == 4 and batch.observations.shape == (4, 1, 2, 2)


class NotAMetaEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Box(-1, 1, (2,))


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: MetaSampler("navigation3d"), "env must be one of"),
        (lambda: MetaSampler(NotAMetaEnv), "set_task"),
        (lambda: MetaSampler(42), "env must be"),
        (lambda: MetaSampler("navigation2d", backend="gpu"), "backend must be one of"),
        (lambda: MetaSampler("CartPole-v1"), "set_task"),
        (lambda: MetaSampler("navigation2d", horizon=0), "horizon"),
        (lambda: MetaSampler("navigation2d").sample(nav_policy(), [{"goal": np.zeros(2)}], 0), "episodes_per_task"),
        (lambda: MetaSampler("navigation2d").sample(nav_policy(), [{"goal": np.zeros(2)}], 2, horizon=-1), "horizon"),
        (lambda: MetaSampler("navigation2d").sample(nav_policy(), [], 2), "tasks"),
        (lambda: MetaSampler("navigation2d").sample(nav_policy(), [{"goal": np.zeros(2)}], 2, seed=-1), "seed"),
        (lambda: MetaSampler("navigation2d").sample(nav_policy(), [{"goal": np.zeros(2)}] * 2, 1, params=[nav_policy().parameters_dict()] * 3), "params"),
        (lambda: MetaSampler("navigation2d").sample(CategoricalMLPPolicy(3, 2), [{"goal": np.zeros(2)}], 1), "obs_dim"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(call, argument: str) -> None:
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


def test_backend_batched_is_refused_for_an_env_without_a_batched_twin() -> None:
    with pytest.raises(ValueError, match="backend='batched'"):
        MetaSampler(lambda: Navigation2DEnv(), backend="batched")


def test_bench_sampler_cli_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "sampler", "--tasks", "2", "--episodes", "2", "--horizon", "5", "--repeats", "1", "--json"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["backends"]) == {"vector", "loop", "batched"} and result["horizon"] == 5
    assert all(row["env_steps"] == 20 and row["env_steps_per_s"] > 0 for row in result["backends"].values())
    assert result["speedup_batched_vs_vector"] > 0


def test_bench_sampler_cli_rejects_an_unknown_env_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "sampler", "--env", "halfcheetah9"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--env must be one of" in error and "navigation2d" in error
