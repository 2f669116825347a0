"""Seeds, threads and devices: the run-time settings every entry point shares."""

from __future__ import annotations

import os
import random
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
import torch

Config = TypeVar("Config")


def seed_everything(seed: int) -> None:
    """Fix Python's, NumPy's and torch's global random streams from one integer ``seed``.

    Environments take the same seed through ``reset(seed=...)``; task samplers take a
    ``torch.Generator`` seeded from it, so a run is reproduced by its seed alone on CPU.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "cpu", *, threads: int | None = None) -> torch.device:
    """Turn ``device`` ('cpu', 'cuda', 'cuda:N' or 'auto') into a ``torch.device``.

    On CPU, ``threads`` torch threads are used. None: ``METALEARN_EDU_THREADS`` if set, else 1 (faster
    for the small networks of this course when two jobs share two cores; a single meta-RL run on
    large batches gains from 2).
    """
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise ValueError(f"device must be one of 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device; use --device cpu")
    if threads is None:
        text = os.environ.get("METALEARN_EDU_THREADS") or "1"
        if not text.strip().isdigit() or int(text) < 1:
            raise ValueError(f"METALEARN_EDU_THREADS must be a positive integer, got {text!r}")
        threads = int(text)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if name == "cpu":
        torch.set_num_threads(threads)
    return torch.device(name)


def config_from_dict(cls: type[Config], data: dict[str, Any]) -> Config:
    """Rebuild a config dataclass from its JSON form (lists back to tuples), rejecting unknown fields."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}; accepted: {sorted(known)}")
    data = dict(data)
    if "hidden" in data:
        data["hidden"] = tuple(data["hidden"])
    return cls(**data)
