"""The metalearn-edu command line: help everywhere, --seed/--out on every leaf, clean errors."""

import json
import subprocess
import sys

import pytest

from metalearn_edu.cli import build_parser, main


def leaf_parsers():
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb")
    for verb, vp in verbs.choices.items():
        targets = [a for a in vp._actions if getattr(a, "dest", None) == "target"]
        if not targets:  # a top-level leaf such as ``grade``
            yield verb, vp
            continue
        for target, tp in targets[0].choices.items():
            yield f"{verb} {target}", tp


def test_every_leaf_subcommand_has_help_seed_and_out():
    names = []
    for name, p in leaf_parsers():
        names.append(name)
        options = {s for a in p._actions for s in a.option_strings}
        assert {"--help", "--seed", "--out"} <= options, f"{name} lacks --seed/--out"
        assert p.format_help().strip()
    assert {"train sinusoid", "evaluate sinusoid", "bench maml"} <= set(names)


def test_python_dash_m_prints_help():
    out = subprocess.run([sys.executable, "-m", "metalearn_edu", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "evaluate" in out.stdout


def test_train_then_evaluate_json(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "sinusoid", "--iterations", "30", "--meta-batch", "4", "--hidden", "8", "8", "--quiet", "--out", str(run), "--seed", "1"]) == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "loss.png", "fit.png"):
        assert (run / name).exists(), name
    first = capsys.readouterr().out
    # the same command again: nothing left to train, and the loss is the run's last logged one, not NaN
    assert main(["train", "sinusoid", "--iterations", "30", "--meta-batch", "4", "--hidden", "8", "8", "--quiet", "--out", str(run), "--seed", "1"]) == 0
    again = capsys.readouterr().out
    final = first.split("final meta-loss ")[1].split()[0]
    assert "already holds all 30 iterations" in again and "nan" not in again and f"final meta-loss {final}" in again
    assert main(["evaluate", "sinusoid", "--checkpoint", str(run / "checkpoint.pt"), "--tasks", "20", "--steps", "0", "1", "5", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["mse"]) == {"0", "1", "5"} and record["tasks"] == 20


def test_user_errors_are_one_clean_line(tmp_path, capsys):
    assert main(["evaluate", "sinusoid", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["train", "sinusoid", "--algo", "nope"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "sinusoid", "--inner-lr", "-1"])
    assert "positive" in capsys.readouterr().err
