"""Rendering: the matplotlib fallback draws the robot and writes a gif; backends, errors, notebook helper."""

from __future__ import annotations

import json

import metalearn_edu.envs  # noqa: F401  # registers the envs; imports mujoco_quiet before mujoco  # isort: skip
import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from metalearn_edu.render import (
    GLRenderer,
    StickFigureRenderer,
    make_renderer,
    render_before_after,
    render_policy,
    show_video,
    write_video,
)
from metalearn_edu.rl.policies import GaussianMLPPolicy


@pytest.fixture
def policy() -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(17, 6)


@pytest.mark.parametrize("env_id", ["metalearn_edu/HalfCheetahVel-v0", "metalearn_edu/AntDir-v0"])
def test_stick_figure_frames_show_the_robot_and_follow_it(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    renderer = StickFigureRenderer(env.model, width=160, height=120)
    frame = renderer.render(env.data)
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    background = frame[0, 0]
    assert (np.abs(frame.astype(int) - background).sum(axis=2) > 60).mean() > 0.01  # the body covers pixels
    env.data.qpos[0] += 10.0  # far ahead: the camera follows, so the picture barely changes
    import mujoco

    mujoco.mj_forward(env.model, env.data)
    moved = renderer.render(env.data)
    assert (np.abs(moved.astype(int) - frame.astype(int)).sum(axis=2) > 60).mean() < 0.05


def test_render_policy_with_the_fallback_writes_a_non_empty_gif(tmp_path, policy: GaussianMLPPolicy) -> None:
    path = render_policy(
        "metalearn_edu/HalfCheetahVel-v0", policy, None, tmp_path / "cheetah.gif", task={"velocity": 1.0},
        backend="matplotlib", width=96, height=64, max_steps=6,
    )
    assert path.stat().st_size > 0
    frames = imageio.mimread(path)
    assert len(frames) == 7 and frames[0].shape[:2] == (64, 96)  # the reset state and 6 steps


def test_render_before_after_writes_one_video_per_goal_and_stage(tmp_path, policy: GaussianMLPPolicy) -> None:
    after = {k: v + 0.05 for k, v in policy.parameters_dict().items()}
    written = render_before_after(
        "metalearn_edu/HalfCheetahDir-v0", policy, None, {-1.0: after, 1.0: after}, tmp_path, suffix=".gif",
        backend="matplotlib", width=64, height=48, max_steps=2,
    )
    assert sorted(written) == ["after_direction_+1.00", "after_direction_-1.00", "before_direction_+1.00", "before_direction_-1.00"]
    assert all(p.exists() and p.stat().st_size > 0 for p in written.values())
    assert type(show_video(written["after_direction_+1.00"])).__name__ == "Image"


def test_env_render_returns_rgb_frames_whatever_the_backend() -> None:
    env = gym.make("metalearn_edu/HalfCheetahVel-v0", render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0


def test_opengl_renderer_when_available() -> None:
    env = gym.make("metalearn_edu/HalfCheetahVel-v0").unwrapped
    env.reset(seed=0)
    try:
        renderer = GLRenderer(env.model, 64, 48)
    except Exception as err:  # no OpenGL platform on this machine: the fallback covers it
        pytest.skip(f"MuJoCo's OpenGL renderer is not available here: {err}")
    frame = renderer.render(env.data)
    renderer.close()
    assert frame.shape == (48, 64, 3) and frame.std() > 0


def test_bad_arguments_raise_clear_errors(tmp_path) -> None:
    env = gym.make("metalearn_edu/HalfCheetahVel-v0").unwrapped
    with pytest.raises(ValueError, match="backend must be one of"):
        make_renderer(env.model, backend="vulkan")
    with pytest.raises(ValueError, match="path must end in '.gif' or '.mp4'"):
        write_video(tmp_path / "x.avi", [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="frames must be a non-empty"):
        write_video(tmp_path / "x.gif", [])
    with pytest.raises(ValueError, match="scalar goal"):
        render_before_after("metalearn_edu/HalfCheetahMass-v0", None, None, {}, tmp_path)
    with pytest.raises(FileNotFoundError):
        show_video(tmp_path / "missing.gif")


# --- metalearn-edu render <env> ---------------------------------------------------------------------
TINY_RENDER = ["--backend", "matplotlib", "--format", "gif", "--horizon", "6", "--rollouts", "2", "--width", "48", "--height", "32"]


def _tiny_checkpoint(path, env: str) -> str:
    """A meta-RL checkpoint as train_rl writes it (policy, spec, config), for a small untrained policy."""
    from dataclasses import asdict

    from metalearn_edu.rl.train import RLTrainConfig, policy_spec

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6, (8,))
    config = RLTrainConfig.for_env(env, hidden=(8,), horizon=6)
    torch.save({"policy": policy.state_dict(), "policy_spec": policy_spec(policy), "config": asdict(config), "iteration": 1}, path)
    return str(path)


@pytest.fixture(scope="module")
def cheetah_checkpoints(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {env: _tiny_checkpoint(folder / f"{env}.pt", env) for env in ("halfcheetahvel", "halfcheetahdir")}


def test_render_cli_writes_before_and_after_videos_per_goal_and_a_record(tmp_path, capsys, cheetah_checkpoints) -> None:
    from metalearn_edu.cli import main

    out = tmp_path / "vel"
    argv = ["render", "halfcheetah-vel", "--checkpoint", cheetah_checkpoints["halfcheetahvel"], "--goal", "0.5", "--goal", "1.5",
            "--seed", "3", *TINY_RENDER]
    assert main([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "goal_0.5_before.gif, goal_0.5_after_1.gif" in table and "goal_1.5_after_1.gif" in table
    names = ["goal_0.5_before.gif", "goal_0.5_after_1.gif", "goal_1.5_before.gif", "goal_1.5_after_1.gif"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "render.json"])
    assert len(imageio.mimread(out / "goal_1.5_after_1.gif")) == 7  # the reset state and 6 steps
    record = json.loads((out / "render.json").read_text())
    assert record["files"] == names and record["goals"] == [0.5, 1.5] and record["seed"] == 3
    assert record["checkpoint"] == cheetah_checkpoints["halfcheetahvel"] and record["renderer"] == "matplotlib"
    assert (record["steps"], record["rollouts"], record["step_sizes"], record["horizon"]) == (1, 2, [0.1], 6)
    assert [(v["goal"], v["adaptation_steps"]) for v in record["videos"]] == [(0.5, 0), (0.5, 1), (1.5, 0), (1.5, 1)]
    assert all(np.isfinite(v["return"]) and np.isfinite(v["sampled_mean_return"]) for v in record["videos"])
    # one seed reproduces the episodes; another seed gives others
    assert main([*argv, "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "render.json").read_text())
    assert [v["return"] for v in again["videos"]] == [v["return"] for v in record["videos"]]
    assert [v["sampled_mean_return"] for v in again["videos"]] == [v["sampled_mean_return"] for v in record["videos"]]
    assert main([*argv[:-2], "--seed", "4", "--out", str(tmp_path / "other")]) == 0
    other = json.loads((tmp_path / "other" / "render.json").read_text())
    assert [v["return"] for v in other["videos"]] != [v["return"] for v in record["videos"]]


def test_render_cli_direction_goals_and_several_steps(tmp_path, capsys, cheetah_checkpoints) -> None:
    from metalearn_edu.cli import main

    assert main(["render", "halfcheetahdir", "--checkpoint", cheetah_checkpoints["halfcheetahdir"], "--goal", "-1", "--steps", "2",
                 *TINY_RENDER, "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "render.json").read_text())
    assert record["files"] == ["goal_-1_before.gif", "goal_-1_after_2.gif"] and record["step_sizes"] == [0.1, 0.05]
    assert "direction" in capsys.readouterr().out


def test_render_cli_bad_goal_or_checkpoint_is_a_clear_error(tmp_path, capsys, cheetah_checkpoints) -> None:
    from metalearn_edu.cli import main

    vel, direction = cheetah_checkpoints["halfcheetahvel"], cheetah_checkpoints["halfcheetahdir"]
    assert main(["render", "halfcheetah-vel", "--checkpoint", vel, "--goal", "0.5", "--goal", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--goal must be in [0, 2] for halfcheetahvel" in err and err.strip().endswith("got 3")
    assert main(["render", "halfcheetah-dir", "--checkpoint", direction, "--goal", "0.5", "--out", str(tmp_path)]) == 2
    assert "--goal must be one of -1, +1 for halfcheetahdir" in capsys.readouterr().err
    assert main(["render", "halfcheetah-vel", "--checkpoint", direction, "--out", str(tmp_path)]) == 2
    assert "was trained on 'halfcheetahdir'" in capsys.readouterr().err
    assert main(["render", "antvel", "--out", str(tmp_path)]) == 2
    assert "--checkpoint is required for antvel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["render", "halfcheetah-vel", "--goal", "fast"])
    assert "--goal" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_render_cli_help_explains_every_flag(capsys) -> None:
    from metalearn_edu.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["render", "halfcheetah-vel", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--checkpoint", "--goal", "--steps", "--rollouts", "--seed", "--backend", "--horizon", "--fps", "--out", "--format"):
        assert flag in text
    assert "[0, 2]" in text and "shipped" in text


def test_render_cli_uses_the_shipped_checkpoint_by_default(tmp_path, capsys) -> None:
    from metalearn_edu.checkpoints import available_rl, rl_path
    from metalearn_edu.cli import main

    if ("halfcheetah-vel", "ppo-maml") not in available_rl():
        pytest.skip("no shipped halfcheetah-vel checkpoint in this installation")
    assert main(["render", "halfcheetah-vel", "--goal", "1", *TINY_RENDER, "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "render.json").read_text())["checkpoint"] == str(rl_path("halfcheetah-vel"))


def test_before_after_html_embeds_the_videos_side_by_side(tmp_path, cheetah_checkpoints) -> None:
    from metalearn_edu.render import before_after_html
    from metalearn_edu.render_cli import render_adaptation
    from metalearn_edu.rl.train import load_rl_checkpoint

    policy, config, _ = load_rl_checkpoint(cheetah_checkpoints["halfcheetahvel"])
    render_adaptation("halfcheetahvel", policy, config, [1.0], tmp_path, rollouts=2, backend="matplotlib", width=32, height=24, suffix=".gif")
    page = before_after_html(tmp_path).data
    assert page.count("data:image/gif;base64,") == 2 and page.count("<tr>") == 1
    assert "velocity 1, before adaptation: return" in page and "velocity 1, after 1 step: return" in page
    single = before_after_html({"before": tmp_path / "goal_1_before.gif", "after": tmp_path / "goal_1_after_1.gif"}).data
    assert single.count("<td") == 2 and "<br/>before</td>" in single and single.index("before</td>") < single.index("after</td>")
    with pytest.raises(FileNotFoundError):
        before_after_html(tmp_path / "missing")
