"""What every test of the graded checks needs: a blank answer, "this check must fail", "random state untouched"."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch

from metalearn_edu.course.feedback import CheckFailed


def blank(*args, **kwargs):
    """An unanswered exercise: the stub students start from."""
    raise NotImplementedError()


def fails(check: Callable[..., object], answer: object, match: str | None = None, **kwargs) -> str:
    """Run ``check(answer, **kwargs)``, require a CheckFailed (containing ``match``), return its message."""
    with pytest.raises(CheckFailed) as info:
        check(answer, **kwargs)
    if match is not None:
        assert match in str(info.value), str(info.value)
    return str(info.value)


def assert_leaves_random_state(*calls: Callable[[], object]) -> None:
    """Each call (a check run on a correct answer) leaves torch's, NumPy's and Python's global RNGs as found."""
    def seed_all() -> None:
        torch.manual_seed(11)
        np.random.seed(11)
        random.seed(11)

    seed_all()
    expected = (torch.rand(2), np.random.rand(), random.random())
    seed_all()
    for call in calls:
        call()
    got = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
