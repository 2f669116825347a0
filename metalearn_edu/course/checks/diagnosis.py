"""Calling a student's function and naming what went wrong: the machinery every graded check shares.

:func:`student_caller` wraps a call of the student's code so that an unexpected error becomes a
:class:`~metalearn_edu.course.feedback.CheckFailed` with a hint (a blank answer's NotImplementedError
propagates unchanged). :func:`diagnose` (dicts of tensors, or tensors) and :func:`diagnose_array` (NumPy
arrays) pass when an answer matches the reference; otherwise they compare it with the answers the usual
mistakes give and name the first one it matches, else show the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metalearn_edu.course.feedback import CheckFailed, expect_close, expect_shape
from metalearn_edu.functional import Params

__all__ = [
    "HINT_DTYPE",
    "HINT_ITEM",
    "HINT_NONE",
    "HINT_SECOND_BACKWARD",
    "HINT_UNUSED",
    "as_checked_array",
    "call_student",
    "diagnose",
    "diagnose_array",
    "expect_params_like",
    "hint_for_error",
    "params_close",
    "plural",
    "show_numbers",
    "student_caller",
]

# ----------------------------------------------------------------------------------------------
# calling the student's code

HINT_ITEM = (
    "the loss you differentiate is not connected to θ any more: was it turned into a Python number with "
    ".item() or float(), detached, or computed under torch.no_grad()? Keep every loss a tensor."
)
HINT_UNUSED = (
    "torch.autograd.grad was asked for the gradient with respect to tensors the loss never used: compute "
    "the loss with forward(model, params, x) and the params you were given (not model(x), and not the "
    "parameters of a freshly created network: adaptation starts from θ)."
)
HINT_SECOND_BACKWARD = (
    "the graph was freed by a first backward pass; create_graph=True (which also keeps the graph) is "
    "needed wherever the result will be differentiated again."
)
HINT_DTYPE = "a tensor has the wrong dtype: create new tensors with dtype=<input>.dtype (the problem is float64)."


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def hint_for_error(err: BaseException) -> str | None:
    """A hint for the errors that the common meta-gradient mistakes raise (None if not recognised)."""
    message = str(err)
    if "does not require grad and does not have a grad_fn" in message:
        return HINT_ITEM
    if isinstance(err, TypeError) and ("float" in message or "Tensor" in message):
        return HINT_ITEM + " (autograd only accepts tensors)"
    if "appears to not have been used in the graph" in message:
        return HINT_UNUSED
    if "backward through the graph a second time" in message:
        return HINT_SECOND_BACKWARD
    if "dtype" in message or ("Double" in message and "Float" in message):
        return HINT_DTYPE
    return None


def student_caller(error_hints: Sequence[tuple[str, str]] = ()) -> Callable[..., Any]:
    """A ``call_student(fn, name, *args, **kwargs)`` for a family of checks.

    When the student's code raises an unexpected error, the hint is the one of the first ``(key, hint)``
    in ``error_hints`` whose key occurs in the error message, else :func:`hint_for_error`'s.
    """

    def call_student(fn: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the student's ``fn``; turn an unexpected exception into a CheckFailed with a hint.

        NotImplementedError (a blank answer) and CheckFailed propagate unchanged; the original exception
        is chained, so its traceback is still shown below the message.
        """
        if not callable(fn):
            raise CheckFailed(name, expected="a function", got=f"a {type(fn).__name__}",
                              hint=f"run the cell that defines {name} (and do not assign something else to that name)")
        try:
            return fn(*args, **kwargs)
        except (NotImplementedError, CheckFailed):
            raise
        except Exception as err:
            hint = next((h for key, h in error_hints if key in str(err)), None) or hint_for_error(err)
            raise CheckFailed(
                f"calling {name}",
                expected="it to return without an error",
                got=f"{type(err).__name__}: {_first_line(err)[:300]}",
                hint=hint or "read the error above this message (the traceback of your code) and fix that line",
            ) from err

    return call_student


call_student = student_caller()


# ----------------------------------------------------------------------------------------------
# dicts of tensors (the MAML checks)


