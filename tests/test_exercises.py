"""Every solution notebook against its exercise: in sync, blanks fail every check, the solution passes.

Generic over ``solutions/*.ipynb`` (whatever exists; the real ones are skipped while there are
none) plus the tooling's own fixture. For each notebook:

(a) ``exercises/<name>`` is exactly what ``metalearn-edu course build`` generates;
(b) the exercise, run in fast mode with errors allowed, fails only because of its blanks: a
    non-graded cell may only raise the ``NotImplementedError`` of a ``# YOUR CODE HERE`` stub, and
    every graded check cell fails;
(c) the solution, run in fast mode, runs without any error, so every graded check passes.

(b) and (c) together show each check fails *because of* the blanks: the same check cell passes
when the blanks hold the solution. Each notebook is executed once per session (module fixture).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metalearn_edu.course.grader import execute_cells
from metalearn_edu.course.notebooks import (
    check_exercises,
    execution_environment,
    grade_id_of,
    is_test_cell,
    make_exercise,
    read_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "course"
CELL_TIMEOUT = 900.0  # seconds; fast mode keeps every cell far below this
TOTAL_TIMEOUT = 3600.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _cases() -> list:
    cases = [pytest.param(p, FIXTURES / "exercises", id=f"fixture-{p.stem}")
             for p in sorted((FIXTURES / "solutions").glob("*.ipynb"))]
    real = sorted((ROOT / "solutions").glob("*.ipynb"))
    cases += [pytest.param(p, ROOT / "exercises", id=p.stem) for p in real]
    if not real:
        cases.append(pytest.param(None, None, id="solutions", marks=pytest.mark.skip(reason="no solutions/*.ipynb yet")))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def executed():
    """Run a notebook once per session in fast mode; returns (executed notebook, cell outcomes)."""
    cache: dict[tuple[str, Path], tuple] = {}

    def run(kind: str, solution: Path, exercises_dir: Path):
        key = (kind, solution)
        if key not in cache:
            nb = read_notebook(solution)
            cwd = solution.parent
            if kind == "exercise":
                nb = make_exercise(nb)
                cwd = exercises_dir if exercises_dir.is_dir() else solution.parent
            outcomes = execute_cells(nb, cwd=cwd, env=execution_environment(fast=True),
                                     cell_timeout=CELL_TIMEOUT, total_timeout=TOTAL_TIMEOUT)
            cache[key] = (nb, outcomes)
        return cache[key]

    return run


def _label(index: int, cell) -> str:
    grade_id = grade_id_of(cell)
    return f"cell index {index}" + (f" (grade_id {grade_id!r})" if grade_id else "")


@pytest.mark.parametrize("solution, exercises_dir", CASES)
def test_exercise_is_in_sync(solution, exercises_dir):
    problems = [p for p in check_exercises(solution.parent, exercises_dir) if Path(p.notebook).name == solution.name]
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("solution, exercises_dir", CASES)
def test_blank_exercise_fails_only_because_of_its_blanks(solution, exercises_dir, executed):
    nb, outcomes = executed("exercise", solution, exercises_dir)
    problems, graded = [], 0
    for index, (cell, outcome) in enumerate(zip(nb.cells, outcomes)):
        if outcome.status == "skipped":
            continue
        where = f"{solution.name}: {_label(index, cell)}"
        if is_test_cell(cell):
            graded += 1
            if outcome.status == "ok":
                problems.append(f"{where}: this graded check passes on the blank exercise")
            elif outcome.status != "error":
                problems.append(f"{where}: {outcome.reason}")
        elif outcome.status == "error":
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            traceback = _ANSI.sub("", "\n".join(errors[0].get("traceback", []))) if errors else ""
            from_blank = outcome.reason.startswith("NotImplementedError") and (
                not errors or "raise NotImplementedError()" in traceback)
            if not from_blank:
                problems.append(f"{where}: {outcome.reason} (only a '# YOUR CODE HERE' stub may raise here)")
        elif outcome.status != "ok":
            problems.append(f"{where}: {outcome.reason}")
    assert graded > 0, f"{solution.name} has no graded check cell"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("solution, exercises_dir", CASES)
def test_solution_passes_every_graded_check(solution, exercises_dir, executed):
    nb, outcomes = executed("solution", solution, exercises_dir)
    problems = [f"{solution.name}: {_label(i, c)}: {o.reason}"
                for i, (c, o) in enumerate(zip(nb.cells, outcomes)) if o.status not in ("ok", "skipped")]
    assert not problems, "\n".join(problems)
    assert any(is_test_cell(c) for c in nb.cells), f"{solution.name} has no graded check cell"
