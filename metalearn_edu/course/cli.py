"""Command line for the course tooling: ``course build|check|run`` and the top-level ``grade``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from metalearn_edu.cli import add_common_arguments

if TYPE_CHECKING:
    from metalearn_edu.course.grader import SubmissionGrade
    from metalearn_edu.course.notebooks import Problem

# nbformat/nbclient take about a second to import: ``notebooks`` and ``grader`` are imported only
# when a course command runs, so ``metalearn-edu --help`` and the other verbs stay fast.
_DEFAULT_CELL_TIMEOUT = 120.0  # = grader.DEFAULT_CELL_TIMEOUT
_DEFAULT_TOTAL_TIMEOUT = 1800.0  # = grader.DEFAULT_TOTAL_TIMEOUT
_UNUSED_OUT = "accepted like on every subcommand; not used by this command"


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``course build``, ``course check``, ``course run`` and ``grade``."""
    course = groups["course"]

    p = course.add_parser("build", help="write exercises/ from solutions/ (answers blanked, hidden tests removed)",
                          description="Generate exercises/NN_*.ipynb from solutions/NN_*.ipynb: solution regions "
                                      "become stubs, hidden tests are removed, outputs are cleared.")
    _add_folders(p)
    _add_common(p, out_help=_UNUSED_OUT)
    p.set_defaults(func=_build)

    p = course.add_parser("check", help="fail if exercises/ is out of sync with solutions/ or a solution is invalid",
                          description="Exit 1, naming the notebook and cell, when exercises/ differs from what "
                                      "'course build' would write, or when a solution notebook has invalid markers "
                                      "or nbgrader metadata.")
    _add_folders(p)
    _add_common(p, out_help=_UNUSED_OUT)
    p.set_defaults(func=_check)

    p = course.add_parser("run", help="re-execute notebooks/ and solutions/ in place (regenerate committed outputs)",
                          description="Execute notebooks top to bottom in a fresh kernel and save them with their "
                                      "outputs. Full mode unless --fast (METALEARN_EDU_FAST=1).")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="notebooks to run (default: notebooks/*.ipynb and solutions/*.ipynb)")
    p.add_argument("--fast", action="store_true", help="fast mode: set METALEARN_EDU_FAST=1 for the kernel")
    p.add_argument("--cell-timeout", type=_positive_seconds, default=None, metavar="S",
                   help="stop a notebook whose cell runs longer than S seconds (default: no limit)")
    _add_common(p, out_help="save the executed notebooks and timings.json here instead of in place (for timing without touching the sources)")
    p.set_defaults(func=_run)

    p = groups["_root"].add_parser("grade", help="autograde submitted notebooks against solutions/",
                                   description="Grade notebooks with the instructor's tests (hidden ones included) "
                                               "in a fresh kernel, in fast mode. Submission files are never modified.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="submitted notebooks, or folders searched recursively")
    p.add_argument("--solutions", default="solutions", metavar="DIR", help="source notebooks (default: solutions)")
    p.add_argument("--assignment", default=None, metavar="NAME",
                   help="grade every PATH against solutions/NAME.ipynb instead of matching by file name")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--cell-timeout", type=_positive_seconds, default=_DEFAULT_CELL_TIMEOUT, metavar="S",
                   help=f"time limit per cell in seconds (default: {_DEFAULT_CELL_TIMEOUT:g})")
    p.add_argument("--timeout", type=_positive_seconds, default=_DEFAULT_TOTAL_TIMEOUT, metavar="S",
                   help=f"time limit per submission in seconds (default: {_DEFAULT_TOTAL_TIMEOUT:g})")
    _add_common(p, out_help="write grades.json and grades.csv (one row per submission x question) into this folder")
    p.set_defaults(func=_grade)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _add_folders(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solutions", default="solutions", metavar="DIR", help="source notebooks (default: solutions)")
    p.add_argument("--exercises", default="exercises", metavar="DIR", help="generated notebooks (default: exercises)")


def _add_common(p: argparse.ArgumentParser, *, out_help: str) -> None:
    add_common_arguments(p)
    for action in p._actions:
        if "--out" in action.option_strings:
            action.help = out_help
        elif "--seed" in action.option_strings:
            action.help = "accepted like on every subcommand; notebooks fix their own seeds"


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(problems)} problem(s) found", file=sys.stderr)


