"""Rendering: the matplotlib fallback draws the robot and writes a gif; backends, errors, notebook helper."""

from __future__ import annotations

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
