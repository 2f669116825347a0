"""The autograder on a fixture assignment and a folder of good, bad and hostile submissions.

The fixture solution ``tests/fixtures/course/solutions/01_demo.ipynb`` has three autograded
questions: ``add_test`` (1 point, with a hidden test), ``scale_test`` (2 points, a feedback check)
and ``mean_test`` (1.5 points). Every submission is derived from the generated exercise, so the
expected scores follow from what each submission does. The whole batch is graded once, through the
command line, and the tests below read its JSON, CSV and the untouched submission files.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
from pathlib import Path

import nbformat
import pytest

from metalearn_edu.cli import main
from metalearn_edu.course.grader import assemble_graded_notebook, error_reason, grade_notebook, questions_of
from metalearn_edu.course.notebooks import (
    dumps_notebook,
    grade_id_of,
    make_exercise,
    read_notebook,
    write_notebook,
)

SOLUTIONS = Path(__file__).parent / "fixtures" / "course" / "solutions"
SOLUTION = read_notebook(SOLUTIONS / "01_demo.ipynb")
POINTS = {"add_test": 1.0, "scale_test": 2.0, "mean_test": 1.5}
CELL_TIMEOUT = 3  # seconds; every honest fixture cell takes milliseconds

CORRECT = {grade_id_of(c): c.source for c in SOLUTION.cells if grade_id_of(c) and c.cell_type == "code"}
WRONG_ADD = "def add(a, b):\n    return a + b if a > 0 else 0  # passes the visible test only"
WRONG_SCALE = "def scale(xs, factor):\n    return [x + factor for x in xs]"
LOOPING_ADD = "def add(a, b):\n    while True:\n        pass"
STUBBORN_ADD = (
    "import time\n\ndef add(a, b):\n    while True:  # ignores the interrupt\n        try:\n"
    "            time.sleep(0.01)\n        except KeyboardInterrupt:\n            pass"
)
WRONG_MEAN = "def mean(xs):\n    return 0"
EXITING_SCALE = "import os\n\ndef scale(xs, factor):\n    os._exit(1)"


def submission(answers: dict[str, str] | None = None, *, drop: tuple[str, ...] = (),
               replace_source: dict[str, str] | None = None, strip_metadata: tuple[str, ...] = ()):
    """The exercise with some answer cells filled, cells dropped, sources replaced or metadata removed."""
    nb = make_exercise(SOLUTION)
    cells = []
    for cell in nb.cells:
        grade_id = grade_id_of(cell)
        if grade_id in drop:
            continue
        if grade_id in (answers or {}):
            cell.source = answers[grade_id]
        if grade_id in (replace_source or {}):
            cell.source = replace_source[grade_id]
        if grade_id in strip_metadata:
            cell.metadata.pop("nbgrader")
        cells.append(cell)
    nb.cells = cells
    return nb


EXPECTED = {  # folder -> (points per question, reason fragments)
    "correct": ({"add_test": 1, "scale_test": 2, "mean_test": 1.5}, {}),
    "blank": ({"add_test": 0, "scale_test": 0, "mean_test": 0},
              {"add_test": "NotImplementedError", "scale_test": "NotImplementedError", "mean_test": "NameError"}),
    "wrong": ({"add_test": 0, "scale_test": 0, "mean_test": 1.5},
              {"add_test": "AssertionError: add(-2, 5) should be 3",  # only the hidden test catches it
               "scale_test": "hint: multiply every element by factor"}),
    "edited_tests": ({"add_test": 0, "scale_test": 0, "mean_test": 0},
                     {"add_test": "NotImplementedError", "scale_test": "NotImplementedError", "mean_test": "NameError"}),
    "deleted_tests": ({"add_test": 1, "scale_test": 0, "mean_test": 0},
                      {"scale_test": "CheckFailed", "mean_test": "'mean_answer' is missing"}),
    "infinite_loop": ({"add_test": 0, "scale_test": 2, "mean_test": 1.5}, {"add_test": "TimeoutError"}),
    "stubborn_hang": ({"add_test": 0, "scale_test": 2, "mean_test": 1.5}, {"add_test": "TimeoutError"}),
    # the test cell is the notebook's last cell: recovering from the hang must not replace or skip it
    "hang_then_wrong_last": ({"add_test": 0, "scale_test": 2, "mean_test": 0},
                             {"add_test": "TimeoutError", "mean_test": "AssertionError"}),
    "kernel_death": ({"add_test": 1, "scale_test": 0, "mean_test": 1.5}, {"scale_test": "DeadKernelError"}),
    "invalid_json": ({"add_test": 0, "scale_test": 0, "mean_test": 0}, {"add_test": "not valid notebook JSON"}),
    "empty": ({"add_test": 0, "scale_test": 0, "mean_test": 0}, {"add_test": "has no cells"}),
    "no_cells": ({"add_test": 0, "scale_test": 0, "mean_test": 0}, {"add_test": "has no list of cells"}),
    "malformed_cell": ({"add_test": 0, "scale_test": 0, "mean_test": 0}, {"add_test": "is not a valid notebook"}),
}


def write_submissions(root: Path) -> None:
    def put(folder: str, nb) -> None:
        write_notebook(nb, root / folder / "01_demo.ipynb")

    put("correct", submission(CORRECT))
    put("blank", submission())
    put("wrong", submission({**CORRECT, "add_answer": WRONG_ADD, "scale_answer": WRONG_SCALE}))
    put("edited_tests", submission(replace_source={"add_test": "pass", "scale_test": "print('all good')",
                                                   "mean_test": "pass"}, strip_metadata=("mean_test",)))
    put("deleted_tests", submission({**CORRECT, "scale_answer": WRONG_SCALE},
                                    drop=("add_test", "scale_test", "mean_answer")))
    put("infinite_loop", submission({**CORRECT, "add_answer": LOOPING_ADD}))
    put("stubborn_hang", submission({**CORRECT, "add_answer": STUBBORN_ADD}))
    hang_then_wrong = submission({**CORRECT, "add_answer": LOOPING_ADD, "mean_answer": WRONG_MEAN})
    hang_then_wrong.cells = hang_then_wrong.cells[:-1]  # mean_test becomes the last cell
    put("hang_then_wrong_last", hang_then_wrong)
    put("kernel_death", submission({**CORRECT, "scale_answer": EXITING_SCALE}))
    (root / "invalid_json").mkdir()
    (root / "invalid_json" / "01_demo.ipynb").write_text('{"cells": [ this is not json')
    (root / "empty").mkdir()
    (root / "empty" / "01_demo.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                              "nbformat_minor": 5}))
    (root / "no_cells").mkdir()
    (root / "no_cells" / "01_demo.ipynb").write_text(json.dumps({"metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (root / "malformed_cell").mkdir()
    (root / "malformed_cell" / "01_demo.ipynb").write_text(json.dumps({"cells": ["print(1)"], "metadata": {},
                                                                       "nbformat": 4, "nbformat_minor": 5}))
    (root / "unmatched.ipynb").write_text(dumps_notebook(submission(CORRECT)))


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (so new files show up too)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Grade the whole folder once through ``metalearn-edu grade --json --out``."""
    root = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("grades")
    write_submissions(root)
    before = snapshot(root)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["grade", str(root), "--solutions", str(SOLUTIONS), "--json", "--out", str(out),
                     "--cell-timeout", str(CELL_TIMEOUT), "--timeout", "60"])
    result = json.loads(stdout.getvalue())
    by_folder = {Path(s["submission"]).parent.name if s["assignment"] else "unmatched": s
                 for s in result["submissions"]}
    return {"code": code, "root": root, "out": out, "before": before, "after": snapshot(root),
            "by_folder": by_folder, "result": result}


