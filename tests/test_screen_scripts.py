"""scripts/screen_start_sigma.py and scripts/train_with_averages.py: the seventeenth session's two screens."""

import math

import pytest
import torch

from metalearn_edu.rl import train as rl_train
from metalearn_edu.rl.policies import GaussianMLPPolicy, stack_params
from metalearn_edu.rl.train import load_rl_checkpoint
from script_helpers import load_script


def test_sigma_is_ratio_times_larger_at_the_start_and_unchanged_far_from_it():
    screen = load_script("screen_start_sigma")
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, hidden=(8,), init_log_std=-1.0, action_scale=0.1)
    obs = torch.tensor([[0.0, 0.0], [0.08, 0.0], [0.5, -0.5]])  # the start, one radius away, far
    mean_before, log_std_before = policy.raw_outputs(None, obs)
    undo = screen.start_sigma_patch(ratio=2.0, radius=0.08)
    try:
        mean, log_std = policy.raw_outputs(None, obs)
        stacked = stack_params([policy.parameters_dict()] * 3)  # the per-task path the sampler and the inner steps use
        _, log_std_tasks = policy.raw_outputs(stacked, obs.expand(3, 3, 2), task_dim=0)
    finally:
        undo()
    assert torch.equal(mean, mean_before)  # the mean is untouched
    added = log_std - log_std_before  # (3, act_dim)
    assert torch.allclose(added[0], torch.full((2,), math.log(2.0)))
    assert torch.allclose(added[1], torch.full((2,), math.log(2.0) * math.exp(-0.5)))
    assert torch.allclose(added[2], torch.zeros(2), atol=1e-12)
    assert torch.allclose(log_std_tasks, log_std.expand(3, 3, 2))
    assert torch.equal(policy.raw_outputs(None, obs)[1], log_std_before)  # undone
    with pytest.raises(ValueError, match="ratio"):
        screen.start_sigma_patch(ratio=0.0, radius=0.08)
    with pytest.raises(SystemExit):
        screen.main(["--ratio", "2"])  # no command to run


def test_the_averages_follow_their_formulas():
    averages = load_script("train_with_averages").ParameterAverages(decays=(0.5,), swa_from=0.5)
    for done, value in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        averages.update({"w": torch.tensor([value])}, done, iterations=4)
    # EMA from theta_1: 1 -> 1.5 -> 2.25 -> 3.125; the uniform mean over iterations >= ceil(0.5 * 4) = 2: (2 + 3 + 4) / 3
    assert averages.averages["ema0.5"]["w"].item() == pytest.approx(3.125)
    assert averages.averages["swa"]["w"].item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="decays"):
        load_script("train_with_averages").ParameterAverages(decays=(1.0,), swa_from=0.5)


def test_train_with_averages_writes_checkpoints_that_evaluate_can_load(tmp_path):
    script = load_script("train_with_averages")
    out = tmp_path / "run"
    original = rl_train.meta_iteration
    code = script.main(["--swa-from", "0.5", "--decays", "0.5", "train", "navigation2d", "--algo", "ppo-maml", "--iterations", "3",
                        "--meta-batch", "2", "--rollouts", "3", "--horizon", "8", "--hidden", "8", "--ppo-epochs", "1", "--quiet",
                        "--out", str(out)])
    assert code == 0 and rl_train.meta_iteration is original  # the train loop is restored
    policy, _, state = load_rl_checkpoint(out / "ema0.5.pt", torch.device("cpu"))
    _, _, last = load_rl_checkpoint(out / "checkpoint.pt", torch.device("cpu"))
    assert state["iteration"] == 3 and state["average"] == "ema0.5" and (out / "swa.pt").exists()
    assert any(not torch.equal(state["policy"][k], last["policy"][k]) for k in last["policy"])  # an average, not the last theta
    with pytest.raises(SystemExit):
        script.main(["train", "navigation2d"])  # no --out
