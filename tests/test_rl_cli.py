"""``metalearn-edu train/evaluate <env>`` for meta-RL: help, tiny runs, resume, JSON output, clear errors."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from metalearn_edu.cli import main

TINY = ["--iterations", "2", "--meta-batch", "2", "--rollouts", "3", "--horizon", "8", "--hidden", "8",
        "--checkpoint-every", "1", "--quiet"]


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
    import torch

    out = tmp_path / "run"
    assert main(["train", "navigation2d", "--algo", "ppo-maml", *TINY, "--seed", "1", "--out", str(out)]) == 0
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "curve.png"} <= {p.name for p in out.iterdir()}
    assert "trained ppo-maml on navigation2d for 2 iterations" in capsys.readouterr().out
    # the same command with a larger budget resumes from the checkpoint
    assert main(["train", "navigation2d", "--algo", "ppo-maml", *TINY[:-1], "--quiet", "--iterations", "3", "--seed", "1", "--out", str(out)]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
    assert "for 1 iteration in" in (said := capsys.readouterr().out) and "(this session, 3 in all)" in said
    # the same command again: nothing left to train, and the figures are the run's last logged ones, not NaN
    assert main(["train", "navigation2d", "--algo", "ppo-maml", *TINY[:-1], "--quiet", "--iterations", "3", "--seed", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    last = json.loads(lines[-1])
    assert "already holds all 3 iterations" in said and "nan" not in said and f"{last['pre_return']:.2f}" in said
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    args = ["evaluate", "navigation2d", "--checkpoint", str(out / "checkpoint.pt"), "--steps", "0", "1", "2",
            "--test-tasks", "3", "--rollouts", "2", "--json", "--seed", "7"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first  # deterministic under a seed
    method = first["methods"]["ppo-maml"]
    assert len(method["mean"]) == 3 and method["seeds"] == 1
    assert first["reference"]["finn2017_maml"][0] == -40.41
    threads = torch.get_num_threads()
    try:  # --threads sets torch's CPU threads for the evaluation; the same episodes, the same returns to rounding
        assert main([*args, "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        assert json.loads(capsys.readouterr().out)["methods"]["ppo-maml"]["mean"] == pytest.approx(method["mean"], abs=1e-4)
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(SystemExit):
        main([*args, "--threads", "0"])
    assert "--threads" in capsys.readouterr().err
    # --repeats 2: readings with --seed 7 and 8 averaged; the first is the single reading above
    assert main([*args, "--repeats", "2"]) == 0
    repeated = json.loads(capsys.readouterr().out)
    assert repeated["protocol"]["repeats"] == 2 and repeated["methods"]["ppo-maml"]["repeats"] == 2
    assert main([*args[:-1], "8"]) == 0
    second = json.loads(capsys.readouterr().out)["methods"]["ppo-maml"]["mean"]
    assert repeated["methods"]["ppo-maml"]["mean"] == pytest.approx([(a + b) / 2 for a, b in zip(method["mean"], second)], abs=1e-9)
    spread = [abs(a - b) / 2 ** 0.5 for a, b in zip(method["mean"], second)]  # the SD of two readings
    assert repeated["methods"]["ppo-maml"]["reading_sd"] == pytest.approx(spread, abs=1e-9)
    per_reading = repeated["methods"]["ppo-maml"]["per_reading"]  # (seeds, R, steps): the two single readings
    assert per_reading[0][0] == pytest.approx(method["mean"], abs=1e-9) and per_reading[0][1] == pytest.approx(second, abs=1e-9)
    assert "reading_sd" not in method and method["repeats"] == 1
    assert main([a for a in args if a != "--json"] + ["--repeats", "2"]) == 0
    assert "(1 seed x 2 readings)" in (table := capsys.readouterr().out) and "one reading strays (SD)" in table
    with pytest.raises(SystemExit):
        main([*args, "--repeats", "0"])
    assert "--repeats" in capsys.readouterr().err


def test_activation_flag_reaches_the_policy(tmp_path):
    import torch

    out = tmp_path / "relu"
    assert main(["train", "navigation2d", "--algo", "maml-vpg", *TINY, "--activation", "relu", "--out", str(out)]) == 0
    spec = torch.load(out / "checkpoint.pt", weights_only=False)["policy_spec"]
    assert spec["activation"] == "relu"
    assert json.loads((out / "config.json").read_text())["activation"] == "relu"


def test_gae_lambda_reaches_the_training_config_and_the_evaluation_table(tmp_path, capsys):
    out = tmp_path / "lam"
    assert main(["train", "navigation2d", "--algo", "ppo-maml", *TINY, "--gae-lambda", "0.9", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["gae_lambda"] == 0.9
    capsys.readouterr()
    args = ["evaluate", "navigation2d", "--checkpoint", str(out), "--steps", "0", "1", "--test-tasks", "2", "--rollouts", "2"]
    assert main([*args, "--gae-lambda", "0.9"]) == 0
    assert "0.05), gae lambda 0.9)," in capsys.readouterr().out
    assert main(args) == 0
    assert "lambda" not in capsys.readouterr().out  # the paper's lambda = 1 goes unmentioned


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
    per_task = record["methods"]["maml-vpg"]["per_task"]  # (steps, tasks); one seed, so the mean is their average
    assert [len(row) for row in per_task] == [4, 4]
    assert [sum(row) / 4 for row in per_task] == pytest.approx(record["methods"]["maml-vpg"]["mean"])
    assert record["oracle"]["mean"] > 0 and (out / "adaptation.png").exists()
    # --pretrained alone adds the pretrained row, not the other baselines
    assert main(["evaluate", "bandit5", "--checkpoint", str(tmp_path / "maml"), "--pretrained", str(run),
                 "--steps", "0", "1", "--test-tasks", "4", "--rollouts", "3", "--out", str(out)]) == 0
    record = json.loads((out / "eval.json").read_text())
    assert set(record["methods"]) == {"maml-vpg", "pretrained"} and record["oracle"] is None


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


@pytest.mark.parametrize(("algo", "flag", "value", "readers"), [
    ("maml-vpg", "--clip", "0.2", "ppo-maml, ppo-inner only"),
    ("maml-trpo", "--outer-lr", "1e-3", "maml-vpg, ppo-maml, ppo-inner, pretrain only"),
    ("pretrain", "--gae-lambda", "0.95", "maml-vpg, maml-trpo, ppo-maml, ppo-inner only"),
    ("ppo-inner", "--estimator", "dice", "maml-vpg, maml-trpo, ppo-maml only"),
    ("ppo-maml", "--max-kl", "0.02", "maml-trpo only"),
    ("maml-vpg", "--spread-bonus", "0.1", "ppo-maml only"),  # the config's own check would name spread_bonus, not the flag
    ("ppo-inner", "--dice-lambda", "0.5", "maml-vpg, maml-trpo, ppo-maml only"),
])
def test_a_flag_the_algorithm_would_ignore_is_refused_by_name(tmp_path, capsys, algo, flag, value, readers):
    out = tmp_path / "run"
    assert main(["train", "navigation2d", "--algo", algo, *TINY, flag, value, "--out", str(out)]) == 2
    assert f"{flag} is read by {readers}; --algo {algo} would ignore it" in capsys.readouterr().err
    assert not out.exists()  # refused before anything is written


def test_flags_every_algorithm_reads_and_estimator_auto_are_accepted(tmp_path):
    assert main(["train", "navigation2d", "--algo", "ppo-inner", *TINY, "--estimator", "auto", "--inner-lr", "0.2",
                 "--gae-lambda", "0.9", "--clip", "0.2", "--iterations", "1", "--out", str(tmp_path / "run")]) == 0


def _protocol_of(argv):
    from metalearn_edu.cli import build_parser
    from metalearn_edu.rl.evaluate_cli import evaluation_protocol

    return evaluation_protocol(build_parser().parse_args(argv))


@pytest.mark.parametrize("env, horizon", [("navigation2d", 100), ("halfcheetah-vel", 200), ("antdir", 200)])
def test_protocol_paper_pins_finn_et_al(env, horizon):
    protocol, steps = _protocol_of(["evaluate", env, "--protocol", "paper", "--seed", "3"])
    assert steps == [0, 1, 2, 3] and protocol.steps == 3
    assert (protocol.test_tasks, protocol.rollouts, protocol.step_sizes, protocol.horizon, protocol.seed) == (40, 20, (0.1, 0.05), horizon, 3)
    # repeating the paper's own values is no conflict
    again, _ = _protocol_of(["evaluate", env, "--protocol", "paper", "--seed", "3", "--test-tasks", "40", "--step-sizes", "0.1", "0.05"])
    assert again == protocol
    custom, steps = _protocol_of(["evaluate", env, "--rollouts", "5", "--steps", "0", "2"])
    assert (custom.rollouts, custom.steps, custom.test_tasks, custom.horizon, steps) == (5, 2, 40, None, [0, 2])
    assert protocol.batch_steps is None and custom.batch_steps is None
    assert _protocol_of(["evaluate", env, "--batch-steps", "4000"])[0].batch_steps == 4000
    assert protocol.gamma == custom.gamma == 0.99 and _protocol_of(["evaluate", env, "--gamma", "0.9"])[0].gamma == 0.9
    assert protocol.gae_lambda == custom.gae_lambda == 1.0
    assert _protocol_of(["evaluate", env, "--gae-lambda", "0.95"])[0].gae_lambda == 0.95
    # --repeats reads the protocol several times; each reading stays the paper's, so it is no conflict
    assert protocol.repeats == custom.repeats == 1
    assert _protocol_of(["evaluate", env, "--protocol", "paper", "--seed", "3", "--repeats", "4"])[0] == replace(protocol, repeats=4)


def test_protocol_paper_rejects_conflicting_flags(capsys):
    assert main(["evaluate", "halfcheetah-vel", "--protocol", "paper", "--rollouts", "5", "--horizon", "20", "--baselines"]) == 2
    err = capsys.readouterr().err
    assert "--protocol paper" in err and "--rollouts 5 (paper: 20)" in err and "--horizon 20 (paper: 200)" in err
    for extra in (["--test-tasks", "3"], ["--step-sizes", "0.2"], ["--steps", "0", "1"], ["--batch-steps", "4000"], ["--gamma", "0.9"],
                  ["--gae-lambda", "0.9"]):
        assert main(["evaluate", "navigation2d", "--protocol", "paper", "--baselines", *extra]) == 2
        assert extra[0] in capsys.readouterr().err
    assert main(["evaluate", "navigation2d", "--protocol", "paper", "--baselines", "--batch-steps", "4000"]) == 2
    assert "--batch-steps 4000 (paper: off)" in capsys.readouterr().err
    assert main(["evaluate", "navigation2d", "--baselines", "--gamma", "1.5"]) == 2
    assert "gamma must be a number in [0, 1], got 1.5" in capsys.readouterr().err
    assert main(["evaluate", "navigation2d", "--baselines", "--gae-lambda", "-0.1"]) == 2
    assert "gae_lambda must be a number in [0, 1], got -0.1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "navigation2d", "--protocol", "finn"])
    assert "--protocol" in capsys.readouterr().err


def test_locomotion_evaluate_with_baselines_quotes_finn_et_al(tmp_path, capsys):
    tiny = ["--iterations", "1", "--meta-batch", "2", "--rollouts", "2", "--horizon", "8", "--hidden", "8", "--quiet"]
    assert main(["train", "halfcheetah-vel", "--algo", "ppo-maml", *tiny, "--out", str(tmp_path / "maml")]) == 0
    assert main(["train", "halfcheetah-vel", "--algo", "pretrain", *tiny, "--out", str(tmp_path / "pre")]) == 0
    capsys.readouterr()
    args = ["evaluate", "halfcheetah-vel", "--checkpoint", str(tmp_path / "maml"), "--baselines", "--pretrained", str(tmp_path / "pre"),
            "--steps", "0", "1", "--test-tasks", "2", "--rollouts", "2", "--horizon", "8"]
    assert main([*args, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["methods"]) == {"ppo-maml", "pretrained", "random init"} and record["protocol_name"] == "custom"
    assert record["oracle"] is None and "no exact oracle" in record["oracle_note"] and "-54.5" in record["oracle_note"]
    assert record["reference"] == {"finn2017_maml": [-129.5, -78.6, -66.6, -60.8], "finn2017_pretrained": [-158.0, -135.4, -128.5, -133.6],
                                   "finn2017_oracle": -54.5}
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "Finn et al. pretrained" in table and "Finn et al. oracle" in table and "no exact oracle" in table
    # a meta-trained checkpoint is not a pretrained baseline
    assert main([*args[:5], "--pretrained", str(tmp_path / "maml"), "--test-tasks", "2"]) == 2
    assert "--pretrained must name checkpoints of --algo pretrain runs" in capsys.readouterr().err


def test_finn_references_cover_every_locomotion_family():
    from metalearn_edu.rl.evaluate import finn_reference

    assert finn_reference("halfcheetahdir")["finn2017_maml"][1] == 293.2
    assert finn_reference("metalearn_edu/AntVel-v0")["finn2017_oracle"] == 107.9
    assert finn_reference("antdir")["finn2017_pretrained"] == [3.2, 1.3, 6.5, 6.9]
    assert finn_reference("navigation2d")["finn2017_maml"][0] == -40.41
    assert finn_reference("bandit5") is None


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """``metalearn-edu train ... | head``, the reader gone before the command prints: no traceback on stderr."""
    command = [sys.executable, "-m", "metalearn_edu", "train", "navigation2d", "--algo", "ppo-maml", *TINY, "--out", str(tmp_path / "run")]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer.stdout.close()  # the reader leaves before the first line is written
    stderr = writer.stderr.read()
    writer.wait(timeout=120)
    assert writer.returncode == 141, stderr.decode()
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr, stderr.decode()
    assert (tmp_path / "run" / "checkpoint.pt").exists()  # the work itself was done and kept
