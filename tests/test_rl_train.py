"""The meta-RL training loop and evaluation harness: exact resume, weights_only checkpoints, clear errors,
the NaN guard, deterministic evaluation and the exact navigation oracle."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from metalearn_edu.envs.navigation import Navigation2DEnv
from metalearn_edu.rl.evaluate import Curve, Protocol, adaptation_returns, mean_ci95, navigation_oracle_returns, protocol_readings
from metalearn_edu.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from metalearn_edu.rl.sampler import MetaSampler
from metalearn_edu.rl.train import ALGORITHMS, RLTrainConfig, load_rl_checkpoint, make_sampler, outer_optimizer, read_metrics, train_rl
from metalearn_edu.train import DivergenceError

TINY = RLTrainConfig.for_env("navigation2d", iterations=4, meta_batch=2, rollouts=3, horizon=8, hidden=(8,),
                             ppo_epochs=2, cg_iterations=3, max_backtracks=4, checkpoint_every=2, seed=5)


def params_of(policy):
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


@pytest.mark.parametrize("algo, kl_target", [("ppo-maml", None), ("maml-trpo", None), ("ppo-maml", 1e-3)])
def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, algo, kl_target):
    config = replace(TINY, algo=algo, kl_target=kl_target)  # with kl_target, eta is part of the resumed state
    full = train_rl(config, tmp_path / "full", progress=False)
    train_rl(replace(config, iterations=2), tmp_path / "cut", progress=False)  # stopped after the checkpoint at 2
    resumed = train_rl(config, tmp_path / "cut", progress=False)
    for name, value in params_of(full.policy).items():
        torch.testing.assert_close(params_of(resumed.policy)[name], value, rtol=0, atol=0)
    assert [m["iteration"] for m in read_metrics(tmp_path / "cut")] == [1, 2, 3, 4]
    assert read_metrics(tmp_path / "cut")[-1]["post_return"] == read_metrics(tmp_path / "full")[-1]["post_return"]


def test_best_pt_holds_the_policy_at_the_best_windowed_training_return_and_survives_resume(tmp_path):
    config = replace(TINY, iterations=6, best_window=2)
    train_rl(config, tmp_path / "full", progress=False)
    returns = [m["post_return"] for m in read_metrics(tmp_path / "full")]
    means = {i + 2: (returns[i] + returns[i + 1]) / 2 for i in range(len(returns) - 1)}  # iteration -> window mean
    best = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    assert best["iteration"] == max(means, key=means.get) and best["best_score"] == pytest.approx(max(means.values()))
    policy, _, _ = load_rl_checkpoint(tmp_path / "full" / "best.pt")  # evaluate --checkpoint RUN/best.pt
    assert "optimizer" not in best and policy.act(None, torch.zeros(1, 2)).actions.shape == (1, 2)
    train_rl(replace(config, iterations=3), tmp_path / "cut", progress=False)
    train_rl(config, tmp_path / "cut", progress=False)
    resumed = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)
    assert (resumed["iteration"], resumed["best_score"]) == (best["iteration"], best["best_score"])


def test_kl_target_adapts_eta_after_every_update_by_the_promp_rule(tmp_path):
    target = 1e-3
    train_rl(replace(TINY, iterations=6, kl_coef=0.01, kl_target=target), tmp_path, progress=False)
    metrics = read_metrics(tmp_path)
    assert metrics[0]["kl_coef"] == 0.01
    for before, after in zip(metrics, metrics[1:]):
        expected = 2 * before["kl_coef"] if before["kl"] > 1.5 * target else before["kl_coef"] / 2 if before["kl"] < target / 1.5 else before["kl_coef"]
        assert after["kl_coef"] == expected
    assert len({m["kl_coef"] for m in metrics}) > 1  # the tiny run's KLs leave the band, so eta moved
    train_rl(replace(TINY, iterations=1), tmp_path / "fixed", progress=False)
    assert "kl_coef" not in read_metrics(tmp_path / "fixed")[0]  # a fixed eta is in the config, not the log


def test_anneal_lr_decays_the_adam_step_linearly_to_zero(tmp_path):
    config = replace(TINY, anneal_lr=True, outer_lr=2e-3)
    full = train_rl(config, tmp_path / "full", progress=False)
    assert [m["outer_lr"] for m in read_metrics(tmp_path / "full")] == pytest.approx([2e-3, 1.5e-3, 1e-3, 5e-4])
    train_rl(replace(config, iterations=2, anneal_lr=False), tmp_path / "plain", progress=False)
    assert "outer_lr" not in read_metrics(tmp_path / "plain")[0]
    fresh = train_rl(config, tmp_path / "again", progress=False)  # deterministic: the same schedule, the same policy
    for name, value in params_of(full.policy).items():
        torch.testing.assert_close(params_of(fresh.policy)[name], value, rtol=0, atol=0)
    train_rl(replace(config, iterations=2), tmp_path / "cut", progress=False)
    with pytest.raises(ValueError, match="anneal-lr run over iterations=2; resume it with the same iterations"):
        train_rl(config, tmp_path / "cut", progress=False)  # a longer schedule would jump the step size back up
    resumed = train_rl(replace(config, time_limit_s=1e-9), tmp_path / "timed", progress=False)  # stops after one iteration
    assert resumed.iterations_done == 1
    train_rl(config, tmp_path / "timed", progress=False)  # the same command resumes on the same schedule
    assert [m["outer_lr"] for m in read_metrics(tmp_path / "timed")] == pytest.approx([2e-3, 1.5e-3, 1e-3, 5e-4])


@pytest.mark.parametrize("algo", ["ppo-maml", "maml-vpg", "maml-trpo"])
def test_two_inner_steps_sample_fresh_episodes_between_steps(tmp_path, algo):
    config = replace(TINY, algo=algo, iterations=2, inner_steps=2)
    result = train_rl(config, tmp_path, progress=False)
    metrics = read_metrics(tmp_path)
    assert all({"pre_return", "return_after_1", "post_return"} <= set(m) for m in metrics)
    assert metrics[-1]["return_after_1"] != metrics[-1]["post_return"]  # a second batch, from a second policy
    one = train_rl(replace(config, inner_steps=1), tmp_path / "one", progress=False)
    assert read_metrics(tmp_path / "one")[0]["pre_return"] == metrics[0]["pre_return"]  # same tasks, same first batch
    assert not torch.equal(one.policy.log_std, result.policy.log_std)


def test_outer_every_step_changes_the_update_of_a_two_step_run(tmp_path):
    config = replace(TINY, algo="ppo-maml", iterations=1, inner_steps=2)
    last_only = train_rl(config, tmp_path / "last", progress=False)
    every = train_rl(replace(config, outer_every_step=True), tmp_path / "every", progress=False)
    assert read_metrics(tmp_path / "every")[0]["pre_return"] == read_metrics(tmp_path / "last")[0]["pre_return"]
    assert json.loads((tmp_path / "every" / "config.json").read_text())["outer_every_step"] is True
    assert not torch.equal(every.policy.log_std, last_only.policy.log_std)


@pytest.mark.parametrize("algo", ["ppo-maml", "ppo-inner"])
def test_post_kl_stop_reaches_both_ppo_updates_and_logs_the_kept_post_update_kl(tmp_path, algo):
    """A bound nothing satisfies undoes every update (post_kl 0, no epoch kept); a bound never reached keeps every
    epoch and logs the post-update KL of each update."""
    tight = train_rl(replace(TINY, algo=algo, post_kl_stop=1e-12), tmp_path / "tight", progress=False)
    assert all(m["post_kl"] == 0.0 and m["epochs_kept"] == 0.0 for m in read_metrics(tmp_path / "tight"))
    loose = train_rl(replace(TINY, algo=algo, post_kl_stop=1e9), tmp_path / "loose", progress=False)
    assert all(m["post_kl"] > 0.0 and m["epochs_kept"] == TINY.ppo_epochs for m in read_metrics(tmp_path / "loose"))
    assert any(not torch.equal(a, b) for a, b in zip(params_of(tight.policy).values(), params_of(loose.policy).values()))


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_writes_metrics_config_and_a_weights_only_checkpoint(tmp_path, algo):
    train_rl(replace(TINY, algo=algo, iterations=2), tmp_path, progress=False)
    metrics = read_metrics(tmp_path)
    assert len(metrics) == 2 and {"pre_return", "kl", "iteration_s", "elapsed_s"} <= set(metrics[0])
    assert ("post_return" in metrics[0]) == (algo != "pretrain")
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert raw["iteration"] == 2 and raw["config"]["algo"] == algo
    policy, config, _ = load_rl_checkpoint(tmp_path)
    assert config == replace(TINY, algo=algo, iterations=2)
    assert json.loads((tmp_path / "config.json").read_text())["algo"] == algo
    assert policy.act(None, torch.zeros(3, 2)).actions.shape == (3, 2)


def test_bandit_training_runs_with_a_categorical_policy(tmp_path):
    config = RLTrainConfig.for_env("bandit5", iterations=2, meta_batch=2, rollouts=4, seed=1)
    result = train_rl(config, tmp_path, progress=False)
    assert result.policy.n_actions == 5 and read_metrics(tmp_path)[-1]["iteration"] == 2


def test_a_run_resumes_on_another_thread_count_to_the_same_parameters(tmp_path):
    """threads is how the run is computed, not what it computes: a resume may change it."""
    whole = train_rl(replace(TINY, iterations=2, threads=1), tmp_path / "whole", progress=False)
    train_rl(replace(TINY, iterations=1, threads=1), tmp_path / "cut", progress=False)
    try:
        resumed = train_rl(replace(TINY, iterations=2, threads=2), tmp_path / "cut", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # the rest of the suite runs on one thread
    for name, value in params_of(whole.policy).items():
        torch.testing.assert_close(params_of(resumed.policy)[name], value)


def test_a_ppo_run_resumes_with_another_task_chunk_to_the_same_parameters(tmp_path):
    """task_chunk, like threads, is how the outer update is computed, not what it computes."""
    ppo = replace(TINY, algo="ppo-maml", estimator="auto", meta_batch=3, ppo_epochs=2)
    whole = train_rl(replace(ppo, iterations=2), tmp_path / "whole", progress=False)
    train_rl(replace(ppo, iterations=1), tmp_path / "cut", progress=False)
    resumed = train_rl(replace(ppo, iterations=2, task_chunk=2), tmp_path / "cut", progress=False)
    for name, value in params_of(whole.policy).items():
        torch.testing.assert_close(params_of(resumed.policy)[name], value)


def test_resume_refuses_a_different_config(tmp_path):
    train_rl(replace(TINY, iterations=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different config"):
        train_rl(replace(TINY, inner_lr=0.5), tmp_path, progress=False)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"algo": "maml++"}, "algo must be one of maml-vpg, maml-trpo, ppo-maml, ppo-inner, pretrain"),
        ({"inner_lr": 0.0}, "inner_lr must be a positive number"),
        ({"outer_lr": -1e-3}, "outer_lr must be a positive number"),
        ({"horizon": 0}, "horizon must be a positive integer"),
        ({"meta_batch": 0}, "meta_batch must be a positive integer"),
        ({"rollouts": -2}, "rollouts must be a positive integer"),
        ({"estimator": "magic"}, "estimator must be one of auto, naive, dice, lvc"),
        ({"env": "no-such-env"}, "env must be one of"),
        ({"action_scale": 0.0}, "action_scale must be a positive number"),
        ({"kl_target": 0.0}, "kl_target must be a positive number or None"),
        ({"kl_stop": -1.0}, "kl_stop must be a positive number or None"),
        ({"algo": "maml-vpg", "kl_stop": 0.1}, "kl_stop ends the outer epochs of ppo-maml and ppo-inner only"),
        ({"post_kl_stop": 0.0}, "post_kl_stop must be a positive number or None"),
        ({"algo": "maml-trpo", "post_kl_stop": 0.1}, "post_kl_stop ends the outer epochs of ppo-maml and ppo-inner only"),
        ({"inner_lr_later": -0.1}, "inner_lr_later must be a positive number or None"),
        ({"algo": "ppo-inner", "inner_steps": 2}, "inner_steps > 1 needs algo maml-vpg, maml-trpo or ppo-maml"),
        ({"algo": "maml-trpo", "kl_target": 0.01}, "kl_target adapts the KL penalty of ppo-maml and ppo-inner only"),
        ({"algo": "maml-trpo", "anneal_lr": True}, "anneal_lr decays the Adam step size"),
        ({"anneal_lr": "yes"}, "anneal_lr must be True or False"),
        ({"log_std_scale": 0.0}, "log_std_scale must be a positive number"),
        ({"log_std_lr_scale": -1.0}, "log_std_lr_scale must be a positive number"),
        ({"algo": "maml-trpo", "log_std_lr_scale": 0.5}, "log_std_lr_scale scales the Adam step size"),
        ({"state_dependent_std": "no"}, "state_dependent_std must be True or False"),
        ({"min_std": 0.0}, "min_std must be a positive number or None"),
        ({"init_log_std": -1.0, "min_std": 0.5}, r"min_std \(0.5\) must be at most the initial sigma exp\(init_log_std\) = 0.3679"),
        ({"outer_every_step": 1}, "outer_every_step must be True or False"),
        ({"threads": 0}, "threads must be a positive integer"),
        ({"algo": "maml-vpg", "outer_every_step": True}, "outer_every_step scores every inner step in the outer objective of ppo-maml only"),
    ],
)
def test_bad_inputs_name_the_argument(change, message):
    with pytest.raises(ValueError, match=message):
        replace(TINY, **change).validate()


@pytest.mark.parametrize("lr_scale, log_sigma_step", [(1.0, 4.0), (0.25, 1.0)])
def test_log_std_lr_scale_sets_the_outer_step_of_log_sigma(lr_scale, log_sigma_step):
    """Adam's first step moves every parameter by its step size (gradient 1 everywhere here). With log sigma = k phi,
    k = 4, log sigma moves 4 beta when phi has step size beta, and beta when phi has beta / k; the rest moves beta."""
    beta, k = 1e-2, 4.0
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-1.0, log_std_scale=k)
    optimizer = outer_optimizer(policy, replace(TINY, outer_lr=beta, log_std_scale=k, log_std_lr_scale=lr_scale))
    before = params_of(policy)
    sum(p.sum() for p in policy.parameters()).backward()
    optimizer.step()
    after = params_of(policy)
    torch.testing.assert_close(k * (before["log_std"] - after["log_std"]), torch.full((2,), log_sigma_step * beta), rtol=1e-5, atol=0)
    for name in before:
        if name != "log_std":
            torch.testing.assert_close(before[name] - after[name], torch.full_like(before[name], beta), rtol=1e-5, atol=0)


def test_log_std_lr_scale_survives_annealing_and_resume(tmp_path):
    config = replace(TINY, anneal_lr=True, log_std_scale=4.0, log_std_lr_scale=0.25)
    full = train_rl(config, tmp_path / "full", progress=False)
    assert train_rl(replace(config, time_limit_s=1e-9), tmp_path / "cut", progress=False).iterations_done == 1
    resumed = train_rl(config, tmp_path / "cut", progress=False)  # the optimizer's two groups come back from the checkpoint
    for name, value in params_of(full.policy).items():
        torch.testing.assert_close(params_of(resumed.policy)[name], value, rtol=0, atol=0)
    groups = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    last = config.outer_lr * (1 - 3 / config.iterations)  # the annealed beta of the last update, iteration index 3
    assert [g["lr"] for g in groups] == pytest.approx([last, 0.25 * last])
    bandit = RLTrainConfig.for_env("bandit5", iterations=2, meta_batch=2, rollouts=4)
    with pytest.raises(ValueError, match="log_std_lr_scale sets the Gaussian policy"):
        train_rl(replace(bandit, log_std_lr_scale=0.5), progress=False)
    with pytest.raises(ValueError, match="log_std_lr_scale=0.5 needs a Gaussian policy"):  # the optimizer's own check
        outer_optimizer(CategoricalMLPPolicy(1, 5, hidden=(8,)), replace(TINY, log_std_lr_scale=0.5))


@pytest.mark.parametrize("change", [{"init_log_std": -1.0}, {"action_scale": 0.5}, {"log_std_scale": 2.0},
                                    {"state_dependent_std": True}, {"min_std": 0.5}])
def test_a_gaussian_only_field_is_refused_for_discrete_actions(change):
    (name, value), = change.items()
    message = (f"{name} sets the Gaussian policy of continuous actions; bandit5 has 5 discrete actions "
               rf"\(a categorical policy\), which would ignore {name}={value!r}")
    with pytest.raises(ValueError, match=message):
        train_rl(RLTrainConfig.for_env("bandit5", iterations=2, meta_batch=2, rollouts=4, **change), progress=False)


def test_an_environment_without_set_task_is_refused():
    with pytest.raises(ValueError, match="env must be a meta-environment.*set_task"):
        train_rl(replace(TINY, env="CartPole-v1"), progress=False)


class _NaNSampler(MetaSampler):
    def sample(self, *args, **kwargs):
        batch = super().sample(*args, **kwargs)
        return replace(batch, rewards=batch.rewards * float("nan"))


def test_divergence_stops_with_a_clear_message(tmp_path):
    with pytest.raises(DivergenceError, match="training diverged. Try a smaller step size"):
        train_rl(TINY, tmp_path, progress=False, sampler=_NaNSampler("navigation2d", horizon=8))


def test_evaluation_is_deterministic_under_a_seed():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-1.0)
    protocol = Protocol(steps=2, test_tasks=3, rollouts=4, horizon=8, seed=3)
    with make_sampler(replace(TINY, horizon=8)) as sampler:
        first = adaptation_returns(policy, sampler, protocol)
        again = adaptation_returns(policy, sampler, protocol)
        other = adaptation_returns(policy, sampler, replace(protocol, seed=4))
    assert first.shape == (3, 3)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_repeated_readings_are_the_single_readings_of_consecutive_seeds():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-1.0)
    protocol = Protocol(steps=2, test_tasks=3, rollouts=4, horizon=8, seed=3, repeats=3)
    with make_sampler(replace(TINY, horizon=8)) as sampler:
        readings = protocol_readings(policy, sampler, protocol)
        singles = [adaptation_returns(policy, sampler, replace(protocol, seed=seed, repeats=1)) for seed in (3, 4, 5)]
        averaged = adaptation_returns(policy, sampler, protocol)
    assert readings.shape == (3, 3, 3)  # (R, K + 1, N)
    for reading, single in zip(readings, singles):
        torch.testing.assert_close(reading, single, rtol=0, atol=0)
    assert not torch.equal(readings[0], readings[1])
    torch.testing.assert_close(averaged, torch.stack(singles).mean(dim=0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="repeats must be a positive integer, got 0"):
        Protocol(repeats=0)


def test_navigation_oracle_is_the_return_of_the_optimal_trajectory_in_the_env():
    env = Navigation2DEnv(horizon=100)
    tasks = env.sample_tasks(10, rng=0) + [{"goal": np.array([0.05, -0.43], np.float32)}]
    oracle = navigation_oracle_returns(tasks, 100)
    for task, expected in zip(tasks, oracle):
        env.set_task(task)
        env.reset(seed=0)
        goal, previous, total = np.asarray(task["goal"], np.float64), np.zeros(2), 0.0
        for k in range(1, 101):
            target = np.clip(goal, -0.1 * k, 0.1 * k)
            _, reward, terminated, truncated, _ = env.step((target - previous).astype(np.float32))
            previous, total = target, total + reward
            if terminated or truncated:
                break
        assert terminated and total == pytest.approx(expected, abs=1e-5)
    # no policy can beat it: a random policy's return is far below
    assert np.all(oracle <= 0) and -1.5 < oracle.mean() < 0


def test_curve_statistics_over_tasks_and_over_seeds():
    one = Curve.from_runs([torch.tensor([[1.0, 3.0], [2.0, 2.0]])])
    assert one.mean == [2.0, 2.0] and one.ci95[1] == 0.0 and one.seeds == 1
    mean, ci = mean_ci95([1.0, 3.0])
    assert mean == 2.0 and ci == pytest.approx(12.706 * np.sqrt(2) / np.sqrt(2))
    two = Curve.from_runs([torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, 5.0]])])
    assert two.mean == [3.0] and two.per_seed == [[2.0], [4.0]] and two.seeds == 2
    assert two.repeats == 1 and two.reading_sd == []


def test_curve_from_readings_averages_each_seed_first_and_pools_the_reading_spread():
    # two seeds, R = 2 readings, K + 1 = 1 step, N = 2 tasks; task means per reading: seed 0 -> 1, 3; seed 1 -> 4, 4
    seed0 = torch.tensor([[[0.0, 2.0]], [[2.0, 4.0]]], dtype=torch.float64)  # (R, K + 1, N)
    seed1 = torch.tensor([[[4.0, 4.0]], [[5.0, 3.0]]], dtype=torch.float64)
    curve = Curve.from_readings([seed0, seed1], ["a", "b"])
    assert curve.per_seed == [[2.0], [4.0]] and curve.mean == [3.0] and curve.seeds == 2 and curve.repeats == 2
    assert curve.per_task == [[2.75, 3.25]] and curve.sources == ["a", "b"]
    # variances over readings of the task means (ddof 1): seed 0: (1, 3) -> 2; seed 1: (4, 4) -> 0; pooled sqrt(1)
    assert curve.reading_sd == pytest.approx([1.0])
    assert curve.per_reading == [[[1.0], [3.0]], [[4.0], [4.0]]]  # (S, R, K + 1) the task means of each reading
    assert Curve.from_readings([seed0[:1]]).reading_sd == []  # one reading: no spread to report


def test_time_limit_stops_with_a_checkpoint_and_a_rerun_continues(tmp_path):
    result = train_rl(replace(TINY, time_limit_s=1e-9), tmp_path, progress=False)
    assert result.iterations_done == 1 and torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 1
    assert train_rl(TINY, tmp_path, progress=False).iterations_done == TINY.iterations


@pytest.mark.parametrize("threads, env, message", [(0, None, "threads must be a positive integer, got 0"),
                                                   (None, "two", "METALEARN_EDU_THREADS must be a positive integer, got 'two'")])
def test_a_bad_thread_count_is_named(monkeypatch, threads, env, message):
    from metalearn_edu.runtime import resolve_device

    if env is not None:
        monkeypatch.setenv("METALEARN_EDU_THREADS", env)
    with pytest.raises(ValueError, match=message):
        resolve_device("cpu", threads=threads)
