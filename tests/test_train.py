"""The meta-training loop: checkpoints that resume exactly, weights_only loading, the NaN guard, seeds."""

import json
from dataclasses import replace

import pytest
import torch

from metalearn_edu.evaluate import evaluate_sinusoid
from metalearn_edu.train import DivergenceError, TrainConfig, load_checkpoint, read_metrics, train

TINY = TrainConfig(iterations=40, meta_batch=4, shots=5, query=5, hidden=(16, 16), log_every=10, checkpoint_every=20, seed=3)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path):
    full = train(TINY, tmp_path / "full", progress=False)
    # The same run stopped at iteration 20 (as if interrupted after the checkpoint) ...
    train(replace(TINY, iterations=20), tmp_path / "cut", progress=False)
    # ... then rerun with the full budget picks up from the checkpoint and ends identical.
    resumed = train(TINY, tmp_path / "cut", progress=False)
    for k, v in state(full.model).items():
        torch.testing.assert_close(state(resumed.model)[k], v, rtol=0, atol=0)
    assert [m["iteration"] for m in read_metrics(tmp_path / "cut")] == [10, 20, 30, 40]
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["seed"] == 3


def test_checkpoint_loads_with_weights_only(tmp_path):
    train(TINY, tmp_path, progress=False)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert raw["iteration"] == TINY.iterations and raw["config"]["algo"] == "maml"
    model, config, _ = load_checkpoint(tmp_path / "checkpoint.pt")
    assert config == TINY
    out = model(torch.zeros(3, 1))
    assert out.shape == (3, 1)


def test_resume_refuses_a_different_config(tmp_path):
    train(TINY, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(replace(TINY, inner_lr=0.5), tmp_path, progress=False)


def test_divergence_stops_with_a_clear_message(tmp_path):
    bad = replace(TINY, inner_lr=1e6, outer_lr=1e3)
    with pytest.raises(DivergenceError, match="smaller learning rate"):
        train(bad, tmp_path, progress=False)


def test_same_seed_same_training_and_evaluation():
    a = train(replace(TINY, iterations=10), None, progress=False)
    b = train(replace(TINY, iterations=10), None, progress=False)
    ea = evaluate_sinusoid(a.model, tasks=20, shots=5, max_steps=3, seed=1)
    eb = evaluate_sinusoid(b.model, tasks=20, shots=5, max_steps=3, seed=1)
    assert ea.mean == eb.mean and ea.ci95 == eb.ci95
    other = evaluate_sinusoid(a.model, tasks=20, shots=5, max_steps=3, seed=2)
    assert other.mean != ea.mean  # a different evaluation seed draws different test tasks


def test_evaluation_adapts_from_the_meta_parameters():
    result = train(replace(TINY, iterations=60), None, progress=False)
    ev = evaluate_sinusoid(result.model, tasks=50, shots=10, max_steps=10, lr=0.01, seed=0)
    assert len(ev.mean) == 11 and all(c >= 0 for c in ev.ci95)
    assert ev.mean[10] < ev.mean[0]  # ten steps on the support set lower the query error


@pytest.mark.parametrize(
    "field, value",
    [("algo", "sgd"), ("inner_lr", 0.0), ("inner_lr", -1.0), ("shots", 0), ("inner_steps", 0), ("meta_batch", 0), ("outer_lr", 0.0)],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        train(replace(TINY, **{field: value}), None, progress=False)
