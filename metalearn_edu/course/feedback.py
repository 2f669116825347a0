"""Checks that teach: assertion helpers for the course notebooks.

A check cell in an exercise notebook should not just say ``AssertionError``; it should say what it
expected, what it got, and what to look at next. :class:`CheckFailed` carries those three parts, and
the ``expect_*`` helpers build it for the common cases (numbers close, shapes equal, a condition
true). :func:`passed` prints a one-line success so a student sees that a check ran.

``CheckFailed`` subclasses ``AssertionError``, so the autograder and nbgrader treat it like any
failing ``assert``.

Example::

    from metalearn_edu.course.feedback import expect_close, expect_shape, passed

    expect_shape("meta_grad['w']", meta_grad["w"], (1, 40), hint="one gradient per parameter")
    expect_close("meta_grad['w']", meta_grad["w"], reference, atol=1e-5,
                 hint="did you pass create_graph=True to torch.autograd.grad?")
    passed("meta-gradient matches autograd")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["CheckFailed", "expect_close", "expect_shape", "expect_true", "passed"]

_MAX_SUMMARY_ITEMS = 6
DEFAULT_HINT = "re-read the instructions above this cell, then re-run the cells above it in order"


class CheckFailed(AssertionError):
    """A failed notebook check, with what was expected, what came back and a hint.

    ``str(err)`` is a short multi-line message::

        <what>: expected <expected>, got <got>
          hint: <hint>

    Without a ``hint`` a generic one is used, so every failure points somewhere.
    """

    def __init__(self, what: str, *, expected: str, got: str, hint: str | None = None) -> None:
        self.what = what
        self.expected = expected
        self.got = got
        self.hint = hint or DEFAULT_HINT
        message = f"{what}: expected {expected}, got {got}\n  hint: {self.hint}"
        super().__init__(message)


def _as_float_list(value: Any) -> tuple[list[float], tuple[int, ...]]:
    """Flatten a number, sequence, NumPy array or torch tensor into floats plus its shape."""
    if hasattr(value, "detach"):  # torch tensor: no autograd, CPU, float
        value = value.detach().cpu().double().numpy()
    if hasattr(value, "shape") and hasattr(value, "ravel"):  # NumPy array or scalar
        shape = tuple(int(d) for d in value.shape)
        return [float(x) for x in value.ravel().tolist()], shape
    if isinstance(value, bool):
        return [float(value)], ()
    if isinstance(value, (int, float)):
        return [float(value)], ()
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        flat: list[float] = []
        shapes = []
        for item in value:
            sub, sub_shape = _as_float_list(item)
            flat.extend(sub)
            shapes.append(sub_shape)
        inner = shapes[0] if shapes and all(s == shapes[0] for s in shapes) else ()
        return flat, (len(shapes), *inner)
    raise TypeError(
        f"expected a number, a sequence of numbers, a NumPy array or a torch tensor, got {type(value).__name__}"
    )


def _shape_of(value: Any) -> tuple[int, ...]:
    """Shape of a tensor, array or nested sequence, as a tuple of ints."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return tuple(int(d) for d in shape)
    return _as_float_list(value)[1]


def _summary(values: list[float], shape: tuple[int, ...]) -> str:
    """A short human-readable rendering of some numbers (first few values, shape if not scalar)."""
    if not shape and len(values) == 1:
        return f"{values[0]:.6g}"
    head = ", ".join(f"{v:.4g}" for v in values[:_MAX_SUMMARY_ITEMS])
    more = ", ..." if len(values) > _MAX_SUMMARY_ITEMS else ""
    return f"[{head}{more}] (shape {tuple(shape)})"


def _type_name(value: Any) -> str:
    return type(value).__name__


def expect_close(
    name: str,
    got: Any,
    expected: Any,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    hint: str | None = None,
) -> None:
    """Raise :class:`CheckFailed` unless ``got`` is elementwise within ``atol + rtol*|expected|``.

    ``got`` and ``expected`` may be numbers, (nested) sequences, NumPy arrays or torch tensors of the
    same shape. ``None`` (an unfinished exercise) and NaN values fail with a clear message.
    """
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")
    exp_values, exp_shape = _as_float_list(expected)
    if got is None:
        raise CheckFailed(name, expected=_summary(exp_values, exp_shape), got="None",
                          hint=hint or "the cell above still returns None; fill in the blank")
    try:
        got_values, got_shape = _as_float_list(got)
    except TypeError:
        raise CheckFailed(name, expected=_summary(exp_values, exp_shape), got=f"a {_type_name(got)}",
                          hint=hint) from None
    if len(got_values) != len(exp_values) or (got_shape != exp_shape and len(exp_values) != 1):
        raise CheckFailed(name, expected=f"shape {tuple(exp_shape)}", got=f"shape {tuple(got_shape)}", hint=hint)
    worst_index, worst_excess = -1, 0.0
    for i, (g, e) in enumerate(zip(got_values, exp_values)):
        if math.isnan(g) and not math.isnan(e):
            raise CheckFailed(name, expected=_summary(exp_values, exp_shape),
                              got=f"NaN at flat index {i}", hint=hint or "look for a division by zero or an overflow")
        excess = abs(g - e) - (atol + rtol * abs(e))
        if excess > worst_excess or (math.isinf(g) and g != e):
            worst_index, worst_excess = i, max(excess, worst_excess)
    if worst_index >= 0:
        where = "" if len(exp_values) == 1 else (
            f" (largest difference at flat index {worst_index}: "
            f"{got_values[worst_index]:.6g} vs {exp_values[worst_index]:.6g})"
        )
        raise CheckFailed(
            name,
            expected=f"{_summary(exp_values, exp_shape)} within atol={atol:g}, rtol={rtol:g}",
            got=_summary(got_values, got_shape) + where,
            hint=hint,
        )


def expect_shape(name: str, got: Any, expected_shape: Sequence[int], hint: str | None = None) -> None:
    """Raise :class:`CheckFailed` unless ``got`` (tensor, array or nested sequence) has ``expected_shape``."""
    want = tuple(int(d) for d in expected_shape)
    if got is None:
        raise CheckFailed(name, expected=f"shape {want}", got="None",
                          hint=hint or "the cell above still returns None; fill in the blank")
    try:
        have = _shape_of(got)
    except TypeError:
        raise CheckFailed(name, expected=f"shape {want}", got=f"a {_type_name(got)} without a shape", hint=hint) from None
    if have != want:
        raise CheckFailed(name, expected=f"shape {want}", got=f"shape {have}", hint=hint)


def expect_true(cond: Any, what: str, hint: str | None = None) -> None:
    """Raise :class:`CheckFailed` unless ``cond`` is truthy; ``what`` says what should hold."""
    if not bool(cond):
        raise CheckFailed(what, expected="true", got="false", hint=hint)


def passed(message: str = "check passed") -> None:
    """Print a one-line success message for a check cell."""
    print(f"\u2714 {message}")
