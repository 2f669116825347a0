"""Course notebooks: solution markers, exercise generation, reading and writing (the build and the sync
check that use them: :mod:`metalearn_edu.course.build`).

``solutions/NN_*.ipynb`` are the source of truth (valid nbgrader source notebooks). In their cells

- lines from one containing ``BEGIN SOLUTION`` to one containing ``END SOLUTION`` are the answer:
  in the exercise they become ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (code) or
  ``YOUR ANSWER HERE`` (markdown), indented like the BEGIN line;
- lines from ``BEGIN HIDDEN TESTS`` to ``END HIDDEN TESTS`` are instructor-only checks, removed;
- a cell marked ``nbgrader.solution`` without any region is replaced by the stub as a whole.

This is what nbgrader's ``ClearSolutions`` and ``ClearHiddenTests`` do (markers are matched anywhere
in a line), so ``exercises/`` equals nbgrader's student version cell by cell. Notebooks are written
deterministically (nbformat v4 JSON, sorted keys, indent 1, trailing newline) so that
``exercises/`` can be checked in sync byte for byte.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_TEST_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)
FAST_MODE_VARIABLE = "METALEARN_EDU_FAST"
GRADE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+$")
BUILD_HINT = "run `metalearn-edu course build` to regenerate exercises/"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a notebook: where (notebook, cell index, grade_id) and what."""

    notebook: str
    message: str
    cell_index: int | None = None
    grade_id: str | None = None

    def __str__(self) -> str:
        where = self.notebook
        if self.cell_index is not None:
            where += f": cell index {self.cell_index}"
            if self.grade_id:
                where += f" (grade_id {self.grade_id!r})"
        return f"{where}: {self.message}"


class CourseError(ValueError):
    """Raised when notebooks have problems; ``problems`` lists every one found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class MarkerError(ValueError):
    """Unbalanced or nested BEGIN/END markers in a cell's source."""


# --- cells and their nbgrader metadata ------------------------------------------------------------


def nbgrader_metadata(cell: NotebookNode) -> dict[str, Any]:
    """The cell's ``metadata.nbgrader`` dict (empty when the cell is not an nbgrader cell)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def grade_id_of(cell: NotebookNode) -> str | None:
    """The cell's nbgrader ``grade_id``, or None."""
    value = nbgrader_metadata(cell).get("grade_id")
    return value if isinstance(value, str) and value else None


def is_answer_cell(cell: NotebookNode) -> bool:
    """True for a cell the student writes (``nbgrader.solution``)."""
    return bool(nbgrader_metadata(cell).get("solution", False))


def is_test_cell(cell: NotebookNode) -> bool:
    """True for an autograded test cell (``nbgrader.grade`` and not ``solution``)."""
    meta = nbgrader_metadata(cell)
    return bool(meta.get("grade", False)) and not bool(meta.get("solution", False))


def is_instructor_cell(cell: NotebookNode) -> bool:
    """True for a cell whose source the grader takes from the solution: a test cell or a locked non-answer cell."""
    meta = nbgrader_metadata(cell)
    return grade_id_of(cell) is not None and not is_answer_cell(cell) and bool(meta.get("grade") or meta.get("locked"))


def cell_source(cell: NotebookNode) -> str:
    """The cell's source as one string (sources stored as a list of lines are joined)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def clear_outputs(cell: NotebookNode) -> None:
    """Remove a code cell's outputs, execution count and nbclient timing metadata, in place."""
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    cell.get("metadata", {}).pop("execution", None)


# --- marker regions ---------------------------------------------------------------------------------


def marker_regions(source: str, markers: tuple[str, str]) -> list[tuple[int, int]]:
    """Line spans ``(begin, end)`` (0-based, inclusive) of the regions delimited by ``markers``.

    Raises :class:`MarkerError` for a nested BEGIN, an END without BEGIN or a BEGIN without END.
    """
    begin_marker, end_marker = markers
    regions: list[tuple[int, int]] = []
    begin: int | None = None
    for number, line in enumerate(source.split("\n")):
        if begin_marker in line:
            if begin is not None:
                raise MarkerError(f"line {number + 1}: {begin_marker!r} inside the region opened on line {begin + 1}")
            begin = number
        elif end_marker in line:
            if begin is None:
                raise MarkerError(f"line {number + 1}: {end_marker!r} without a matching {begin_marker!r}")
            regions.append((begin, number))
            begin = None
    if begin is not None:
        raise MarkerError(f"line {begin + 1}: {begin_marker!r} has no matching {end_marker!r}")
    return regions


