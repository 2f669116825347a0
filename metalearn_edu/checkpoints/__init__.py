"""Trained checkpoints shipped with the package, so notebooks show real results without training.

Each checkpoint is a small state dict (``<name>.pt``, loaded with ``weights_only=True``) next to a
JSON file with its config, the command that produced it and its measured results.

    load_sinusoid("maml")  -> (model, TrainConfig)   # Finn et al. config, 70k meta-iterations
    load_rl("halfcheetah-vel")  -> (policy, RLTrainConfig, state)   # PPO-MAML, meta-trained on a 2-core CPU

Meta-RL checkpoints live in ``rl/<env>_<algo>.pt`` with a JSON card and the run's training log
(``.metrics.jsonl``, one line per meta-iteration).
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


RL_ENVS = ("halfcheetah-vel", "halfcheetah-dir")
RL_ALGOS = ("ppo-maml", "pretrain")


def rl_path(env: str, algo: str = "ppo-maml") -> Path:
    """Where the shipped meta-RL checkpoint of ``env`` trained with ``algo`` lives."""
    if env not in RL_ENVS:
        raise ValueError(f"env must be one of {', '.join(RL_ENVS)}; got {env!r}")
    if algo not in RL_ALGOS:
        raise ValueError(f"algo must be one of {', '.join(RL_ALGOS)}; got {algo!r}")
    return HERE / "rl" / f"{env.replace('-', '_')}_{algo.replace('-', '_')}.pt"


def available_rl() -> list[tuple[str, str]]:
    """The (env, algo) pairs whose meta-RL checkpoint ships with this installation."""
    return [(e, a) for e in RL_ENVS for a in RL_ALGOS if rl_path(e, a).exists()]


def load_rl(env: str, algo: str = "ppo-maml", device: str | torch.device = "cpu") -> tuple[nn.Module, "RLTrainConfig", dict]:  # noqa: F821
    """The shipped policy of ``env`` trained with ``algo``: (policy, RLTrainConfig, state dict)."""
    from metalearn_edu.rl.train import load_rl_checkpoint

    path = rl_path(env, algo)
    if not path.exists():
        raise FileNotFoundError(f"no shipped checkpoint for {env} / {algo} (have: {available_rl()}); "
                                f"train one with 'metalearn-edu train {env} --algo {algo}'")
    return load_rl_checkpoint(path, device)


def rl_card(env: str, algo: str = "ppo-maml") -> dict:
    """The JSON card of a shipped meta-RL checkpoint: config, command, seed, wall-clock, evaluation."""
    return json.loads(rl_path(env, algo).with_suffix(".json").read_text())


def rl_metrics(env: str, algo: str = "ppo-maml") -> list[dict]:
    """The training log of a shipped meta-RL checkpoint, one dict per meta-iteration."""
    text = rl_path(env, algo).with_suffix(".metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def rl_smoke_returns(env: str, algo: str = "ppo-maml") -> torch.Tensor:
    """Mean return per test task after 0 and 1 adaptation steps on 2 tasks x 2 rollouts, horizon 50: (2, 2).

    A few seconds of evaluation whose result the card records, so a test can tell the file is unchanged.
    """
    from metalearn_edu.rl.evaluate import Protocol, adaptation_returns
    from metalearn_edu.rl.train import make_sampler

    policy, config, _ = load_rl(env, algo)
    protocol = Protocol(steps=1, test_tasks=2, rollouts=2, horizon=50)
    config.horizon = protocol.horizon
    with make_sampler(config) as sampler:
        return adaptation_returns(policy, sampler, protocol)


def export_rl(run_dir: str | Path, env: str, algo: str, card: dict) -> Path:
    """Copy a meta-RL run's policy (no optimizer state), its card and its training log into the package."""
    run_dir = Path(run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    path = rl_path(env, algo)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("policy", "policy_spec", "config", "iteration")
    torch.save({key: state[key] for key in keep}, path)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    lines = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines()  # up to the checkpoint
             if line.strip() and json.loads(line)["iteration"] <= state["iteration"]]
    path.with_suffix(".metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path
