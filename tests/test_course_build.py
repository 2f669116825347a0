"""Exercise generation: the exact student version, deterministic bytes, the sync check, validation.

The fixture ``tests/fixtures/course/solutions/01_demo.ipynb`` has a solution region inside a
function, one inside a loop (deeper indentation), a whole-cell answer without markers, a markdown
answer, a hidden test and committed outputs. The expected exercise sources are written out below by
hand, and, when nbgrader is installed, compared with nbgrader's own preprocessors.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from metalearn_edu.cli import main
from metalearn_edu.course.build import build_exercises, check_exercises, validate_solution
from metalearn_edu.course.notebooks import (
    CourseError,
    dumps_notebook,
    grade_id_of,
    make_exercise,
    read_notebook,
    write_notebook,
)

FIXTURES = Path(__file__).parent / "fixtures" / "course"
ROOT = Path(__file__).resolve().parents[1]
NAME = "01_demo.ipynb"

EXPECTED_SOURCES = {  # cell index -> exercise source
    4: 'def add(a, b):\n    """Return the sum of a and b."""\n    # YOUR CODE HERE\n    raise NotImplementedError()',
    5: 'assert add(2, 3) == 5, "add(2, 3) should be 5"\nprint("add: ok")',
    6: "Explain in one sentence why `add(2, 3) == 5`.\n\nYOUR ANSWER HERE",
    8: 'def scale(xs, factor):\n    """Return [x * factor for x in xs]."""\n    out = []\n    for x in xs:\n'
       '        # YOUR CODE HERE\n        raise NotImplementedError()\n    return out',
    11: "# YOUR CODE HERE\nraise NotImplementedError()",
}


@pytest.fixture
def course(tmp_path):
    """A copy of the fixture solutions in tmp_path/solutions, and an exercises folder path."""
    shutil.copytree(FIXTURES / "solutions", tmp_path / "solutions")
    return tmp_path / "solutions", tmp_path / "exercises"


def test_build_gives_the_expected_exercise(course):
    solutions, exercises = course
    assert build_exercises(solutions, exercises) == [exercises / NAME]
    solution = read_notebook(solutions / NAME)
    exercise = read_notebook(exercises / NAME)
    assert any(c.get("outputs") for c in solution.cells), "the fixture should carry outputs to clear"
    assert len(exercise.cells) == len(solution.cells)
    for index, (want, got) in enumerate(zip(solution.cells, exercise.cells)):
        assert got.source == EXPECTED_SOURCES.get(index, want.source), f"cell {index}"
        assert (got.cell_type, got.id, got.metadata) == (want.cell_type, want.id, want.metadata)
        if got.cell_type == "code":
            assert got.outputs == [] and got.execution_count is None
    text = (exercises / NAME).read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "add(-2, 5)", "return a + b"):
        assert marker not in text
    assert exercise.metadata == solution.metadata
    assert text.startswith('{\n "cells": [\n') and text.endswith("}\n") and not text.endswith("\n\n")


def test_committed_fixture_exercise_matches_the_build(course):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    assert (exercises / NAME).read_bytes() == (FIXTURES / "exercises" / NAME).read_bytes()


def test_build_is_deterministic_and_idempotent(course, tmp_path):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    build_exercises(solutions, tmp_path / "again")
    assert (exercises / NAME).read_bytes() == (tmp_path / "again" / NAME).read_bytes()
    assert build_exercises(solutions, exercises) == []  # nothing changed, nothing rewritten
    assert (exercises / NAME).read_text() == dumps_notebook(make_exercise(read_notebook(solutions / NAME)))


def test_check_passes_when_in_sync_and_names_a_modified_cell(course, capsys):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    assert check_exercises(solutions, exercises) == []
    assert main(["course", "check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 0

    exercise = read_notebook(exercises / NAME)
    exercise.cells[8].source = exercise.cells[8].source.replace("raise NotImplementedError()", "out.append(x)")
    write_notebook(exercise, exercises / NAME)
    problems = check_exercises(solutions, exercises)
    assert [(p.cell_index, p.grade_id) for p in problems] == [(8, "scale_answer")]
    assert main(["course", "check", "--solutions", str(solutions), "--exercises", str(exercises)]) == 1
    err = capsys.readouterr().err
    assert f"{exercises / NAME}: cell index 8 (grade_id 'scale_answer'): source differs" in err


def test_check_reports_outputs_missing_and_extra_notebooks(course):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    exercise = read_notebook(exercises / NAME)
    exercise.cells[2].outputs = [{"output_type": "stream", "name": "stdout", "text": "mode: fast\n"}]
    write_notebook(exercise, exercises / NAME)
    (exercises / "99_orphan.ipynb").write_text((exercises / NAME).read_text())
    messages = [str(p) for p in check_exercises(solutions, exercises)]
    assert any("cell index 2" in m and "outputs differ" in m for m in messages)
    assert any("99_orphan.ipynb: has no source notebook" in m for m in messages)
    (exercises / NAME).unlink()
    messages = [str(p) for p in check_exercises(solutions, exercises)]
    assert any(m.startswith(str(exercises / NAME)) and "is missing" in m for m in messages)


def _mutated(cell_index: int, change) -> tuple[object, str]:
    nb = read_notebook(FIXTURES / "solutions" / NAME)
    change(nb.cells[cell_index])
    return nb, grade_id_of(nb.cells[cell_index])


def _set_source(text):
    return lambda cell: cell.__setitem__("source", text)


INVALID = {
    "begin without end": (4, _set_source("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b"), "no matching"),
    "end without begin": (4, _set_source("def add(a, b):\n    return a + b\n    ### END SOLUTION"), "without a matching"),
    "nested begin": (4, _set_source("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION"), "inside the region"),
    "hidden tests unbalanced": (5, _set_source("### BEGIN HIDDEN TESTS\nassert True"), "BEGIN HIDDEN TESTS"),
    "test without points": (5, lambda c: c.metadata.nbgrader.pop("points"), "points > 0"),
    "test with zero points": (5, lambda c: c.metadata.nbgrader.__setitem__("points", 0), "points > 0"),
    "duplicate grade_id": (12, lambda c: c.metadata.nbgrader.__setitem__("grade_id", "add_test"), "duplicate grade_id"),
    "bad grade_id": (12, lambda c: c.metadata.nbgrader.__setitem__("grade_id", "mean test"), "may only contain"),
    "solution in a plain cell": (2, _set_source("### BEGIN SOLUTION\nN = 3\n### END SOLUTION"), "not an answer cell"),
    "hidden tests in an answer": (11, _set_source("### BEGIN HIDDEN TESTS\nx = 1\n### END HIDDEN TESTS"),
                                  "not a graded test cell"),
    "markdown answer not graded": (6, lambda c: c.metadata.nbgrader.__setitem__("grade", False), "markdown answer"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_validation_names_notebook_and_cell(case, tmp_path, capsys):
    index, change, fragment = INVALID[case]
    nb, grade_id = _mutated(index, change)
    problems = validate_solution(nb, "solutions/01_demo.ipynb")
    assert len(problems) == 1 and fragment in problems[0].message, problems
    assert (problems[0].cell_index, problems[0].grade_id) == (index, grade_id)
    assert str(problems[0]).startswith(f"solutions/01_demo.ipynb: cell index {index}")
    write_notebook(nb, tmp_path / "solutions" / NAME)
    with pytest.raises(CourseError):
        build_exercises(tmp_path / "solutions", tmp_path / "exercises")
    assert not (tmp_path / "exercises").exists()
    assert main(["course", "build", "--solutions", str(tmp_path / "solutions"),
                 "--exercises", str(tmp_path / "exercises")]) == 1
    assert f"cell index {index}" in capsys.readouterr().err


def test_missing_folders_are_errors_naming_the_argument(tmp_path, capsys):
    assert main(["course", "build", "--solutions", str(tmp_path / "nope")]) == 2
    assert "--solutions" in capsys.readouterr().err
    (tmp_path / "solutions").mkdir()
    assert main(["course", "check", "--solutions", str(tmp_path / "solutions"),
                 "--exercises", str(tmp_path / "nope")]) == 2
    assert "--exercises" in capsys.readouterr().err


def test_invalid_json_solution_is_reported(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / NAME).write_text("{ not json")
    with pytest.raises(CourseError, match="not valid notebook JSON"):
        build_exercises(tmp_path / "solutions", tmp_path / "exercises")


def test_course_run_reexecutes_in_place_and_keeps_the_file_on_error(course, capsys):
    solutions, _ = course
    path = solutions / NAME
    nb = read_notebook(path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    write_notebook(nb, path)
    assert main(["course", "run", "--fast", str(path)]) == 0
    ran = read_notebook(path)
    assert ran.cells[2].outputs[0]["text"] == "mode: fast | N = 3\n"
    assert [c.execution_count for c in ran.cells if c.cell_type == "code"] == list(range(1, 10))
    broken = copy.deepcopy(ran)
    broken.cells[2].source = "1 / 0"
    write_notebook(broken, path)
    before = path.read_bytes()
    assert main(["course", "run", str(path)]) == 1
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert path.read_bytes() == before


def _nbgrader_student_version(nb):
    """The student version nbgrader's own preprocessors make (what ``generate_assignment`` runs)."""
    preprocessors = pytest.importorskip("nbgrader.preprocessors")
    nb = copy.deepcopy(nb)
    for step in (preprocessors.ClearSolutions(), preprocessors.ClearOutput(), preprocessors.ClearHiddenTests()):
        nb, _ = step.preprocess(nb, {})
    return nb


