"""The autograder: rebuild a submission with the instructor's tests, execute it safely, score it.

A submission is matched to its source notebook in ``solutions/`` by file name. The graded notebook
takes the student's cells, but every instructor cell (autograded test cell, or locked non-answer
cell, matched by ``grade_id``) is replaced by the solution's version, hidden tests included; those
missing from the submission are put back next to the grade_ids that surround them in the source.
Editing or deleting a test cell therefore cannot raise a score.

The graded notebook runs in a fresh kernel in the solution's folder with ``METALEARN_EDU_FAST=1``,
errors allowed, a per-cell and a total time limit. A cell that times out is interrupted; a kernel
that dies or stays busy is restarted, the earlier cells are replayed (skipping the ones that killed
or hung it), and grading goes on. A test cell earns its points iff it runs without error.
Submission files are only read, never written.
"""

from __future__ import annotations

import copy
import logging
import math
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from metalearn_edu.course.notebooks import (
    CourseError,
    cell_source,
    clear_outputs,
    execution_environment,
    grade_id_of,
    is_answer_cell,
    is_instructor_cell,
    is_test_cell,
    parse_notebook,
    read_notebook,
    validate_solution,
)

DEFAULT_CELL_TIMEOUT = 120.0
DEFAULT_TOTAL_TIMEOUT = 1800.0
_PROBE_TIMEOUT = 5  # seconds a kernel has to answer after an interrupt before it is restarted
_TIMEOUT_MARK = "metalearn_edu_timed_out"  # set in the reply nbclient makes up for an interrupted cell

_quiet_log = logging.getLogger("metalearn_edu.course.grader.kernel")
_quiet_log.addHandler(logging.NullHandler())
_quiet_log.propagate = False  # nbclient logs every timeout and dead kernel as an error; we report them ourselves


@dataclass(frozen=True)
class CellOutcome:
    """How one cell ended: ``ok``, ``error``, ``timeout``, ``died``, ``not_run`` or ``skipped`` (not code)."""

    status: str
    reason: str = ""


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


# --- executing ----------------------------------------------------------------------------------------


class _OutOfTime(Exception):
    pass


def error_reason(ename: str, evalue: str, *, max_chars: int = 300) -> str:
    """One line saying why a cell failed: the error type and the last line of its message.

    A multi-line message keeps its first line too (``first | last``): a teaching check puts
    "expected ..., got ..." first and the hint last, and an instructor wants both.
    """
    lines = [line.strip() for line in evalue.strip().splitlines() if line.strip()]
    if not lines and ename == "NotImplementedError":
        return "NotImplementedError (a '# YOUR CODE HERE' stub not answered yet?)"
    if not lines:
        return ename
    text = lines[0] if len(lines) == 1 else f"{lines[0]} | {lines[-1]}"
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    return f"{ename}: {text}"