def expect_params_like(name: str, got: Any, reference: Params, hint: str | None = None) -> None:
    """Fail unless ``got`` is a dict with the keys of ``reference`` and tensors of the same shapes and dtypes."""
    if not isinstance(got, dict):
        raise CheckFailed(name, expected=f"a dict {{parameter name: tensor}} with keys {list(reference)}",
                          got=f"a {type(got).__name__}",
                          hint=hint or "return one tensor per parameter, in a dict keyed like params")
    if list(got) != list(reference) and set(got) != set(reference):
        raise CheckFailed(name, expected=f"keys {sorted(reference)}", got=f"keys {sorted(map(str, got))}",
                          hint=hint or "keep the parameter names of params, e.g. {name: ... for name, p in params.items()}")
    for key, ref in reference.items():
        value = got[key]
        if value is None:
            raise CheckFailed(f"{name}[{key!r}]", expected="a tensor", got="None",
                              hint="None means the loss does not depend on this parameter: " + HINT_UNUSED)
        if not isinstance(value, Tensor):
            raise CheckFailed(f"{name}[{key!r}]", expected="a torch.Tensor", got=f"a {type(value).__name__}",
                              hint=hint or "keep every value a tensor")
        expect_shape(f"{name}[{key!r}]", value, tuple(ref.shape), hint=hint)
        if value.dtype != ref.dtype:
            raise CheckFailed(f"{name}[{key!r}].dtype", expected=str(ref.dtype), got=str(value.dtype), hint=HINT_DTYPE)


def _flat(params: Params) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params.values()])


def _numbers(flat: Tensor, count: int = 4) -> str:
    """The first few entries of a flat tensor, for messages."""
    head = ", ".join(f"{v:.4g}" for v in flat[:count].tolist())
    return f"[{head}{', ...' if flat.numel() > count else ''}]"


def params_close(a: Params | Tensor, b: Params | Tensor, atol: float, rtol: float) -> bool:
    """Whether ``a`` and ``b`` (dicts of tensors, in the same key order, or tensors) flatten to the same shape and are allclose."""
    fa = a.detach().reshape(-1) if isinstance(a, Tensor) else _flat(a)
    fb = b.detach().reshape(-1) if isinstance(b, Tensor) else _flat(b)
    return fa.shape == fb.shape and bool(torch.allclose(fa.to(fb.dtype), fb, atol=atol, rtol=rtol))


def diagnose(name: str, got: Params | Tensor, reference: Params | Tensor, mistakes: Sequence[tuple[Params | Tensor, str]],
             *, atol: float, rtol: float, hint: str) -> None:
    """Pass if ``got`` matches ``reference``; else name the first known mistake it matches, else show the numbers."""
    if params_close(got, reference, atol, rtol):
        return
    got_flat = got.detach().reshape(-1) if isinstance(got, Tensor) else _flat(got)
    ref_flat = reference.detach().reshape(-1) if isinstance(reference, Tensor) else _flat(reference)
    for wrong, explanation in mistakes:
        if params_close(got, wrong, atol, rtol):
            raise CheckFailed(name, expected=_numbers(ref_flat), got=f"{_numbers(got_flat)}, what a common mistake gives",
                              hint=explanation)
    expect_close(f"{name} (all entries, flattened)", got_flat, ref_flat, atol=atol, rtol=rtol, hint=hint)


# ----------------------------------------------------------------------------------------------
# NumPy answers (the locomotion checks)

HINT_NONE = "the function returns nothing: end it with `return ...`"


def plural(n: int, word: str) -> str:
    """``"1 step"``, ``"3 steps"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def as_checked_array(name: str, got: Any, shape: tuple[int, ...], hint: str) -> np.ndarray:
    """``got`` (array, tensor, list or number) as a float64 array of ``shape``, or a CheckFailed."""
    if got is None:
        raise CheckFailed(name, expected=f"an array of shape {shape}", got="None", hint=HINT_NONE)
    try:
        value = got.detach().cpu().double().numpy() if isinstance(got, Tensor) else np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise CheckFailed(name, expected=f"numbers, shape {shape}", got=f"a {type(got).__name__}", hint=hint) from None
    if value.shape != shape:
        raise CheckFailed(name, expected=f"shape {shape}", got=f"shape {value.shape}", hint=hint)
    return value


def show_numbers(values: np.ndarray, count: int = 4) -> str:
    """The first few entries of an array, for messages: ``[1.2345, 2, ...]``."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    head = ", ".join(f"{v:.5g}" for v in flat[:count])
    return f"[{head}{', ...' if flat.size > count else ''}]"


def diagnose_array(name: str, got: np.ndarray, reference: np.ndarray, mistakes: Sequence[tuple[np.ndarray, str]], *,
                   atol: float = 1e-9, rtol: float = 1e-7, hint: str) -> None:
    """Pass if ``got`` matches ``reference``; else name the first known mistake it matches, else show the numbers."""
    if np.allclose(got, reference, atol=atol, rtol=rtol):
        return
    for wrong, explanation in mistakes:
        wrong = np.asarray(wrong, dtype=np.float64)
        if wrong.shape == got.shape and np.allclose(got, wrong, atol=atol, rtol=rtol):
            raise CheckFailed(name, expected=show_numbers(reference), got=f"{show_numbers(got)}, what a common mistake gives",
                              hint=explanation)
    expect_close(name, got, reference, atol=atol, rtol=rtol, hint=hint)
