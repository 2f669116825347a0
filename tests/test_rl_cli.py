"""``metalearn-edu train/evaluate <env>`` for meta-RL: help, tiny runs, resume, JSON output, clear errors."""

import json

import pytest

from metalearn_edu.cli import main

TINY = ["--iterations", "2", "--meta-batch", "2", "--rollouts", "3", "--horizon", "8", "--hidden", "8",
        "--ppo-epochs", "2", "--checkpoint-every", "1", "--quiet"]


@pytest.mark.parametrize("verb", ["train", "evaluate"])
@pytest.mark.parametrize("env", ["navigation2d", "bandit5", "bandit10"])
def test_every_leaf_has_help_seed_out_and_device(capsys, verb, env):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, env, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--seed", "--out", "--device"):
        assert flag in text


def test_train_then_resume_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "navigation2d", "--algo", "ppo-maml", *TINY, "--seed", "1", "--out", str(out)]) == 0
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "curve.png"} <= {p.name for p in out.iterdir()}
    assert "trained ppo-maml on navigation2d for 2 iterations" in capsys.readouterr().out
    # the same command with a larger budget resumes from the checkpoint
    assert main(["train", "navigation2d", "--algo", "ppo-maml", *TINY[:-1], "--quiet", "--iterations", "3", "--seed", "1", "--out", str(out)]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    capsys.readouterr()
    args = ["evaluate", "navigation2d", "--checkpoint", str(out / "checkpoint.pt"), "--steps", "0", "1", "2",
            "--test-tasks", "3", "--rollouts", "2", "--json", "--seed", "7"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first  # deterministic under a seed
    method = first["methods"]["ppo-maml"]
    assert len(method["mean"]) == 3 and method["seeds"] == 1
    assert first["reference"]["finn2017_maml"][0] == -40.41


def test_evaluate_with_baselines_writes_json_and_plot(tmp_path, capsys):
    run = tmp_path / "pre"
    assert main(["train", "bandit5", "--algo", "pretrain", *TINY, "--out", str(run)]) == 0
    assert main(["train", "bandit5", "--algo", "maml-vpg", *TINY, "--out", str(tmp_path / "maml")]) == 0
    capsys.readouterr()
    out = tmp_path / "eval"
    assert main(["evaluate", "bandit5", "--checkpoint", str(tmp_path / "maml"), "--pretrained", str(run), "--baselines",
                 "--steps", "0", "1", "--test-tasks", "4", "--rollouts", "3", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "maml-vpg" in table and "pretrained" in table and "random init" in table and "oracle" in table
    record = json.loads((out / "eval.json").read_text())
    assert set(record["methods"]) == {"maml-vpg", "pretrained", "random init"}
    assert record["oracle"]["mean"] > 0 and (out / "adaptation.png").exists()


def test_errors_name_the_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "navigation2d", "--algo", "maml++"])
    assert "--algo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "navigation2d", "--inner-lr", "0"])
    assert "--inner-lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "navigation2d", "--horizon", "-3"])
    assert "--horizon" in capsys.readouterr().err
    assert main(["evaluate", "navigation2d", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["evaluate", "navigation2d"]) == 2
    assert "--checkpoint must name at least one checkpoint" in capsys.readouterr().err
