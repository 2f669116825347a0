"""scripts/probe_sigma_after_adaptation.py: with factor 1 the probe is the protocol; a smaller sigma after step 1
leaves the return before adaptation alone and changes every later one."""

import pytest

from script_helpers import load_script, tiny_navigation_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_navigation_checkpoint(tmp_path_factory.mktemp("probe") / "run", iterations=2)


def test_factor_one_is_the_protocol_and_a_smaller_sigma_changes_only_the_adapted_steps(checkpoint, tmp_path, capsys):
    probe = load_script("probe_sigma_after_adaptation")
    same = probe.main(["--checkpoint", checkpoint, "--factor", "1.0", "--steps", "2", "--json", str(tmp_path / "same.json")])
    rows = list(same["returns"].values())
    assert rows[0] == rows[1] and len(rows[0]) == 3
    smaller = probe.main(["--checkpoint", checkpoint, "--factor", "0.5", "--after-steps", "1", "--steps", "2"])
    protocol, probed = smaller["returns"].values()
    assert probed[0] == protocol[0] and probed[1] != protocol[1] and probed[2] != protocol[2]
    assert "sigma x 0.5 after steps [1]" in capsys.readouterr().out
    assert (tmp_path / "same.json").exists()


def test_bad_arguments_are_refused(checkpoint):
    probe = load_script("probe_sigma_after_adaptation")
    with pytest.raises(SystemExit):
        probe.main(["--checkpoint", checkpoint, "--factor", "0"])
    with pytest.raises(SystemExit):
        probe.main(["--checkpoint", checkpoint, "--factor", "0.5", "--after-steps", "4"])