SOURCES = sorted(FIXTURES.glob("solutions/*.ipynb")) + sorted(ROOT.glob("solutions/*.ipynb"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.parent.name}-{p.stem}")
def test_exercise_matches_nbgrader_cell_by_cell(path):
    solution = read_notebook(path)
    theirs = _nbgrader_student_version(solution)
    ours = make_exercise(solution)
    assert len(ours.cells) == len(theirs.cells)
    for index, (mine, reference) in enumerate(zip(ours.cells, theirs.cells)):
        assert (mine.cell_type, mine.source) == (reference.cell_type, reference.source), f"cell {index}"
        if mine.cell_type == "code":
            assert mine.outputs == reference.outputs == [] and mine.execution_count is reference.execution_count
        assert mine.metadata.get("nbgrader") == reference.metadata.get("nbgrader"), f"cell {index}"
    json.loads(dumps_notebook(ours))  # and ours is plain JSON


SANITIZE_CASES = [
    ("<Figure at 0x7f3a2c1b9d90>", "<Figure at 0xADDRESS>"),
    ("100%|██████████| 50/50 [00:03<00:00, 14.2it/s]", "PROGRESS"),
    ("meta-training took 12.3 s", "meta-training took DURATION"),
    ("speed: 250.4 meta-iterations/s", "speed: RATE"),
    ("CPU times: user 1.2 s, sys: 30 ms", "TIMING"),
    ("saved to /tmp/pytest-7/run/checkpoint.pt", "saved to PATH"),
    ("  File /work/main/.venv/lib/python3.11/site-packages/torch/nn.py", "  File SITE-PACKAGES/torch/nn.py"),
    ("MSE after 5 steps: 0.38, amplitude 2.5", "MSE after 5 steps: 0.38, amplitude 2.5"),  # results are kept
]


@pytest.mark.parametrize("text, expected", SANITIZE_CASES)
def test_nbval_sanitize_patterns(text, expected):
    import re

    nbval_plugin = pytest.importorskip("nbval.plugin")
    patterns = nbval_plugin.get_sanitize_patterns((Path(__file__).parent / "nbval_sanitize.cfg").read_text())
    assert len(patterns) == 10
    for regex, replace in patterns:  # nbval applies them in file order with re.sub
        text = re.sub(regex, replace, text)
    assert text == expected


def test_check_names_notebook_metadata_and_layout_differences(course):
    solutions, exercises = course
    build_exercises(solutions, exercises)
    path = exercises / NAME
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data, indent=2))  # same notebook, another editor's layout
    messages = [str(p) for p in check_exercises(solutions, exercises)]
    assert len(messages) == 1 and messages[0].startswith(str(path)) and "JSON layout" in messages[0]
    data["metadata"]["kernelspec"]["display_name"] = "My Python"
    path.write_text(json.dumps(data, indent=1))
    messages = [str(p) for p in check_exercises(solutions, exercises)]
    assert len(messages) == 1 and "notebook metadata differs (keys: kernelspec)" in messages[0]