def test_batch_completes_and_grades_every_submission(batch):
    assert batch["code"] == 0
    assert set(batch["by_folder"]) == set(EXPECTED) | {"unmatched"}


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_scores_and_reasons(batch, folder):
    points, reasons = EXPECTED[folder]
    record = batch["by_folder"][folder]
    scores = {q["grade_id"]: q for q in record["questions"]}
    assert {gid: q["points_earned"] for gid, q in scores.items()} == points
    assert {gid: q["points_possible"] for gid, q in scores.items()} == POINTS
    assert record["points_earned"] == sum(points.values())
    for grade_id, q in scores.items():
        if q["points_earned"] == q["points_possible"]:
            assert q["reason"] == ""
        else:
            assert q["reason"], f"{folder}/{grade_id} lost points without a reason"
    for grade_id, fragment in reasons.items():
        assert fragment in scores[grade_id]["reason"], (folder, grade_id, scores[grade_id]["reason"])


def test_unmatched_file_is_reported_not_graded(batch):
    record = batch["by_folder"]["unmatched"]
    assert record["assignment"] is None and record["questions"] == []
    assert "--assignment" in record["error"]


def test_submissions_are_never_modified_and_nothing_is_written_next_to_them(batch):
    assert batch["after"] == batch["before"]


def test_grade_files_have_one_row_per_submission_and_question(batch):
    out = batch["out"]
    assert json.loads((out / "grades.json").read_text()) == batch["result"]
    with open(out / "grades.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(EXPECTED) * len(POINTS) + 1  # + the unmatched file's single row
    correct = [r for r in rows if Path(r["submission"]).parent.name == "correct"]
    assert {r["grade_id"]: float(r["points_earned"]) for r in correct} == POINTS


def test_table_output_and_assignment_override(tmp_path, capsys):
    renamed = tmp_path / "alice.ipynb"
    renamed.write_text("not a notebook")
    assert main(["grade", str(renamed), "--solutions", str(SOLUTIONS), "--assignment", "01_demo"]) == 0
    out = capsys.readouterr().out
    assert "alice.ipynb" in out and "[01_demo]" in out and "0 / 4.5" in out
    for grade_id in POINTS:
        assert grade_id in out


def test_missing_path_and_solutions_folder_are_clean_errors(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nope.ipynb"), "--solutions", str(SOLUTIONS)]) == 2
    assert "nope.ipynb" in capsys.readouterr().err
    assert main(["grade", str(tmp_path), "--solutions", str(tmp_path / "missing")]) == 2
    assert "--solutions" in capsys.readouterr().err


def test_invalid_solution_is_refused_before_grading(tmp_path, capsys):
    broken = copy.deepcopy(SOLUTION)
    broken.cells[12].metadata.nbgrader["grade_id"] = "add_test"  # duplicate grade_id
    write_notebook(broken, tmp_path / "solutions" / "01_demo.ipynb")
    write_notebook(submission(CORRECT), tmp_path / "subs" / "01_demo.ipynb")
    assert main(["grade", str(tmp_path / "subs"), "--solutions", str(tmp_path / "solutions")]) == 2
    assert "duplicate grade_id" in capsys.readouterr().err


def test_questions_of_the_fixture():
    questions = questions_of(SOLUTION)
    assert [(q.grade_id, q.points, q.answer_ids) for q in questions] == [
        ("add_test", 1.0, ("add_answer",)), ("scale_test", 2.0, ("scale_answer",)), ("mean_test", 1.5, ("mean_answer",))]


def test_assembly_restores_tests_in_place_and_keeps_student_cells():
    student = submission(CORRECT, drop=("add_test",))
    duplicated = copy.deepcopy(next(c for c in student.cells if grade_id_of(c) == "scale_test"))
    duplicated.source = "pass"
    student.cells.insert(0, duplicated)  # a tampered duplicate, placed first
    student.cells.append(nbformat.v4.new_code_cell("print('my own scratch cell')"))
    graded = assemble_graded_notebook(SOLUTION, student)
    ids = [grade_id_of(c) for c in graded.cells]
    assert ids.count("scale_test") == 1 and ids.count("add_test") == 1
    assert ids.index("add_test") == ids.index("add_answer") + 1
    instructor = {grade_id_of(c): c.source for c in SOLUTION.cells if grade_id_of(c)}
    for cell in graded.cells:
        if grade_id_of(cell) in POINTS:
            assert cell.source == instructor[grade_id_of(cell)]
            assert "BEGIN HIDDEN TESTS" in cell.source or grade_id_of(cell) != "add_test"
    assert graded.cells[-1].source == "print('my own scratch cell')"
    assert all(c.get("outputs", []) == [] for c in graded.cells)


def test_a_submission_without_cells_scores_zero_even_on_checks_without_an_answer():
    solution = copy.deepcopy(SOLUTION)
    check = nbformat.v4.new_code_cell("assert True  # passes without any student code")
    check.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "setup_test",
                                  "points": 1, "schema_version": 3}
    solution.cells.insert(1, check)
    assert questions_of(solution)[0].answer_ids == ()
    scores, _ = grade_notebook(solution, nbformat.v4.new_notebook(), cwd=SOLUTIONS, cell_timeout=CELL_TIMEOUT)
    assert [(s.grade_id, s.points_earned, s.reason) for s in scores][0] == ("setup_test", 0.0, "the submission has no cells")
    assert all(s.points_earned == 0 and s.reason == "the submission has no cells" for s in scores)


def test_error_reason_keeps_the_type_the_last_line_and_a_check_first_line():
    from metalearn_edu.course.feedback import CheckFailed

    failure = CheckFailed("scale([1, 2], 3)", expected="[3, 6]", got="[4, 5]", hint="multiply, do not add")
    reason = error_reason("CheckFailed", str(failure))
    assert reason == "CheckFailed: scale([1, 2], 3): expected [3, 6], got [4, 5] | hint: multiply, do not add"
    assert error_reason("AssertionError", "") == "AssertionError"
    assert error_reason("NotImplementedError", "").startswith("NotImplementedError (a '# YOUR CODE HERE' stub")
    assert error_reason("ValueError", "bad value\n") == "ValueError: bad value"
    assert len(error_reason("ValueError", "x" * 1000)) <= len("ValueError: ") + 300
