"""Supervised meta-training: task batch → support/query → inner step → outer loss → Adam.

One config dataclass, one seed, a progress bar, metrics as JSON lines, periodic checkpoints that a
rerun of the same command resumes from, and a guard that stops on a NaN/inf meta-loss.

Files written to the run folder:
    config.json      the TrainConfig as JSON
    metrics.jsonl    one JSON object per log interval: iteration, loss, elapsed_s
    checkpoint.pt    model, optimizer, task-sampler state; ``torch.load(..., weights_only=True)`` works
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from metalearn_edu.functional import check_inner_arguments, make_mlp, params_of
from metalearn_edu.maml import ALGORITHMS, check_algorithm, meta_gradient
from metalearn_edu.runtime import config_from_dict, resolve_device, seed_everything
from metalearn_edu.tasks import SinusoidTasks


class DivergenceError(FloatingPointError):
    """The meta-loss or meta-gradient stopped being finite."""


@dataclass
class TrainConfig:
    """Hyperparameters of a supervised meta-training run (defaults: Finn et al. 2017, sinusoid)."""

    algo: str = "maml"  # maml | fomaml | reptile | pretrain (multi-task baseline, no adaptation in training)
    iterations: int = 70_000  # number of outer (meta) updates
    meta_batch: int = 25  # T, tasks per meta-update
    shots: int = 10  # K, support examples per task (the inner step sees these)
    query: int = 10  # Q, query examples per task (the outer loss sees these)
    inner_lr: float = 0.01  # α, inner-loop gradient-descent step size
    inner_steps: int = 1  # number of inner gradient steps during meta-training
    outer_lr: float = 1e-3  # β, Adam learning rate on the meta-parameters
    hidden: tuple[int, ...] = (40, 40)  # widths of the MLP's hidden layers (ReLU)
    seed: int = 0  # fixes initialisation, task sampling and every random draw
    batched: bool = True  # vmap over tasks (fast) or the per-task reference loop
    log_every: int = 100  # write a metrics line every this many iterations
    checkpoint_every: int = 1000  # save checkpoint.pt every this many iterations
    device: str = "cpu"  # cpu, cuda, cuda:N or auto

    def validate(self) -> None:
        check_algorithm(self.algo)
        check_inner_arguments(self.inner_lr, self.inner_steps)
        for name in ("iterations", "meta_batch", "shots", "query", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.outer_lr > 0:
            raise ValueError(f"outer_lr must be positive, got {self.outer_lr!r}")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return config_from_dict(cls, data)


@dataclass
class TrainResult:
    model: nn.Module
    config: TrainConfig
    iterations_done: int
    final_loss: float  # the last logged meta-loss of the run (of an earlier session if this one trained nothing)
    seconds: float
    out_dir: Path | None
    iterations_this_session: int = 0  # 0 when --out already held every iteration


# Fields that may change between a run and its resumption: the budget, the bookkeeping, the device.
_RESUMABLE_CHANGES = {"iterations": 0, "log_every": 0, "checkpoint_every": 0, "device": ""}


def _run_identity(config: TrainConfig) -> dict:
    return asdict(config) | _RESUMABLE_CHANGES


def build_model(config: TrainConfig) -> nn.Module:
    return make_mlp(1, config.hidden, 1, "relu")


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the model of a run from its ``checkpoint.pt`` (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path} (pass --checkpoint RUN_DIR/checkpoint.pt)")
    state = torch.load(path, map_location=device, weights_only=True)
    if "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a metalearn-edu supervised checkpoint (keys: {sorted(state)})")
    config = TrainConfig.from_dict(state["config"])
    model = build_model(config).to(device)
    model.load_state_dict(state["model"])
    return model, config, state


def train(config: TrainConfig, out_dir: str | Path | None = None, *, resume: bool = True, progress: bool = True) -> TrainResult:
    """Meta-train a sinusoid regressor with ``config.algo``; resume from ``out_dir/checkpoint.pt`` if present."""
    config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    generator = torch.Generator().manual_seed(config.seed)
    family = SinusoidTasks()
    start = 0
    kept: list[str] = []  # the metrics lines of the sessions before this one

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ckpt_path = out / "checkpoint.pt"
        if resume and ckpt_path.exists():
            # Loaded on the CPU: the generator and RNG states must stay CPU ByteTensors, and
            # load_state_dict moves the weights and Adam moments to the model's device.
            _, saved_config, state = load_checkpoint(ckpt_path, "cpu")
            if _run_identity(saved_config) != _run_identity(config):
                raise ValueError(
                    f"{out} holds a run with a different config; pass a new --out or the same options "
                    f"(saved: {json.dumps(asdict(saved_config))})"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            start = int(state["iteration"])
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        metrics_path = out / "metrics.jsonl"
        if start and metrics_path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [ln for ln in metrics_path.read_text().splitlines() if ln and json.loads(ln)["iteration"] <= start]
        metrics_path.write_text("".join(ln + "\n" for ln in kept))

    def save(iteration: int) -> None:
        if out is None:
            return
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "iteration": iteration,
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "config": asdict(config),
            },
            out / "checkpoint.pt",
        )

    from tqdm.auto import tqdm

    params = params_of(model)
    t0 = time.perf_counter()
    window = []
    # a resumed run's last logged loss, until this session logs a new one
    last_loss = next((float(r["loss"]) for r in map(json.loads, reversed(kept)) if "loss" in r), float("nan"))
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc=f"{config.algo} meta-training", disable=not progress, mininterval=0.5)
    for it in bar:
        batch = family.sample(config.meta_batch, config.shots, config.query, generator).to(device)
        mg = meta_gradient(model, params, batch, algo=config.algo, lr=config.inner_lr, steps=config.inner_steps, batched=config.batched)
        if not torch.isfinite(mg.loss) or not all(torch.isfinite(g).all() for g in mg.grads.values()):
            raise DivergenceError(
                f"the meta-loss became {float(mg.loss)} at iteration {it + 1}: training diverged. "
                f"Try a smaller learning rate (outer_lr={config.outer_lr}, inner_lr={config.inner_lr}); "
                + ("the last good checkpoint is kept." if out is not None else "")
            )
        optimizer.zero_grad(set_to_none=True)
        for name, p in params.items():
            p.grad = mg.grads[name]
        optimizer.step()
        window.append(float(mg.loss))
        done = it + 1
        if done % config.log_every == 0 or done == config.iterations:
            last_loss = sum(window) / len(window)
            window = []
            bar.set_postfix(loss=f"{last_loss:.3f}")
            if out is not None:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"iteration": done, "loss": last_loss, "elapsed_s": round(time.perf_counter() - t0, 3)}) + "\n")
        if done % config.checkpoint_every == 0 or done == config.iterations:
            save(done)
    bar.close()
    return TrainResult(model, config, config.iterations, last_loss, time.perf_counter() - t0, out, config.iterations - start)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The metrics.jsonl of a run as a list of dicts."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


__all__ = ["ALGORITHMS", "DivergenceError", "TrainConfig", "TrainResult", "build_model", "load_checkpoint", "read_metrics", "train"]
