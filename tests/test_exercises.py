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
At the end of the module a table (graded checks failing on the blank / passing on the solution, per
notebook) is written to the terminal and recorded as a JUnit property, so CI output shows both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metalearn_edu.course.kernel import execute_cells, execution_environment
from metalearn_edu.course.build import check_exercises
from metalearn_edu.course.notebooks import (
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


@pytest.fixture(scope="module")
def scoreboard(request):
    """Per notebook: (graded checks failing on the blank, passing on the solution, graded checks in all).

    Filled by the tests below; printed as a table when the module's tests are done.
    """
    board: dict[str, dict[str, int]] = {}
    yield board
    lines = _scoreboard_lines(board)
    if not lines:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)


def _scoreboard_lines(board: dict[str, dict[str, int]]) -> list[str]:
    """The table: one row per notebook, '-' where that run was not part of this session."""
    if not board:
        return []
    width = max(len(name) for name in board) + 2
    head = f"{'notebook':<{width}}{'graded checks':>14}{'fail on blank':>16}{'pass on solution':>19}"
    rows = ["course notebooks in fast mode (a graded check must fail on the blank exercise and pass on the solution)",
            head, "-" * len(head)]
    for name in sorted(board):
        row = board[name]
        total = row.get("checks")
        blank = f"{row['blank_fail']}/{total}" if "blank_fail" in row else "-"
        solved = f"{row['solution_pass']}/{total}" if "solution_pass" in row else "-"
        rows.append(f"{name:<{width}}{total if total is not None else '-':>14}{blank:>16}{solved:>19}")
    return rows


def _record(board: dict, solution: Path, key: str, nb, outcomes, passing: bool, record_property) -> None:
    """Count the graded check cells that pass (``passing``) or fail, for the scoreboard and JUnit XML."""
    statuses = [o.status for c, o in zip(nb.cells, outcomes) if is_test_cell(c)]
    count = sum((s == "ok") == passing for s in statuses)
    name = solution.stem if solution.parent.parent.name != "course" else f"fixture-{solution.stem}"
    board.setdefault(name, {})["checks"] = len(statuses)
    board[name][key] = count
    record_property(key, f"{count}/{len(statuses)}")


def _label(index: int, cell) -> str:
    grade_id = grade_id_of(cell)
    return f"cell index {index}" + (f" (grade_id {grade_id!r})" if grade_id else "")


@pytest.mark.parametrize("solution, exercises_dir", CASES)
def test_exercise_is_in_sync(solution, exercises_dir):
    problems = [p for p in check_exercises(solution.parent, exercises_dir) if Path(p.notebook).name == solution.name]
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("solution, exercises_dir", CASES)
def test_blank_exercise_fails_only_because_of_its_blanks(solution, exercises_dir, executed, scoreboard,
                                                         record_property):
    nb, outcomes = executed("exercise", solution, exercises_dir)
    _record(scoreboard, solution, "blank_fail", nb, outcomes, False, record_property)
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
def test_solution_passes_every_graded_check(solution, exercises_dir, executed, scoreboard, record_property):
    nb, outcomes = executed("solution", solution, exercises_dir)
    _record(scoreboard, solution, "solution_pass", nb, outcomes, True, record_property)
    problems = [f"{solution.name}: {_label(i, c)}: {o.reason}"
                for i, (c, o) in enumerate(zip(nb.cells, outcomes)) if o.status not in ("ok", "skipped")]
    assert not problems, "\n".join(problems)
    assert any(is_test_cell(c) for c in nb.cells), f"{solution.name} has no graded check cell"
