"""The ``metalearn-edu`` command line.

Subcommands are grouped by verb (``train``, ``evaluate``, ``bench``, ``render``, ``course``, ``grade``);
each domain module adds its own targets through a ``register(groups)`` function, so this file only
wires them together. Every leaf subcommand has ``--help``, ``--seed`` and ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that contribute subcommands. Each defines ``register(groups: dict[str, argparse._SubParsersAction])``.
_PROVIDERS = (
    "metalearn_edu.supervised_cli",
    "metalearn_edu.rl.cli",
    "metalearn_edu.envs.cli",
    "metalearn_edu.course.cli",
    "metalearn_edu.render_cli",
)

_VERBS = {
    "train": "meta-train a model or policy and write config.json, metrics.jsonl, checkpoint.pt",
    "evaluate": "evaluate a checkpoint after 0..K adaptation steps on fresh test tasks",
    "bench": "measure speed (meta-iterations or environment steps per second)",
    "render": "render a policy before and after adaptation to a video",
    "course": "build exercises from solutions, or check that they are in sync",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalearn-edu",
        description="metalearn-edu: meta-learning course tools (MAML, FOMAML, Reptile, PPO-MAML).",
        epilog="Run 'metalearn-edu VERB --help' for the targets of each verb.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    groups: dict[str, argparse._SubParsersAction] = {}
    for verb, help_text in _VERBS.items():
        p = verbs.add_parser(verb, help=help_text, description=help_text)
        groups[verb] = p.add_subparsers(dest="target", metavar="TARGET")
        p.set_defaults(_group_parser=p)
    groups["_root"] = verbs  # for top-level commands such as ``grade``
    for name in _PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # provider not written yet
                continue
            raise
        module.register(groups)
    return parser


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def training_session_summary(what: str, out: str | os.PathLike[str], this_session: int, total: int, seconds: float) -> str:
    """What a ``train`` command did: "trained WHAT for n iterations in s (this session, N in all)", or, when ``out``
    already held all N iterations, that there was nothing to train and how to train more."""
    if this_session:
        return f"trained {what} for {this_session} iteration{'' if this_session == 1 else 's'} in {seconds:.1f} s (this session, {total} in all)"
    return (f"{out} already holds all {total} iterations of {what}; nothing to train "
            "(raise --iterations to continue, or pass a new --out or --no-resume to start over)")


def add_common_arguments(p: argparse.ArgumentParser, *, out_default: str | None = None) -> None:
    """Add the ``--seed`` and ``--out`` options every leaf subcommand shares."""
    p.add_argument("--seed", type=int, default=0, help="random seed for Python, NumPy, torch and env resets (default: 0)")
    p.add_argument(
        "--out",
        default=out_default,
        help="output folder for results (config.json, metrics.jsonl, checkpoint.pt, figures)"
        + (f" (default: {out_default})" if out_default else ""),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        group = getattr(args, "_group_parser", None)
        (group or parser).print_help()
        return 2
    try:
        return int(func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as err:
        # A user mistake: one clear line, no stack trace from deep inside torch.
        print(f"metalearn-edu: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metalearn-edu: interrupted; the last checkpoint is kept, rerun the same command to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader closed the pipe (``metalearn-edu ... | head``): stop quietly, and point stdout at
        # /dev/null so that Python's own flush at exit does not raise the same error again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command ended by a closed pipe
