"""Building ``exercises/`` from ``solutions/``, checking the two are in sync, and validating a solution notebook.

``metalearn-edu course build`` calls :func:`build_exercises`, ``metalearn-edu course check`` calls
:func:`check_exercises`; both validate every solution first (:func:`validate_solution`). The cell-level
operations they use (markers, stubs, reading and writing notebooks) live in :mod:`metalearn_edu.course.notebooks`.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from metalearn_edu.course.notebooks import (BUILD_HINT, GRADE_ID_PATTERN, HIDDEN_TEST_MARKERS, SOLUTION_MARKERS, CourseError,
                                            MarkerError, Problem, cell_source, dumps_notebook, find_notebooks, grade_id_of,
                                            is_answer_cell, is_test_cell, make_exercise, marker_regions, nbgrader_metadata,
                                            parse_notebook, read_notebook, write_notebook)

__all__ = ["build_exercises", "check_exercises", "validate_solution"]


def validate_solution(nb: NotebookNode, name: str) -> list[Problem]:
    """Problems that make a solution notebook unusable as an nbgrader source (empty list if none).

    Checks: balanced, non-nested markers; solution regions only in ``solution`` cells and hidden
    tests only in ``grade`` cells; every nbgrader cell has a valid, unique ``grade_id``; graded
    cells have ``points`` > 0; the notebook passes the nbformat schema.
    """
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.get("cells", [])):
        meta = nbgrader_metadata(cell)
        grade_id = grade_id_of(cell)

        def report(message: str) -> None:
            problems.append(Problem(name, message, index, grade_id))

        source = cell_source(cell)
        for markers, allowed, role in (
            (SOLUTION_MARKERS, is_answer_cell(cell), "an answer cell (nbgrader solution=true)"),
            (HIDDEN_TEST_MARKERS, bool(meta.get("grade")), "a graded test cell (nbgrader grade=true)"),
        ):
            try:
                regions = marker_regions(source, markers)
            except MarkerError as err:
                report(f"unbalanced markers: {err}")
                continue
            if regions and not allowed:
                report(f"{markers[0]!r} region in a cell that is not {role}; set its nbgrader metadata")
        if any(meta.get(flag) for flag in ("grade", "solution", "locked")):
            if grade_id is None:
                report("nbgrader cell without a grade_id")
            elif not GRADE_ID_PATTERN.match(grade_id):
                report("grade_id may only contain letters, digits, '_' and '-'")
            elif grade_id in seen:
                report(f"duplicate grade_id (also used by cell index {seen[grade_id]})")
            else:
                seen[grade_id] = index
        if meta:
            absent = [key for key in ("grade", "solution", "locked", "schema_version") if key not in meta]
            if absent:
                report("nbgrader metadata lacks " + ", ".join(repr(k) for k in absent))
        if meta.get("grade"):
            points = meta.get("points")
            if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
                report(f"graded cell needs nbgrader points > 0, got {points!r}")
        if cell.get("cell_type") == "markdown" and not meta.get("task") and bool(meta.get("grade")) != bool(meta.get("solution")):
            report("a markdown answer must be both grade=true and solution=true (manually graded), as nbgrader requires")
        if is_test_cell(cell) and cell.get("cell_type") == "code" and not source.strip():
            report("graded test cell has no code")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nbformat.validate(copy.deepcopy(nb))
        except nbformat.ValidationError as err:
            problems.append(Problem(name, f"not a valid nbformat 4 notebook: {err.message}"))
    return problems


def _load_solutions(solutions_dir: str | Path) -> tuple[dict[str, NotebookNode], list[Problem]]:
    """Read and validate every solution notebook; returns {file name: notebook} and the problems."""
    notebooks: dict[str, NotebookNode] = {}
    problems: list[Problem] = []
    for path in find_notebooks(solutions_dir, "--solutions"):
        try:
            nb = read_notebook(path)
        except ValueError as err:
            problems.append(Problem(str(path), str(err)))
            continue
        problems.extend(validate_solution(nb, str(path)))
        notebooks[path.name] = nb
    return notebooks, problems


def build_exercises(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises") -> list[Path]:
    """Write ``exercises/<name>`` for every ``solutions/<name>``; returns the files that changed.

    Raises :class:`CourseError` (nothing written) when a solution notebook has problems.
    """
    notebooks, problems = _load_solutions(solutions_dir)
    if problems:
        raise CourseError(problems)
    written = []
    for name, nb in notebooks.items():
        target = Path(exercises_dir) / name
        if write_notebook(make_exercise(nb), target):
            written.append(target)
    return written


def _cell_differences(path: Path, actual: NotebookNode, expected: NotebookNode) -> list[Problem]:
    """Problems naming each cell where an exercise on disk differs from the generated one."""
    problems = []
    actual_cells, expected_cells = actual["cells"], expected["cells"]
    for index, (have, want) in enumerate(zip(actual_cells, expected_cells)):
        differing = [key for key in ("cell_type", "source", "outputs", "execution_count", "metadata", "attachments", "id")
                     if have.get(key) != want.get(key)]
        if differing:
            what = " and ".join(differing)
            verb = "differs" if len(differing) == 1 and not what.endswith("s") else "differ"
            problems.append(Problem(str(path), f"{what} {verb} from the generated exercise; {BUILD_HINT}",
                                    index, grade_id_of(want) or grade_id_of(have)))
    if len(actual_cells) != len(expected_cells):
        problems.append(Problem(str(path), f"has {len(actual_cells)} cells, the generated exercise has "
                                           f"{len(expected_cells)}; {BUILD_HINT}"))
    meta_have, meta_want = actual.get("metadata", {}), expected.get("metadata", {})
    changed_keys = sorted(k for k in set(meta_have) | set(meta_want) if meta_have.get(k) != meta_want.get(k))
    if changed_keys:
        problems.append(Problem(str(path), f"notebook metadata differs (keys: {', '.join(changed_keys)}); {BUILD_HINT}"))
    if (actual.get("nbformat"), actual.get("nbformat_minor")) != (expected.get("nbformat"), expected.get("nbformat_minor")):
        problems.append(Problem(str(path), f"nbformat version {actual.get('nbformat')}.{actual.get('nbformat_minor')} "
                                           f"differs from {expected.get('nbformat')}.{expected.get('nbformat_minor')}; "
                                           f"{BUILD_HINT}"))
    if not problems:
        problems.append(Problem(str(path), f"same content but not the bytes 'course build' writes (JSON layout, key "
                                           f"order, indentation or final newline); {BUILD_HINT}"))
    return problems


def check_exercises(solutions_dir: str | Path = "solutions", exercises_dir: str | Path = "exercises") -> list[Problem]:
    """Every reason ``exercises/`` is not exactly what ``course build`` would write (empty list if in sync).

    Also returns the validation problems of the solution notebooks.
    """
    notebooks, problems = _load_solutions(solutions_dir)
    exercises_dir = Path(exercises_dir)
    existing = {p.name: p for p in find_notebooks(exercises_dir, "--exercises")}
    for name, nb in notebooks.items():
        path = exercises_dir / name
        if name not in existing:
            problems.append(Problem(str(path), f"is missing; {BUILD_HINT}"))
            continue
        try:
            expected = make_exercise(nb)
        except MarkerError:
            continue  # already reported by validation
        text = path.read_text(encoding="utf-8")
        if text == dumps_notebook(expected):
            continue
        try:
            actual = parse_notebook(text, str(path))
        except ValueError as err:
            problems.append(Problem(str(path), f"{err}; {BUILD_HINT}"))
            continue
        problems.extend(_cell_differences(path, actual, expected))
    for name, path in existing.items():
        if name not in notebooks:
            problems.append(Problem(str(path), f"has no source notebook {str(Path(solutions_dir) / name)!r}; "
                                               "delete it or add the solution"))
    return problems
