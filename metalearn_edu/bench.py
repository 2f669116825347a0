"""Speed of supervised meta-training: meta-iterations per second, per-task loop vs vmap-batched.

One meta-iteration = sample T tasks, compute the meta-gradient, take an Adam step: exactly what
``train.py`` does each iteration, on Finn et al.'s sinusoid configuration.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

import torch

from metalearn_edu.functional import make_mlp, params_of
from metalearn_edu.maml import meta_gradient
from metalearn_edu.runtime import resolve_device, seed_everything
from metalearn_edu.tasks import SinusoidTasks


@dataclass
class BenchConfig:
    """What the benchmark measures (defaults: Finn et al. 2017 sinusoid, one torch thread)."""

    meta_batch: int = 25  # T, tasks per meta-iteration
    shots: int = 10  # K support and K query points per task
    inner_steps: int = 1  # inner gradient steps
    seconds: float = 3.0  # measuring time per (implementation, algorithm) pair, after warm-up
    warmup: int = 20  # untimed iterations first
    seed: int = 0
    device: str = "cpu"


def iterations_per_second(config: BenchConfig, *, algo: str, batched: bool) -> float:
    """Run full meta-iterations for ``config.seconds`` and return how many ran per second."""
    device = resolve_device(config.device)
    seed_everything(config.seed)
    model = make_mlp().to(device)
    params = params_of(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(config.seed)
    family = SinusoidTasks()

    def step() -> None:
        batch = family.sample(config.meta_batch, config.shots, config.shots, generator).to(device)
        mg = meta_gradient(model, params, batch, algo=algo, lr=0.01, steps=config.inner_steps, batched=batched)
        for name, p in params.items():
            p.grad = mg.grads[name]
        optimizer.step()

    for _ in range(config.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < config.seconds:
        step()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def bench_maml(config: BenchConfig | None = None, progress: bool = True) -> dict:
    """Meta-iterations/s of {loop, batched} × {maml, fomaml}, measured in one run, and their ratios."""
    config = config or BenchConfig()
    rates: dict[str, dict[str, float]] = {"loop": {}, "batched": {}}
    for impl in ("loop", "batched"):
        for algo in ("maml", "fomaml"):
            rates[impl][algo] = iterations_per_second(config, algo=algo, batched=(impl == "batched"))
            if progress:
                print(f"  {impl:8s} {algo:7s} {rates[impl][algo]:8.1f} meta-iterations/s", flush=True)
    return {
        "config": config.__dict__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, python {platform.python_version()}",
        "iterations_per_second": rates,
        "batched_over_loop": {a: rates["batched"][a] / rates["loop"][a] for a in ("maml", "fomaml")},
        "fomaml_over_maml": {i: rates[i]["fomaml"] / rates[i]["maml"] for i in ("loop", "batched")},
    }
