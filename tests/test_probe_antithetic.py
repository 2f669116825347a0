"""scripts/probe_antithetic.py: pairs of episodes with mirrored noise, each episode with the policy's own law."""

import pytest
import torch

from script_helpers import load_script, tiny_navigation_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_navigation_checkpoint(tmp_path_factory.mktemp("antithetic") / "run", iterations=2)


def test_the_second_half_of_the_episodes_draws_the_negated_noise_of_the_first():
    probe = load_script("probe_antithetic")
    mean = torch.randn(3, 6, 2)  # (T, B, act_dim)
    log_std = torch.full((3, 6, 2), -1.0)
    actions = probe.antithetic_sample(None, (mean, log_std), torch.Generator().manual_seed(0))
    noise = (actions - mean) / log_std.exp()
    assert torch.allclose(noise[:, 3:], -noise[:, :3])
    assert not torch.allclose(noise[:, :3], torch.zeros(3, 3, 2))
    # the same generator state gives the same first half: the pairs are fresh noise, not a reuse of other episodes
    again = probe.antithetic_sample(None, (mean, log_std), torch.Generator().manual_seed(0))
    assert torch.equal(actions, again)
    with pytest.raises(ValueError, match="even B"):
        probe.antithetic_sample(None, (mean[:, :5], log_std[:, :5]), None)


def test_the_probe_reports_the_protocol_and_the_pairs_for_each_checkpoint(checkpoint, tmp_path, capsys):
    probe = load_script("probe_antithetic")
    result = probe.main(["--checkpoint", checkpoint, checkpoint, "--steps", "1", "--rollouts", "4", "--noise-repeats", "2",
                         "--json", str(tmp_path / "a.json")])
    assert set(result["returns"]) == {"protocol", "antithetic pairs"}
    assert all(len(row) == 2 for row in result["returns"].values())
    assert all(len(seeds) == 2 and seeds[0] == seeds[1] for seeds in result["per_seed"].values())  # same checkpoint twice
    assert result["returns"]["protocol"] != result["returns"]["antithetic pairs"]
    assert "antithetic pairs" in capsys.readouterr().out and (tmp_path / "a.json").exists()
    for name in ("protocol", "antithetic pairs"):  # two evaluation seeds: two different first steps around their mean
        (row,) = result["rest"][name]  # one row per step k = 1..K
        assert row["miss"] > 0 and row["scatter"] > 0


def test_an_odd_number_of_rollouts_and_a_single_repeat_are_refused(checkpoint, capsys):
    probe = load_script("probe_antithetic")
    with pytest.raises(SystemExit):
        probe.main(["--checkpoint", checkpoint, "--rollouts", "5"])
    assert "--rollouts must be an even number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe.main(["--checkpoint", checkpoint, "--noise-repeats", "1"])
    assert "--noise-repeats must be 0 (skip) or at least 2" in capsys.readouterr().err