class _Executor:
    """Runs a notebook's code cells once each, surviving timeouts and kernel deaths (see module docstring)."""

    def __init__(self, nb: NotebookNode, cwd: Path, env: dict[str, str] | None, cell_timeout: float,
                 total_timeout: float, kernel_name: str, max_restarts: int) -> None:
        self.nb, self.env = nb, env
        self.cell_timeout, self.total_timeout, self.max_restarts = cell_timeout, total_timeout, max_restarts
        self.code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
        self.outcomes: dict[int, CellOutcome] = {}
        self.fatal: set[int] = set()  # cells that killed or hung the kernel: never replayed
        self.replies: dict[int, dict] = {}
        self.client = NotebookClient(
            nb, kernel_name=kernel_name, allow_errors=True, interrupt_on_timeout=True, record_timing=False,
            shutdown_kernel="immediate", resources={"metadata": {"path": str(cwd)}}, log=_quiet_log,
            iopub_timeout=2,  # seconds to wait for the last outputs after a reply (scores come from replies)
        )
        self.client.on_cell_executed = lambda cell, cell_index, execute_reply: self.replies.__setitem__(
            cell_index, execute_reply)

    def run(self) -> list[CellOutcome]:
        deadline = time.monotonic() + self.total_timeout
        done, restarts, why_stopped = 0, 0, ""
        while done < len(self.code_cells):
            if restarts > self.max_restarts:
                why_stopped = f"not run: the kernel had to be restarted more than {self.max_restarts} times"
                break
            try:
                done = self._session(done, deadline)
            except _OutOfTime:
                why_stopped = f"not run: the notebook used up its total time limit of {self.total_timeout:g} s"
                break
            except Exception as err:  # the kernel did not start or the client failed: grade what we have
                why_stopped = f"not run: the kernel failed ({type(err).__name__}: {err})"
                break
            restarts += 1
        for index in self.code_cells[done:]:
            self.outcomes.setdefault(index, CellOutcome("not_run", why_stopped))
        return [self.outcomes.get(i, CellOutcome("skipped")) for i in range(len(self.nb.cells))]

    def _session(self, start: int, deadline: float) -> int:
        """Start a kernel, replay cells before ``start``, run the rest; returns how many cells are done."""
        with self.client.setup_kernel(env=self.env, stderr=subprocess.DEVNULL):
            self.client.reset_execution_trackers()
            for index in self.code_cells[:start]:
                if index not in self.fatal:
                    status, _ = self._execute(copy.deepcopy(self.nb.cells[index]), index, deadline)
                    if status in ("died", "timeout"):
                        self.fatal.add(index)
                        if status == "died" or not self._responsive():
                            return start
            for position in range(start, len(self.code_cells)):
                index = self.code_cells[position]
                status, self.outcomes[index] = self._execute(self.nb.cells[index], index, deadline)
                if status in ("died", "timeout"):
                    self.fatal.add(index)
                    if status == "died" or not self._responsive():
                        return position + 1
            return len(self.code_cells)

    def _execute(self, cell: NotebookNode, index: int, deadline: float) -> tuple[str, CellOutcome]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _OutOfTime
        limit = max(1, math.ceil(min(self.cell_timeout, remaining)))
        status, reason = self._run_one(cell, index, limit)
        if status == "timeout":
            reason = f"TimeoutError: the cell ran longer than {limit} s and was interrupted"
        elif status == "died":
            reason = "DeadKernelError: the kernel died while running this cell (os._exit, a crash or out of memory)"
        return status, CellOutcome(status, reason)

    def _run_one(self, cell: NotebookNode, index: int, limit: int, *, store_history: bool = True) -> tuple[str, str]:
        """Execute one cell; on timeout nbclient interrupts the kernel and hands back a marked error reply.

        nbclient stores the executed cell back into ``nb.cells[index]``, so ``index`` must be the
        cell's own position in the notebook.
        """
        self.client.timeout = limit
        self.client.error_on_timeout = {"ename": "TimeoutError", "evalue": f"over {limit} s", _TIMEOUT_MARK: True}
        self.replies.pop(index, None)
        try:
            self.client.execute_cell(cell, index, store_history=store_history)
        except DeadKernelError:
            return "died", ""
        content = self.replies.get(index, {}).get("content", {})
        if content.get(_TIMEOUT_MARK):
            return "timeout", ""
        if content.get("status") == "ok":
            return "ok", ""
        if content.get("status") == "error":
            return "error", error_reason(str(content.get("ename", "Error")), str(content.get("evalue", "")))
        return "error", f"the kernel answered {content.get('status', 'nothing')!r}"

    def _responsive(self) -> bool:
        """After a timeout: does the kernel answer a trivial cell within a few seconds?

        The probe is appended as a scratch cell and removed again: nbclient writes an executed cell
        back at its index, so running it under any existing index would replace that cell.
        """
        probe_limit = max(1, math.ceil(min(_PROBE_TIMEOUT, self.cell_timeout)))
        self.nb.cells.append(nbformat.v4.new_code_cell("pass"))
        try:
            probe_index = len(self.nb.cells) - 1
            return self._run_one(self.nb.cells[probe_index], probe_index, probe_limit, store_history=False)[0] == "ok"
        except Exception:  # the client failed: the caller restarts the kernel
            return False
        finally:
            self.nb.cells.pop()


def execute_cells(
    nb: NotebookNode,
    *,
    cwd: str | Path,
    env: dict[str, str] | None = None,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT,
    kernel_name: str = "python3",
    max_restarts: int = 3,
) -> list[CellOutcome]:
    """Execute ``nb`` in place (outputs filled) in a fresh kernel; one :class:`CellOutcome` per cell.

    Never raises for anything the notebook does: errors, timeouts, kernel deaths and a failed
    kernel start all become outcomes. ``env`` defaults to fast mode.
    """
    if cell_timeout <= 0 or total_timeout <= 0:
        raise ValueError(f"cell_timeout and total_timeout must be > 0 s, got {cell_timeout} and {total_timeout}")
    env = execution_environment(fast=True) if env is None else env
    executor = _Executor(nb, Path(cwd).resolve(), env, cell_timeout, total_timeout, kernel_name, max_restarts)
    return executor.run()


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
        grade.questions, _ = grade_notebook(solution, submission, cwd=solution_path.parent,
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
