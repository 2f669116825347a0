"""The autograder: rebuild a submission with the instructor's tests, execute it safely, score it.

A submission is matched to its source notebook in ``solutions/`` by file name. The graded notebook
takes the student's cells, but every instructor cell (autograded test cell, or locked non-answer
cell, matched by ``grade_id``) is replaced by the solution's version, hidden tests included; those
missing from the submission are put back next to the grade_ids that surround them in the source.
Editing or deleting a test cell therefore cannot raise a score.

The graded notebook runs in a fresh kernel, in an empty temporary folder, with ``METALEARN_EDU_FAST=1``,
errors allowed, a per-cell and a total time limit (execution survives hangs and kernel deaths: see
``kernel.py``). A test cell earns its points iff it runs without error.
Submission files are only read, never written.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from metalearn_edu.course.build import validate_solution
from metalearn_edu.course.notebooks import (
    CourseError,
    cell_source,
    clear_outputs,
    grade_id_of,
    is_answer_cell,
    is_instructor_cell,
    is_test_cell,
    parse_notebook,
    read_notebook,
)
from metalearn_edu.course.kernel import DEFAULT_CELL_TIMEOUT, DEFAULT_TOTAL_TIMEOUT, CellOutcome, error_reason, execute_cells

__all__ = ["CellOutcome", "Question", "QuestionScore", "SubmissionGrade", "assemble_graded_notebook", "error_reason",
           "execute_cells", "grade_notebook", "grade_paths", "grade_submission", "questions_of"]


@dataclass(frozen=True)
class Question:
    """An autograded test cell of a solution, and the code answer cells it checks."""

    grade_id: str
    points: float
    answer_ids: tuple[str, ...]


@dataclass
class QuestionScore:
    grade_id: str
    points_earned: float
    points_possible: float
    reason: str = ""  # why points were lost; empty when earned


@dataclass
class SubmissionGrade:
    submission: str
    assignment: str | None
    questions: list[QuestionScore] = field(default_factory=list)
    error: str = ""  # a problem with the submission as a whole (unreadable, no matching solution)

    @property
    def points_earned(self) -> float:
        return sum(q.points_earned for q in self.questions)

    @property
    def points_possible(self) -> float:
        return sum(q.points_possible for q in self.questions)


# --- building the graded notebook -------------------------------------------------------------------


def questions_of(solution: NotebookNode) -> list[Question]:
    """The autograded questions of a solution notebook, in order.

    A question's answers are the code answer cells since the previous test cell.
    """
    questions, answers = [], []
    for cell in solution.cells:
        grade_id = grade_id_of(cell)
        if grade_id and is_answer_cell(cell) and cell.cell_type == "code":
            answers.append(grade_id)
        elif grade_id and is_test_cell(cell) and cell.cell_type == "code":
            questions.append(Question(grade_id, float(cell.metadata.nbgrader["points"]), tuple(answers)))
            answers = []
    return questions


def _clean_cell(cell: object) -> NotebookNode | None:
    """A fresh, well-formed copy of a (possibly hand-edited) submission cell; None if unusable."""
    if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
        return None
    metadata = cell.get("metadata")
    metadata = copy.deepcopy(metadata) if isinstance(metadata, dict) else {}
    factory = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
               "raw": nbformat.v4.new_raw_cell}[cell["cell_type"]]
    return factory(source=cell_source(cell), metadata=metadata)


def _insertion_point(cells: list[NotebookNode], source_cells: list[NotebookNode], source_index: int) -> int:
    """Where a missing source cell goes: after the nearest preceding grade_id present, else before the next one."""
    positions: dict[str, int] = {}
    for position, cell in enumerate(cells):
        positions.setdefault(grade_id_of(cell) or "", position)
    positions.pop("", None)
    for j in range(source_index - 1, -1, -1):
        if grade_id_of(source_cells[j]) in positions:
            return positions[grade_id_of(source_cells[j])] + 1
    for j in range(source_index + 1, len(source_cells)):
        if grade_id_of(source_cells[j]) in positions:
            return positions[grade_id_of(source_cells[j])]
    return len(cells)


def assemble_graded_notebook(solution: NotebookNode, submission: NotebookNode) -> NotebookNode:
    """The notebook to execute: the student's cells with every instructor cell taken from ``solution``.

    Outputs are cleared; a duplicated instructor cell is kept once; missing ones are inserted.
    """
    instructor = {grade_id_of(cell): cell for cell in solution.cells if is_instructor_cell(cell)}
    cells: list[NotebookNode] = []
    placed: set[str] = set()
    for raw in submission.get("cells", []):
        cell = _clean_cell(raw)
        if cell is None:
            continue
        grade_id = grade_id_of(cell)
        if grade_id in instructor:
            if grade_id in placed:
                continue
            cell = copy.deepcopy(instructor[grade_id])
            placed.add(grade_id)
        clear_outputs(cell)
        cells.append(cell)
    for source_index, source_cell in enumerate(solution.cells):
        grade_id = grade_id_of(source_cell)
        if grade_id in instructor and grade_id not in placed:
            cell = copy.deepcopy(source_cell)
            clear_outputs(cell)
            cells.insert(_insertion_point(cells, solution.cells, source_index), cell)
            placed.add(grade_id)
    graded = copy.deepcopy(solution)
    graded.cells = cells
    return graded


# --- grading ------------------------------------------------------------------------------------------


def grade_notebook(solution: NotebookNode, submission: NotebookNode, *, cwd: str | Path,
                   cell_timeout: float = DEFAULT_CELL_TIMEOUT,
                   total_timeout: float = DEFAULT_TOTAL_TIMEOUT) -> tuple[list[QuestionScore], NotebookNode]:
    """Score ``submission`` against ``solution``; returns the scores and the executed graded notebook."""
    questions = questions_of(solution)
    present = {grade_id_of(cell) for cell in submission.get("cells", []) if isinstance(cell, dict)}
    missing = {q.grade_id: [a for a in q.answer_ids if a not in present] for q in questions}
    graded = assemble_graded_notebook(solution, submission)
    if not submission.get("cells"):  # nothing of the student's to run: not even answer-free checks score
        return [QuestionScore(q.grade_id, 0.0, q.points, "the submission has no cells") for q in questions], graded
    outcomes: list[CellOutcome] = [CellOutcome("not_run")] * len(graded.cells)
    if any(not missing[q.grade_id] for q in questions):
        outcomes = execute_cells(graded, cwd=cwd, cell_timeout=cell_timeout, total_timeout=total_timeout)
    position = {}
    for index, cell in enumerate(graded.cells):
        position.setdefault(grade_id_of(cell), index)
    scores = []
    for q in questions:
        outcome = outcomes[position[q.grade_id]]
        if missing[q.grade_id]:
            reason = "answer cell " + ", ".join(repr(a) for a in missing[q.grade_id]) + " is missing from the submission"
        elif outcome.status in ("ok", "skipped"):
            reason = ""
        else:
            reason = outcome.reason or outcome.status
        scores.append(QuestionScore(q.grade_id, 0.0 if reason else q.points, q.points, reason))
    return scores, graded


def collect_submissions(paths: Iterable[str | Path]) -> list[Path]:
    """The notebook files named by ``paths`` (files, or folders searched recursively), in order, once each."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"PATH: {str(path)!r} is neither a notebook file nor a folder")
    unique = {p.resolve(): p for p in reversed(found)}
    return sorted(unique.values(), key=found.index)


