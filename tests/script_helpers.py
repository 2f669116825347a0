"""What the tests of scripts/ need: the script imported as a module, and a tiny navigation checkpoint to run it on."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from types import ModuleType

from metalearn_edu.rl.train import RLTrainConfig, train_rl

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (its ``main`` takes an argv list)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_navigation_checkpoint(out: Path, iterations: int) -> str:
    """Train a few-second PPO-MAML run on 2D navigation into ``out``; the path of its checkpoint.pt."""
    config = RLTrainConfig.for_env("navigation2d", iterations=iterations, meta_batch=2, rollouts=3, horizon=8, hidden=(8,),
                                   ppo_epochs=1, seed=3)
    train_rl(replace(config, checkpoint_every=1), out, progress=False)
    return str(out / "checkpoint.pt")
