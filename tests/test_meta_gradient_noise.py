"""scripts/meta_gradient_noise.py: per-estimator meta-gradients over independent meta-batches, and their summary."""

import json

import pytest
import torch

from script_helpers import load_script, tiny_navigation_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_navigation_checkpoint(tmp_path_factory.mktemp("noise") / "run", iterations=1)


def test_gradients_are_reproducible_and_differ_only_by_the_curvature_they_carry(checkpoint):
    script = load_script("meta_gradient_noise")
    kwargs = dict(tasks=3, rollouts=4, batches=2, gae_lambda=0.95, seed=1)
    grads = script.meta_gradients(checkpoint, ["naive", "lvc", "loaded-dice"], **kwargs)
    again = script.meta_gradients(checkpoint, ["lvc"], **kwargs)
    torch.testing.assert_close(again["lvc"], grads["lvc"], rtol=0, atol=0)
    assert all(g.shape[0] == 2 and torch.isfinite(g).all() for g in grads.values())
    assert not torch.allclose(grads["naive"], grads["lvc"]) and not torch.allclose(grads["lvc"], grads["loaded-dice"])
    assert not torch.allclose(grads["lvc"][0], grads["lvc"][1])  # independent meta-batches


def test_summary_and_cli(checkpoint, tmp_path, capsys):
    script = load_script("meta_gradient_noise")
    table = script.summarise({"lvc": torch.tensor([[3.0, 4.0], [3.0, -4.0]]), "loaded-dice": torch.tensor([[3.0, 4.0], [6.0, 0.0]])})
    assert table["lvc"] == {"batch_norm": 5.0, "mean_norm": 3.0}
    assert table["loaded-dice"]["extra_batch_norm"] == pytest.approx(2.5)  # |(0, 0)| and |(3, 4)|
    assert table["loaded-dice"]["extra_mean_norm"] == pytest.approx(2.5)  # |(1.5, 2)|
    out = tmp_path / "noise.json"
    script.main(["--checkpoint", checkpoint, "--tasks", "2", "--rollouts", "3", "--batches", "2", "--json", str(out)])
    assert "|mean (g - lvc)|" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["table"]) == {"naive", "lvc", "loaded-dice"}
    with pytest.raises(ValueError, match="estimators must be among"):
        script.meta_gradients(checkpoint, ["dice"], tasks=2, rollouts=2, batches=1, gae_lambda=0.95)
