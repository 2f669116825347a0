"""``rl.run_summary``: training tails and the spread of repeated evaluations, on hand-made files."""

import json

import pytest

from metalearn_edu.rl.run_summary import (evaluation_spread, main, paired_by_difficulty, protocol_draws, read_metrics, reading_means,
                                          training_tail)


def _rows(n: int) -> list[dict]:
    return [{"iteration": i, "pre_return": -40.0 + i, "return_after_1": -12.0 + i, "post_return": -4.0 + i, "kl": 0.01}
            for i in range(1, n + 1)]


def _record(seed: int, mean: list[float], task_seed: int = 0, per_task: list[list[float]] | None = None) -> dict:
    method = {"mean": mean} if per_task is None else {"mean": mean, "per_task": per_task}
    return {"protocol": {"steps": 2, "test_tasks": 40, "task_seed": task_seed, "seed": seed}, "steps": [0, 1, 2],
            "methods": {"ppo-maml": method, "pretrained": {"mean": mean}}}


def test_training_tail_averages_the_last_rows_of_every_return_column():
    tail = training_tail(_rows(10), last=4)  # iterations 7..10
    assert list(tail) == ["pre_return", "return_after_1", "post_return"]
    assert tail == pytest.approx({"pre_return": -40.0 + 8.5, "return_after_1": -12.0 + 8.5, "post_return": -4.0 + 8.5})


@pytest.mark.parametrize("last, match", [(0, "positive"), (True, "positive"), (11, "only 10")])
def test_training_tail_rejects_bad_windows(last, match):
    with pytest.raises(ValueError, match=match):
        training_tail(_rows(10), last=last)


def test_training_tail_names_a_file_that_is_not_a_meta_rl_run():
    with pytest.raises(ValueError, match="lack pre_return"):
        training_tail([{"iteration": 1, "loss": 0.5}], last=1)


def test_evaluation_spread_is_the_mean_and_sample_sd_over_seeds():
    spread = evaluation_spread([_record(0, [-40.0, -11.0, -3.0]), _record(1, [-40.0, -13.0, -4.0])])
    assert spread["method"] == "ppo-maml" and spread["repeats"] == 2 and spread["steps"] == [0, 1, 2]
    assert spread["mean"] == pytest.approx([-40.0, -12.0, -3.5])
    assert spread["sd"] == pytest.approx([0.0, 2 ** 0.5, 0.5 ** 0.5])


def test_evaluation_spread_takes_a_file_from_before_repeats_as_one_reading():
    old, new = _record(0, [-40.0, -11.0, -3.0]), _record(1, [-40.0, -13.0, -4.0])
    new["protocol"]["repeats"] = 1  # evaluate writes the field since --repeats exists; older files lack it
    assert evaluation_spread([old, new])["mean"] == pytest.approx([-40.0, -12.0, -3.5])
    new["protocol"]["repeats"] = 10
    with pytest.raises(ValueError, match="more than their seed"):
        evaluation_spread([old, new])


def test_evaluation_spread_refuses_evaluations_that_are_not_repeats():
    with pytest.raises(ValueError, match="more than their seed"):
        evaluation_spread([_record(0, [-40.0, -11.0, -3.0]), _record(1, [-40.0, -13.0, -4.0], task_seed=1)])
    with pytest.raises(ValueError, match="at least 2"):
        evaluation_spread([_record(0, [-40.0, -11.0, -3.0])])
    with pytest.raises(ValueError, match="'maml-vpg' is not"):
        evaluation_spread([_record(0, [-40.0, -11.0, -3.0]), _record(1, [-40.0, -13.0, -4.0])], method="maml-vpg")