def _build(args: argparse.Namespace) -> int:
    from metalearn_edu.course import build, notebooks

    try:
        written = build.build_exercises(args.solutions, args.exercises)
    except notebooks.CourseError as err:
        _print_problems(err.problems)
        return 1
    for path in written:
        print(f"wrote {path}")
    total = len(notebooks.find_notebooks(args.solutions, "--solutions"))
    print(f"{total} exercise notebook(s) in {args.exercises}/ ({len(written)} changed)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from metalearn_edu.course import build, notebooks

    problems = build.check_exercises(args.solutions, args.exercises)
    if problems:
        _print_problems(problems)
        return 1
    total = len(notebooks.find_notebooks(args.solutions, "--solutions"))
    print(f"{args.exercises}/ is in sync with {args.solutions}/ ({total} notebook(s))")
    return 0


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metalearn_edu.course import kernel, notebooks

    paths = [Path(p) for p in args.notebooks]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"NOTEBOOK: {str(path)!r} does not exist")
    if not paths:
        paths = [p for folder in ("notebooks", "solutions") if Path(folder).is_dir()
                 for p in notebooks.find_notebooks(folder)]
        if not paths:
            raise ValueError("NOTEBOOK: none given and no notebooks/*.ipynb or solutions/*.ipynb here")
    mode = "fast" if args.fast else "full"
    out = Path(args.out) if args.out else None
    failed, seconds = [], {}
    for number, path in enumerate(paths, start=1):
        code_cells = sum(c.cell_type == "code" for c in notebooks.read_notebook(path).cells)
        print(f"[{number}/{len(paths)}] {path} ({mode} mode)", flush=True)
        last_cell = [-1]
        save_to = None
        if out is not None:
            save_to = out / path.parent.name / path.name
            save_to.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with tqdm(total=code_cells, unit="cell", leave=False, file=sys.stderr) as bar:
            def advance(index: int) -> None:
                last_cell[0] = index
                bar.update(1)

            try:
                kernel.run_notebook(path, fast=args.fast, cell_timeout=args.cell_timeout, on_cell_done=advance, save_to=save_to)
            except Exception as err:  # an error in the notebook: report it, keep the file, go on
                failed.append(path)
                summary = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', '') or err}"
                print(f"  FAILED at cell index {last_cell[0]}: {summary.strip().splitlines()[-1]} "
                      f"(file left unchanged)", flush=True)
                continue
        seconds[str(path)] = round(time.monotonic() - start, 1)
        print(f"  ok in {seconds[str(path)]:.1f} s, saved with outputs" + (f" to {save_to}" if save_to else ""), flush=True)
    if seconds:
        print(f"\n{'notebook':45s} {mode + ' mode (s)':>14s}")
        for name, value in seconds.items():
            print(f"{name:45s} {value:>14.1f}")
        print(f"{'total':45s} {sum(seconds.values()):>14.1f}")
    if out is not None:
        (out / "timings.json").write_text(json.dumps({"mode": mode, "seconds": seconds, "failed": [str(p) for p in failed]}, indent=2) + "\n")
    elif any(p.parent.name == "solutions" for p in paths if p not in failed):
        print("solutions changed: run 'metalearn-edu course build' and 'metalearn-edu course check'")
    if failed:
        print(f"{len(failed)} of {len(paths)} notebook(s) failed: " + ", ".join(map(str, failed)), file=sys.stderr)
        return 1
    return 0


def _grade_record(grade: SubmissionGrade) -> dict:
    return {
        "submission": grade.submission,
        "assignment": grade.assignment,
        "points_earned": grade.points_earned,
        "points_possible": grade.points_possible,
        "error": grade.error,
        "questions": [vars(q).copy() for q in grade.questions],
    }


def format_grade_table(grade: SubmissionGrade) -> str:
    """The per-question table printed for one submission."""
    head = f"{grade.submission}  [{grade.assignment or 'no matching solution'}]  " \
           f"{grade.points_earned:g} / {grade.points_possible:g}"
    lines = [head] + ([f"  error: {grade.error}"] if grade.error else [])
    width = max([len(q.grade_id) for q in grade.questions] + [8])
    for q in grade.questions:
        points = f"{q.points_earned:g} / {q.points_possible:g}"
        lines.append(f"  {q.grade_id:<{width}}  {points:>11}  {q.reason}".rstrip())
    return "\n".join(lines)


def write_grade_files(grades: list[SubmissionGrade], out: Path) -> None:
    """Write ``grades.json`` (as printed by --json) and ``grades.csv`` (one row per submission x question)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "grades.json").write_text(json.dumps({"submissions": [_grade_record(g) for g in grades]}, indent=1) + "\n")
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", "assignment", "grade_id", "points_earned", "points_possible", "reason"])
        for g in grades:
            for q in g.questions:
                writer.writerow([g.submission, g.assignment, q.grade_id, q.points_earned, q.points_possible, q.reason])
            if not g.questions:
                writer.writerow([g.submission, g.assignment or "", "", 0, 0, g.error])


def _grade(args: argparse.Namespace) -> int:
    from metalearn_edu.course import grader, notebooks

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"--out: {str(out)!r} exists and is not a folder")
    count = [0]

    def report(grade: SubmissionGrade) -> None:
        count[0] += 1
        if args.json:
            print(f"graded {count[0]}: {grade.submission} ({grade.points_earned:g}/{grade.points_possible:g})",
                  file=sys.stderr, flush=True)
        else:
            print(format_grade_table(grade) + "\n", flush=True)

    try:
        grades = grader.grade_paths(args.paths, args.solutions, assignment=args.assignment,
                                    cell_timeout=args.cell_timeout, total_timeout=args.timeout, on_graded=report)
    except notebooks.CourseError as err:
        _print_problems(err.problems)
        return 2
    if args.json:
        print(json.dumps({"submissions": [_grade_record(g) for g in grades]}, indent=1))
    if out is not None:
        write_grade_files(grades, out)
        print(f"wrote {out / 'grades.json'} and {out / 'grades.csv'}", file=sys.stderr)
    return 0
