"""The sinusoid checkpoints shipped as package data load safely and reproduce the numbers on their cards."""

import pytest
import torch

from metalearn_edu.checkpoints import SINUSOID_ALGOS, available_sinusoid, load_sinusoid, sinusoid_card, sinusoid_path
from metalearn_edu.evaluate import evaluate_sinusoid


def test_all_four_ship_and_load_with_weights_only():
    assert available_sinusoid() == list(SINUSOID_ALGOS)
    for algo in SINUSOID_ALGOS:
        torch.load(sinusoid_path(algo), weights_only=True)
        model, config = load_sinusoid(algo)
        assert config.algo == algo and config.iterations == 70_000


@pytest.mark.parametrize("algo", ["maml"])
def test_card_numbers_are_reproduced_by_the_evaluation(algo):
    card = sinusoid_card(algo)
    model, config = load_sinusoid(algo)
    result = evaluate_sinusoid(model, tasks=600, shots=5, max_steps=10, lr=config.inner_lr, seed=0)
    for steps, value in card["eval_5shot_600_tasks"]["mse"].items():
        assert result.mean[int(steps)] == pytest.approx(value, rel=1e-4)


def test_maml_adapts_far_better_than_the_pretrained_baseline():
    maml, _ = load_sinusoid("maml")
    pretrain, _ = load_sinusoid("pretrain")
    a = evaluate_sinusoid(maml, tasks=200, shots=5, max_steps=10, seed=5)
    b = evaluate_sinusoid(pretrain, tasks=200, shots=5, max_steps=10, seed=5)
    for s in (1, 5, 10):
        assert a.mean[s] + a.ci95[s] < b.mean[s] - b.ci95[s]


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match="algo must be one of"):
        load_sinusoid("mamll")
