"""scripts/probe_sigma_after_adaptation.py: with factor 1 the probe is the protocol; a smaller sigma after step 1
leaves the return before adaptation alone and changes every later one."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest

from metalearn_edu.rl.train import RLTrainConfig, train_rl

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "probe_sigma_after_adaptation.py"


def _probe():
    spec = importlib.util.spec_from_file_location("probe_sigma_after_adaptation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "run"
    config = RLTrainConfig.for_env("navigation2d", iterations=2, meta_batch=2, rollouts=3, horizon=8, hidden=(8,), ppo_epochs=1, seed=3)
    train_rl(replace(config, checkpoint_every=1), out, progress=False)
    return str(out / "checkpoint.pt")


def test_factor_one_is_the_protocol_and_a_smaller_sigma_changes_only_the_adapted_steps(checkpoint, tmp_path, capsys):
    probe = _probe()
    same = probe.main(["--checkpoint", checkpoint, "--factor", "1.0", "--steps", "2", "--json", str(tmp_path / "same.json")])
    rows = list(same["returns"].values())
    assert rows[0] == rows[1] and len(rows[0]) == 3
    smaller = probe.main(["--checkpoint", checkpoint, "--factor", "0.5", "--after-steps", "1", "--steps", "2"])
    protocol, probed = smaller["returns"].values()
    assert probed[0] == protocol[0] and probed[1] != protocol[1] and probed[2] != protocol[2]
    assert "sigma x 0.5 after steps [1]" in capsys.readouterr().out
    assert (tmp_path / "same.json").exists()


def test_bad_arguments_are_refused(checkpoint):
    probe = _probe()
    with pytest.raises(SystemExit):
        probe.main(["--checkpoint", checkpoint, "--factor", "0"])
    with pytest.raises(SystemExit):
        probe.main(["--checkpoint", checkpoint, "--factor", "0.5", "--after-steps", "4"])
