"""The HalfCheetah meta-RL checkpoints shipped as package data: safe to load, documented, and unchanged.

Training outcomes are not asserted here (docs/RESULTS.md records them with their commands); what is
checked is that each file loads with ``weights_only=True``, that its card says how to reproduce it, that
its training log covers every iteration, and that a tiny evaluation re-measures the card's numbers.
"""

import shlex

import pytest
import torch

from metalearn_edu.checkpoints import RL_ENVS, available_rl, load_rl, rl_card, rl_metrics, rl_path, rl_smoke_returns

SHIPPED = available_rl()


def test_both_cheetah_tasks_ship_a_ppo_maml_policy():
    for env in RL_ENVS:
        assert (env, "ppo-maml") in SHIPPED, f"missing metalearn_edu/checkpoints/rl/ checkpoint for {env}"


@pytest.mark.parametrize(("env", "algo"), SHIPPED)
def test_card_says_how_to_reproduce_it(env, algo):
    torch.load(rl_path(env, algo), weights_only=True)
    policy, config, state = load_rl(env, algo)
    card = rl_card(env, algo)
    words = shlex.split(card["command"])
    assert words[:3] == ["metalearn-edu", "train", env]
    assert words[words.index("--algo") + 1] == algo == config.algo
    assert int(words[words.index("--iterations") + 1]) == card["iterations"] == state["iteration"]
    assert int(words[words.index("--seed") + 1]) == card["seed"] == config.seed
    assert card["training_wall_clock_s"] > 0
    log = rl_metrics(env, algo)
    assert [m["iteration"] for m in log] == list(range(1, card["iterations"] + 1))
    if algo == "ppo-maml":
        evaluation = card["evaluation"]
        assert evaluation["protocol"]["test_tasks"] == 40 and evaluation["protocol"]["rollouts"] == 20
        assert evaluation["steps"] == [0, 1, 2, 3]


@pytest.mark.parametrize(("env", "algo"), SHIPPED)
def test_smoke_evaluation_on_the_card_is_reproduced(env, algo):
    measured = rl_smoke_returns(env, algo)
    expected = torch.tensor(rl_card(env, algo)["smoke"]["returns"], dtype=measured.dtype)
    torch.testing.assert_close(measured, expected, rtol=1e-4, atol=1e-3)


def test_unknown_names_are_named():
    with pytest.raises(ValueError, match="env must be one of"):
        rl_path("halfcheetah-velocity")
    with pytest.raises(ValueError, match="algo must be one of"):
        rl_path("halfcheetah-vel", "ppo")
