#!/usr/bin/env python
"""Grade a simulated class of 20 submissions of exercise 01, good, wrong and hostile, end to end.

The submissions are built from the generated exercise ``exercises/01_maml_objective.ipynb`` and the
answers in ``solutions/``: five full solutions, blanks, classic bugs (silent FOMAML, an uphill inner
step, ignoring ``steps``), edited and deleted test cells, an infinite loop, a kernel that exits,
invalid JSON, an empty file, a notebook without cells, binary garbage. They are graded through the
``metalearn-edu grade`` command line; the script prints the per-student totals, checks each against
what that submission deserves, and exits non-zero if the grader crashed or mis-scored anyone.

Usage: python scripts/grade_class.py [--workdir DIR] [--cell-timeout S]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metalearn_edu.course.notebooks import dumps_notebook, grade_id_of, is_answer_cell, is_test_cell, make_exercise, read_notebook  # noqa: E402

NAME = "01_maml_objective.ipynb"


def build_class(folder: Path) -> dict[str, float | None]:
    """Write the 20 submissions into ``folder``; return the total each one deserves (None = zero, unreadable)."""
    solution = read_notebook(ROOT / "solutions" / NAME)
    exercise = make_exercise(solution)
    answers = {grade_id_of(c): c.source for c in solution.cells if is_answer_cell(c)}
    points = {grade_id_of(c): float(c.metadata.nbgrader["points"]) for c in solution.cells if is_test_cell(c)}
    full = sum(points.values())

    def notebook(edits: dict[str, str] | None = None, answered: tuple[str, ...] | None = None, tests: str = "keep"):
        nb = copy.deepcopy(exercise)
        chosen = answers if answered is None else {k: answers[k] for k in answered}
        for cell in nb.cells:
            gid = grade_id_of(cell)
            if gid in chosen:
                cell.source = chosen[gid]
            if gid in (edits or {}):
                cell.source = edits[gid]
        if tests == "pass":
            for cell in nb.cells:
                if is_test_cell(cell):
                    cell.source = "pass"
        elif tests == "delete":
            nb.cells = [c for c in nb.cells if not is_test_cell(c)]
        return dumps_notebook(nb)

    def mutate(gid: str, old: str, new: str) -> dict[str, str]:
        assert old in answers[gid], (gid, old)
        return {gid: answers[gid].replace(old, new)}

    expected: dict[str, float | None] = {}

    def put(name: str, text: str | bytes, deserved: float | None) -> None:
        path = folder / name / NAME
        path.parent.mkdir(parents=True)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        expected[name] = deserved

    for i in range(1, 6):
        put(f"student{i:02d}_correct", notebook(), full)
    put("student06_blank", notebook(answered=()), 0.0)
    put("student07_blank", notebook(answered=()), 0.0)
    put("student08_silent_fomaml", notebook(mutate("maml_meta_gradient_one_task", "create_graph=True", "create_graph=False")), full - points["test_maml_meta_gradient"])
    put("student09_uphill_step", notebook(mutate("inner_step", "p - lr * g", "p + lr * g")), points["test_linear_meta_gradient"])
    put("student10_partial", notebook(answered=("inner_step", "linear_meta_gradient")), points["test_inner_step"] + points["test_linear_meta_gradient"])
    put("student11_tests_edited_to_pass", notebook(answered=(), tests="pass"), 0.0)
    put("student12_tests_deleted", notebook(answered=(), tests="delete"), 0.0)
    put("student13_infinite_loop", notebook({"reptile_direction": "def reptile_direction(*args, **kwargs):\n    while True:\n        pass\n"}), full - points["test_reptile_direction"])
    put("student14_kernel_exit", notebook({"linear_meta_gradient": "import os\nos._exit(1)\n"}), full - points["test_linear_meta_gradient"])
    put("student15_invalid_json", '{"cells": [', None)
    put("student16_empty_file", "", None)
    put("student17_no_cells", json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}), 0.0)
    put("student18_binary", bytes(range(256)) * 4, None)
    extra = read_notebook_text(notebook())
    extra["cells"].insert(3, {"cell_type": "markdown", "metadata": {}, "source": "My notes: θ′ starts from θ."})
    put("student19_extra_cells", json.dumps(extra), full)
    put("student20_ignores_steps", notebook(mutate("linear_meta_gradient", "for _ in range(steps):", "for _ in range(1):")), full - points["test_linear_meta_gradient"])
    return expected


def read_notebook_text(text: str) -> dict:
    return json.loads(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the class and the grades (default: a temp folder)")
    parser.add_argument("--cell-timeout", type=float, default=60.0, help="per-cell timeout passed to the grader, seconds")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="grade-class-"))
    submissions, out = work / "submissions", work / "grades"
    expected = build_class(submissions)
    before = {p: p.read_bytes() for p in submissions.rglob("*") if p.is_file()}
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "metalearn_edu", "grade", str(submissions), "--solutions", str(ROOT / "solutions"),
           "--out", str(out), "--json", "--cell-timeout", str(args.cell_timeout)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        print(proc.stderr, file=sys.stderr)
        print(f"grader crashed with exit code {proc.returncode}", file=sys.stderr)
        return 2
    report = json.loads(proc.stdout)
    graded = {Path(s["submission"]).parent.name: s for s in report["submissions"]}
    bad = 0
    print(f"{'submission':34s} {'score':>7s} {'deserved':>9s}  note")
    for name, deserved in expected.items():
        s = graded.get(name)
        score = None if s is None else s["points_earned"]
        want = 0.0 if deserved is None else deserved
        ok = s is not None and abs(score - want) < 1e-9
        bad += not ok
        note = "" if ok else "MISMATCH"
        if s is not None and s.get("error"):
            note += f" ({s['error'][:60]})"
        print(f"{name:34s} {score if score is not None else float('nan'):7.1f} {want:9.1f}  {note}")
    unchanged = all(p.read_bytes() == b for p, b in before.items()) and len(list(submissions.rglob("*.ipynb"))) == len(before)
    print(f"\n{len(graded)}/{len(expected)} submissions graded in {seconds:.0f} s; grader exit code {proc.returncode}; "
          f"{len(expected) - bad}/{len(expected)} scored as deserved; submissions unchanged: {unchanged}; grades in {out}")
    return 0 if bad == 0 and unchanged else 1


if __name__ == "__main__":
    raise SystemExit(main())
