"""Trained checkpoints shipped with the package, so notebooks show real results without training.

Each checkpoint is a small state dict (``<name>.pt``, loaded with ``weights_only=True``) next to a
JSON file with its config, the command that produced it and its measured results.

    load_sinusoid("maml")  -> (model, TrainConfig)   # Finn et al. config, 70k meta-iterations
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SINUSOID_ALGOS = ("maml", "pretrain", "fomaml", "reptile")


def sinusoid_path(algo: str) -> Path:
    if algo not in SINUSOID_ALGOS:
        raise ValueError(f"algo must be one of {', '.join(SINUSOID_ALGOS)}; got {algo!r}")
    return HERE / "sinusoid" / f"{algo}.pt"


def available_sinusoid() -> list[str]:
    """The sinusoid algorithms whose checkpoint ships with this installation."""
    return [a for a in SINUSOID_ALGOS if sinusoid_path(a).exists()]


def load_sinusoid(algo: str = "maml") -> tuple[nn.Module, "TrainConfig"]:  # noqa: F821
    """The shipped sinusoid model meta-trained with ``algo`` and its TrainConfig."""
    from metalearn_edu.train import TrainConfig, build_model

    path = sinusoid_path(algo)
    if not path.exists():
        raise FileNotFoundError(f"no shipped sinusoid checkpoint for {algo!r} (have: {available_sinusoid()}); train one with 'metalearn-edu train sinusoid --algo {algo}'")
    state = torch.load(path, weights_only=True)
    config = TrainConfig.from_dict(state["config"])
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model, config


def sinusoid_card(algo: str) -> dict:
    """The JSON card of a shipped checkpoint: config, command, training time, evaluation."""
    return json.loads(sinusoid_path(algo).with_suffix(".json").read_text())


def export_sinusoid(run_dir: str | Path, algo: str, card: dict) -> Path:
    """Copy a run's model (no optimizer state) into the package, with its JSON card."""
    state = torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)
    path = sinusoid_path(algo)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state["model"], "config": state["config"], "iteration": state["iteration"]}, path)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path