def solution_for(submission: Path, solutions_dir: str | Path, assignment: str | None = None) -> Path:
    """The solution notebook a submission is graded against: same file name, or ``assignment``."""
    name = assignment or submission.name
    if not name.endswith(".ipynb"):
        name += ".ipynb"
    return Path(solutions_dir) / name


def grade_submission(path: Path, solution_path: Path, solution: NotebookNode, *,
                     cell_timeout: float = DEFAULT_CELL_TIMEOUT,
                     total_timeout: float = DEFAULT_TOTAL_TIMEOUT) -> SubmissionGrade:
    """Grade one submission file against its (validated) solution; never raises for a bad submission."""
    grade = SubmissionGrade(str(path), solution_path.stem)
    try:
        submission = parse_notebook(path.read_bytes().decode("utf-8"), str(path))
    except (ValueError, OSError) as err:  # UnicodeDecodeError is a ValueError
        grade.error = str(err)
        grade.questions = [QuestionScore(q.grade_id, 0.0, q.points, grade.error) for q in questions_of(solution)]
        return grade
    try:
        # A fresh empty working folder per submission: whatever the student's code writes lands
        # there and is deleted, never in solutions/ or next to another submission.
        with tempfile.TemporaryDirectory(prefix="metalearn-edu-grade-") as workdir:
            grade.questions, _ = grade_notebook(solution, submission, cwd=workdir,
                                                cell_timeout=cell_timeout, total_timeout=total_timeout)
    except Exception as err:  # never let one submission stop the batch
        grade.error = f"grading failed: {type(err).__name__}: {err}"
        grade.questions = [QuestionScore(q.grade_id, 0.0, q.points, grade.error) for q in questions_of(solution)]
    return grade


def grade_paths(
    paths: Iterable[str | Path],
    solutions_dir: str | Path = "solutions",
    *,
    assignment: str | None = None,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    on_graded: Callable[[SubmissionGrade], None] | None = None,
) -> list[SubmissionGrade]:
    """Grade every submission under ``paths``; ``on_graded`` is called after each one.

    Raises FileNotFoundError for a missing PATH and :class:`CourseError` when a needed solution
    notebook is invalid (both before anything is graded).
    """
    if not Path(solutions_dir).is_dir():
        raise ValueError(f"--solutions: folder {str(solutions_dir)!r} does not exist")
    submissions = collect_submissions(paths)
    solutions: dict[Path, NotebookNode] = {}
    for submission in submissions:
        solution_path = solution_for(submission, solutions_dir, assignment)
        if solution_path.is_file() and solution_path not in solutions:
            solutions[solution_path] = read_notebook(solution_path)
            problems = validate_solution(solutions[solution_path], str(solution_path))
            if problems:
                raise CourseError(problems)
    grades = []
    for submission in submissions:
        solution_path = solution_for(submission, solutions_dir, assignment)
        if solution_path in solutions:
            grade = grade_submission(submission, solution_path, solutions[solution_path],
                                     cell_timeout=cell_timeout, total_timeout=total_timeout)
        else:
            grade = SubmissionGrade(str(submission), None, error=(
                f"no solution notebook {str(solution_path)!r} for this file name; name it with --assignment"))
        grades.append(grade)
        if on_graded is not None:
            on_graded(grade)
    return grades