def replace_regions(source: str, markers: tuple[str, str], stub: tuple[str, ...]) -> str:
    """Replace each marked region (markers included) by ``stub`` lines indented like its BEGIN line."""
    lines = source.split("\n")
    out: list[str] = []
    position = 0
    for begin, end in marker_regions(source, markers):
        out.extend(lines[position:begin])
        indent = re.match(r"\s*", lines[begin]).group(0)
        out.extend(indent + stub_line for stub_line in stub)
        position = end + 1
    out.extend(lines[position:])
    return "\n".join(out)


def exercise_cell(cell: NotebookNode) -> NotebookNode:
    """The student version of one solution cell (a copy; outputs cleared, metadata kept)."""
    student = copy.deepcopy(cell)
    source = cell_source(cell)
    stub = CODE_STUB if cell.get("cell_type") == "code" else TEXT_STUB
    if marker_regions(source, SOLUTION_MARKERS):
        source = replace_regions(source, SOLUTION_MARKERS, stub)
    elif is_answer_cell(cell):
        source = "\n".join(stub)
    source = replace_regions(source, HIDDEN_TEST_MARKERS, ())
    student["source"] = source
    clear_outputs(student)
    return student


def make_exercise(solution: NotebookNode) -> NotebookNode:
    """The exercise notebook generated from a solution notebook (a new object)."""
    exercise = copy.deepcopy(solution)
    exercise["cells"] = [exercise_cell(cell) for cell in solution.get("cells", [])]
    return exercise


# --- reading, writing, finding ----------------------------------------------------------------------


def parse_notebook(text: str, name: str) -> NotebookNode:
    """Parse nbformat-4 JSON text into a NotebookNode (sources joined), without normalising it.

    Raises ValueError naming ``name`` when the text is not JSON, not an object, not nbformat 4 or
    has no list of cells.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} is not valid notebook JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} is not a notebook: the JSON is a {type(data).__name__}, not an object")
    if data.get("nbformat") != 4:
        raise ValueError(f"{name} is not an nbformat 4 notebook (nbformat={data.get('nbformat')!r})")
    if not isinstance(data.get("cells"), list):
        raise ValueError(f"{name} has no list of cells")
    data.setdefault("metadata", {})
    data.setdefault("nbformat_minor", 4)
    try:
        return nbformat.v4.nbjson.JSONReader().to_notebook(data)  # joins line lists, as nbformat.reads does
    except Exception as err:  # e.g. a hand-edited cell that is not an object or lacks "outputs"
        raise ValueError(f"{name} is not a valid notebook ({type(err).__name__}: {err})") from None


def read_notebook(path: str | Path) -> NotebookNode:
    """Read an nbformat-4 notebook file (see :func:`parse_notebook`)."""
    path = Path(path)
    return parse_notebook(path.read_text(encoding="utf-8"), str(path))


def dumps_notebook(nb: NotebookNode) -> str:
    """Deterministic JSON text of a notebook: nbformat's own layout (sorted keys, indent 1) plus a newline."""
    return nbformat.v4.writes(nbformat.from_dict(nb)) + "\n"


def write_notebook(nb: NotebookNode, path: str | Path) -> bool:
    """Write ``nb`` to ``path`` unless the file already holds exactly that text; True if written."""
    path = Path(path)
    text = dumps_notebook(nb)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return True


def find_notebooks(folder: str | Path, argument: str = "folder") -> list[Path]:
    """The ``*.ipynb`` files directly in ``folder``, sorted; ValueError naming ``argument`` if it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{argument}: folder {str(folder)!r} does not exist")
    return sorted(p for p in folder.glob("*.ipynb") if p.is_file())