def test_cli_prints_both_summaries(tmp_path, capsys):
    for s in range(2):
        run = tmp_path / f"run{s}"
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(5 + s)))
        (run / "eval.json").write_text(json.dumps(_record(s, [-40.0, -11.0 - 2 * s, -3.0])))
    assert len(read_metrics(tmp_path / "run1")) == 6
    assert main(["tail", str(tmp_path / "run0"), str(tmp_path / "run1"), "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean +- 95% CI over 2 runs" in out and "post_return" in out
    assert main(["evals", str(tmp_path / "run0" / "eval.json"), str(tmp_path / "run1" / "eval.json")]) == 0
    assert "-12.00" in capsys.readouterr().out  # the mean after one step
    assert main(["tail", str(tmp_path / "missing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def _repeated(per_reading: list[list[list[float]]], seed: int = 0) -> dict:
    """An eval.json of ``evaluate --repeats R``: per_reading is (checkpoints, R, steps 0 and 1)."""
    return {"protocol": {"steps": 1, "test_tasks": 40, "task_seed": 0, "seed": seed, "repeats": len(per_reading[0])}, "steps": [0, 1],
            "methods": {"ppo-maml": {"mean": [0.0, 0.0], "per_reading": per_reading}}}


def test_reading_means_average_each_reading_over_every_checkpoint_of_every_file(tmp_path, capsys):
    # three checkpoints in two files, two readings; reading 1 is 2 higher after one step for all of them
    a = _repeated([[[-40.0, -12.0], [-40.0, -10.0]], [[-41.0, -13.0], [-41.0, -11.0]]], seed=5)
    b = _repeated([[[-39.0, -11.0], [-39.0, -9.0]]], seed=5)
    out = reading_means([a, b])
    assert out["checkpoints"] == 3 and out["seed"] == 5 and out["steps"] == [0, 1]
    assert [row for means in out["means"] for row in means] == pytest.approx([-40.0, -12.0, -40.0, -10.0])  # (R, steps)
    assert out["mean"] == pytest.approx([-40.0, -11.0]) and out["sd"] == pytest.approx([0.0, 2 ** 0.5])
    with pytest.raises(ValueError, match="differ in their protocol, seed"):
        reading_means([a, _repeated([[[-39.0, -11.0], [-39.0, -9.0]]], seed=6)])
    with pytest.raises(ValueError, match="--repeats 2 or more"):
        reading_means([_record(0, [-40.0, -11.0, -3.0])])
    for name, record in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    assert main(["readings", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    text = capsys.readouterr().out
    assert "over 3 checkpoints (2 readings)" in text and "1 (seed 6)" in text and "-10.00" in text


def _many_tasks(per_seed: list[list[float]], per_task: list[list[float]], seed: int = 0) -> dict:
    """An eval.json of S checkpoints on four test tasks (steps 0 and 1), with Finn et al.'s reference."""
    return {"protocol": {"steps": 1, "test_tasks": 4, "task_seed": 100, "seed": seed, "repeats": 1}, "steps": [0, 1],
            "methods": {"ppo-maml": {"mean": [0.0, 0.0], "per_seed": per_seed, "per_task": per_task}},
            "reference": {"finn2017_maml": [-40.41, -11.68, -3.33, -3.23]}}


def test_protocol_draws_pool_the_files_by_seed_and_average_blocks_of_tasks(tmp_path, capsys):
    # two seeds in a, one in b: the pooled task means are (2 a + b) / 3, e.g. after one step -11, -13, -11, -31/3
    a = _many_tasks([[-40.0, -11.0], [-40.0, -13.0]], [[-40.0, -42.0, -38.0, -40.0], [-10.0, -14.0, -12.0, -12.0]])
    b = _many_tasks([[-40.0, -10.0]], [[-37.0, -39.0, -41.0, -43.0], [-13.0, -11.0, -9.0, -7.0]])
    out = protocol_draws([a, b], size=2)
    assert out["seeds"] == 3 and out["tasks"] == 4 and out["steps"] == [0, 1]
    assert [v for d in out["draws"] for v in d] == pytest.approx([-40.0, -12.0, -40.0, -32.0 / 3])  # (D, steps)
    assert out["mean"] == pytest.approx([-40.0, -34.0 / 3]) and out["sd"] == pytest.approx([0.0, (4.0 / 3) / 2 ** 0.5]) and out["draw_error"] == pytest.approx([0.0, 2.0 / 3])
    assert out["reference"] == [-40.41, -11.68] and out["at_or_above"] == pytest.approx([1.0, 0.5]) and out["all_steps"] == 0.5
    with pytest.raises(ValueError, match="--size 3 must divide the 4 test tasks"):
        protocol_draws([a], size=3)
    with pytest.raises(ValueError, match="cannot be pooled"):
        protocol_draws([a, _many_tasks([[-40.0, -10.0]], b["methods"]["ppo-maml"]["per_task"], seed=1)], size=2)
    with pytest.raises(ValueError, match="per-task returns"):
        protocol_draws([_record(0, [-40.0, -11.0, -3.0])])
    for name, record in (("a", a), ("b", b)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    assert main(["draws", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--size", "2"]) == 0
    text = capsys.readouterr().out
    assert "4 test tasks (task seed 100) as 2 draws of 2, 3 seeds" in text and "-11.33 +-" in text and "every step k >= 1 at once: 50%" in text
    assert main(["draws", str(tmp_path / "a.json"), "--size", "0"]) == 2


# (steps 0, 1, 2; four test tasks): A's return before adaptation ranks task 1 hardest, then task 3; B differs on those
A_TASKS = [[-20.0, -50.0, -10.0, -30.0], [-6.0, -15.0, -4.0, -8.0], [-2.5, -5.0, -2.0, -3.0]]
B_TASKS = [[-20.0, -50.0, -10.0, -30.0], [-6.0, -19.0, -4.0, -12.0], [-2.5, -4.0, -2.0, -2.0]]


def test_paired_by_difficulty_splits_the_per_task_difference_by_the_hardest_tasks_of_a():
    paired = paired_by_difficulty(_record(0, [], per_task=A_TASKS), _record(1, [], per_task=B_TASKS), hardest=0.5)
    assert paired["method"] == "ppo-maml" and list(paired["groups"]) == ["all", "hardest 2", "other 2"]
    hard, other = paired["groups"]["hardest 2"], paired["groups"]["other 2"]  # tasks {1, 3} and {0, 2}
    assert hard["tasks"] == 2 and hard["mean"] == pytest.approx([0.0, -4.0, 1.0])
    assert other["mean"] == pytest.approx([0.0, 0.0, 0.0]) and other["ci95"] == pytest.approx([0.0, 0.0, 0.0])
    assert paired["groups"]["all"]["mean"] == pytest.approx([0.0, -2.0, 0.5])


def test_paired_by_difficulty_refuses_what_it_cannot_pair():
    a = _record(0, [], per_task=A_TASKS)
    with pytest.raises(ValueError, match="cannot be paired"):
        paired_by_difficulty(a, _record(0, [], task_seed=1, per_task=B_TASKS))
    with pytest.raises(ValueError, match="run evaluate again"):
        paired_by_difficulty(a, _record(0, []))
    with pytest.raises(ValueError, match="hardest must be a fraction"):
        paired_by_difficulty(a, a, hardest=1.0)
    with pytest.raises(ValueError, match="'maml-vpg' is not in the first evaluation"):
        paired_by_difficulty(a, a, method="maml-vpg")
    pretrained_only = {**a, "methods": {"pretrained": a["methods"]["ppo-maml"]}}  # a baseline alone is compared as it is
    assert paired_by_difficulty(pretrained_only, pretrained_only)["method"] == "pretrained"
    both = {**a, "methods": {**a["methods"], "maml-vpg": a["methods"]["ppo-maml"]}}
    with pytest.raises(ValueError, match="several methods"):
        paired_by_difficulty(both, both)


def test_cli_prints_the_paired_table(tmp_path, capsys):
    for name, tasks in (("a", A_TASKS), ("b", B_TASKS)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_record(0, [], per_task=tasks)))
    assert main(["tasks", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--hardest", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "hardest 2" in out and "-4.00" in out
