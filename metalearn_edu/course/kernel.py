"""Executing notebooks in a fresh kernel: for the course tools and, robustly, for the grader.

:func:`run_notebook` executes a notebook top to bottom and saves it with its outputs (``course run``).
:func:`execute_cells` executes every code cell once and never raises for anything the notebook does:
a cell that times out is interrupted; a kernel that dies or stays busy is restarted, the earlier
cells are replayed (skipping the ones that killed or hung it), and execution goes on. Each cell gets
a :class:`CellOutcome`, which the grader turns into points.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from metalearn_edu.course.notebooks import FAST_MODE_VARIABLE, read_notebook, write_notebook

DEFAULT_CELL_TIMEOUT = 120.0
DEFAULT_TOTAL_TIMEOUT = 1800.0
_PROBE_TIMEOUT = 5  # seconds a kernel has to answer after an interrupt before it is restarted
_TIMEOUT_MARK = "metalearn_edu_timed_out"  # set in the reply nbclient makes up for an interrupted cell

_quiet_log = logging.getLogger("metalearn_edu.course.kernel")
_quiet_log.addHandler(logging.NullHandler())
_quiet_log.propagate = False  # nbclient logs every timeout and dead kernel as an error; we report them ourselves



@dataclass(frozen=True)
class CellOutcome:
    """How one cell ended: ``ok``, ``error``, ``timeout``, ``died``, ``not_run`` or ``skipped`` (not code)."""

    status: str
    reason: str = ""


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


def execution_environment(fast: bool) -> dict[str, str]:
    """The kernel environment: this process's, with ``METALEARN_EDU_FAST=1`` in fast mode and unset otherwise."""
    env = dict(os.environ)
    env.pop(FAST_MODE_VARIABLE, None)
    if fast:
        env[FAST_MODE_VARIABLE] = "1"
    return env


def run_notebook(
    path: str | Path,
    *,
    fast: bool = False,
    cell_timeout: float | None = None,
    on_cell_done: Any = None,
    kernel_name: str = "python3",
    save_to: str | Path | None = None,
) -> NotebookNode:
    """Execute the notebook at ``path`` top to bottom in a fresh kernel and write it back in place
    (or to ``save_to``, leaving ``path`` untouched).

    The kernel runs in the notebook's folder. Execution stops at the first error (raising
    nbclient's ``CellExecutionError``) and the file is then left untouched. ``on_cell_done(index)``
    is called after each code cell, for progress. Returns the executed notebook.
    """
    from nbclient import NotebookClient

    path = Path(path)
    nb = read_notebook(path)
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=cell_timeout,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    if on_cell_done is not None:
        client.on_cell_executed = lambda cell, cell_index, execute_reply: on_cell_done(cell_index)
    client.execute(env=execution_environment(fast), stderr=subprocess.DEVNULL)  # no kernel banner noise
    write_notebook(nb, path if save_to is None else Path(save_to))
    return nb
