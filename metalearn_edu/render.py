"""Videos of locomotion policies: roll out one episode, render each step, write a gif or mp4.

Two ways to draw a frame, picked automatically (``backend="auto"``):

* ``"gl"`` (alias ``"mujoco"``): MuJoCo's OpenGL renderer (``mujoco.Renderer``), shaded 3D images. Headless it needs an
  OpenGL platform library: ``MUJOCO_GL=egl`` with Mesa's EGL (Debian ``libegl1 libgl1 libgl1-mesa-dri``; set by
  :mod:`metalearn_edu.envs.mujoco_quiet` when there is no display) or ``MUJOCO_GL=osmesa`` (``libosmesa6``).
* ``"matplotlib"``: a stick figure drawn from ``MjData`` alone: every capsule geom is the segment
  p +/- h R e_z (p = ``geom_xpos``, R = ``geom_xmat``, h = half-length), every sphere a disc, projected on
  the x-z plane (side view) with the camera following the torso. Needs no OpenGL at all.

When the OpenGL renderer cannot start, the reason and the fallback are printed once.

>>> path = render_policy("metalearn_edu/HalfCheetahVel-v0", policy, params, "runs/cheetah.gif", task={"velocity": 1.5})
>>> show_video(path)   # in a notebook (metalearn_edu.video_display, re-exported here)
>>> before_after_html("runs/render/halfcheetahvel")   # the videos of 'metalearn-edu render', side by side
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from metalearn_edu.envs import mujoco_quiet  # noqa: F401  (chooses EGL headless before mujoco is imported)

import mujoco  # noqa: E402

from metalearn_edu.video_display import before_after_html, show_video, video_html  # noqa: E402  (re-exported)

BACKENDS = ("auto", "gl", "mujoco", "matplotlib")  # "gl" and "mujoco" both mean MuJoCo's OpenGL renderer
_WARNED: set[str] = set()


class StickFigureRenderer:
    """Draw ``MjData`` as capsules and spheres projected on the x-z plane with matplotlib (Agg), no OpenGL.

    ``render(data)`` returns an RGB image (height, width, 3) uint8 of the window of ``span`` metres
    centred on body 1 (the torso) in x, from z = -0.3 * span/2 to z = span/2 * height/width * 1.7.
    """

    def __init__(self, model: mujoco.MjModel, width: int = 320, height: int = 240, span: float = 4.0) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure

        self.model, self.width, self.height, self.span = model, int(width), int(height), float(span)
        dpi = 100
        self.figure = Figure(figsize=(self.width / dpi, self.height / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_axes((0, 0, 1, 1))
        self.axes.set_axis_off()
        self.axes.set_facecolor((0.93, 0.95, 1.0))
        self.figure.patch.set_facecolor((0.93, 0.95, 1.0))
        self.z_low = -0.15 * self.span
        self.z_high = self.z_low + self.span * self.height / self.width
        points_per_metre = self.width / self.span * 72.0 / dpi
        self.capsules = np.flatnonzero(model.geom_type == mujoco.mjtGeom.mjGEOM_CAPSULE)
        self.spheres = np.flatnonzero(model.geom_type == mujoco.mjtGeom.mjGEOM_SPHERE)
        colours = np.clip(model.geom_rgba[:, :3] * 0.8, 0.0, 1.0)
        self.ground = self.axes.axhline(0.0, color=(0.35, 0.45, 0.35), linewidth=2)
        self.ticks = LineCollection([], colors=[(0.55, 0.6, 0.55)], linewidths=1)
        self.limbs = LineCollection(
            [], colors=colours[self.capsules], linewidths=2 * model.geom_size[self.capsules, 0] * points_per_metre,
            capstyle="round",
        )
        self.axes.add_collection(self.ticks)
        self.axes.add_collection(self.limbs)
        self.balls = self.axes.scatter(
            np.zeros(len(self.spheres)), np.zeros(len(self.spheres)), c=colours[self.spheres],
            s=(2 * model.geom_size[self.spheres, 0] * points_per_metre) ** 2,
        )

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """The frame for ``data`` (its ``geom_xpos``/``geom_xmat``, i.e. after a step or ``mj_forward``)."""
        centre = float(data.xpos[1, 0])
        axis = data.geom_xmat.reshape(-1, 3, 3)[self.capsules, :, 2]  # (n, 3) capsule axes in the world
        half = self.model.geom_size[self.capsules, 1][:, None]
        ends = np.stack([data.geom_xpos[self.capsules] - half * axis, data.geom_xpos[self.capsules] + half * axis], 1)
        self.limbs.set_segments(ends[:, :, [0, 2]])
        self.balls.set_offsets(data.geom_xpos[self.spheres][:, [0, 2]])
        marks = np.arange(np.floor(centre - self.span), centre + self.span, 0.5)  # ground marks show the motion
        self.ticks.set_segments([[(m, 0.0), (m - 0.1, -0.08)] for m in marks])
        self.axes.set_xlim(centre - self.span / 2, centre + self.span / 2)
        self.axes.set_ylim(self.z_low, self.z_high)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[:, :, :3].copy()

    def close(self) -> None:
        self.figure.clear()


class GLRenderer:
    """``mujoco.Renderer`` with a camera that tracks the torso from the side (MuJoCo's shaded images)."""

    def __init__(self, model: mujoco.MjModel, width: int = 320, height: int = 240, distance: float = 4.0) -> None:
        self.renderer = mujoco.Renderer(model, height=int(height), width=int(width))
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        self.camera.trackbodyid = 1
        self.camera.distance, self.camera.azimuth, self.camera.elevation = distance, 90.0, -15.0

    def render(self, data: mujoco.MjData) -> np.ndarray:
        self.renderer.update_scene(data, camera=self.camera)
        return self.renderer.render().copy()

    def close(self) -> None:
        self.renderer.close()


def make_renderer(model: mujoco.MjModel, width: int = 320, height: int = 240, backend: str = "auto") -> GLRenderer | StickFigureRenderer:
    """A frame renderer for ``model``: OpenGL if ``backend`` is 'gl'/'mujoco' or ('auto' and it starts), else matplotlib."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "matplotlib":
        try:
            return GLRenderer(model, width, height)
        except Exception as err:  # no OpenGL platform: mujoco raises FatalError, ImportError, AttributeError...
            if backend != "auto":
                raise RuntimeError(f"MuJoCo's OpenGL renderer could not start: {err}") from err
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if reason not in _WARNED:
                _WARNED.add(reason)
                print(
                    "metalearn-edu render: MuJoCo's OpenGL renderer is not available here "
                    f"(MUJOCO_GL={mujoco_gl()!r}; {reason}); drawing stick figures with matplotlib instead. "
                    "For shaded frames install libegl1, libgl1 and libgl1-mesa-dri and set MUJOCO_GL=egl before Python starts.",
                    file=sys.stderr,
                )
    return StickFigureRenderer(model, width, height)


def renderer_kind(renderer: GLRenderer | StickFigureRenderer) -> str:
    """'gl' for MuJoCo's OpenGL renderer, 'matplotlib' for the stick figures."""
    return "gl" if isinstance(renderer, GLRenderer) else "matplotlib"


def mujoco_gl() -> str | None:
    """The OpenGL platform MuJoCo was told to use (the ``MUJOCO_GL`` environment variable), or None."""
    return os.environ.get("MUJOCO_GL")


def rollout_frames(
    env: Any,
    policy: Any,
    params: Mapping[str, torch.Tensor] | None,
    *,
    task: dict[str, Any] | None = None,
    seed: int = 0,
    deterministic: bool = True,
    renderer: GLRenderer | StickFigureRenderer | None = None,
    max_steps: int | None = None,
) -> tuple[list[np.ndarray], float]:
    """Roll out one episode of ``policy`` at ``params`` in ``env`` (a gymnasium locomotion env) and render it.

    Returns the frames (the reset state, then one per step; each (height, width, 3) uint8) and the return.
    The mean action is used when ``deterministic`` (the default), else a ~ pi(.|s) sampled with ``seed``.
    """
    base = env.unwrapped
    if task is not None:
        base.set_task(task)
    own = renderer is None
    renderer = renderer or make_renderer(base.model)
    generator = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    frames, total, steps = [renderer.render(base.data)], 0.0, 0
    try:
        while True:
            with torch.no_grad():
                obs_t = torch.as_tensor(obs, dtype=torch.get_default_dtype())
                action = policy.act(params, obs_t, generator, deterministic=deterministic).actions
            obs, reward, terminated, truncated, _ = env.step(action.numpy().astype(np.float64))
            total += float(reward)
            steps += 1
            frames.append(renderer.render(base.data))
            if terminated or truncated or (max_steps is not None and steps >= max_steps):
                return frames, total
    finally:
        if own:
            renderer.close()


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 20.0) -> Path:
    """Write ``frames`` to ``path``: '.gif' (always available, via Pillow) or '.mp4' (needs imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    if len(frames) == 0:
        raise ValueError("frames must be a non-empty sequence of (height, width, 3) uint8 images")
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"path must end in '.gif' or '.mp4', got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        imageio.mimsave(path, list(frames), duration=1000.0 / fps, loop=0)
        return path
    try:
        imageio.mimsave(path, list(frames), fps=fps, macro_block_size=8)
    except (ValueError, ImportError) as err:
        raise ValueError(f"writing {path.name} needs an mp4 encoder: pip install imageio-ffmpeg, or write a .gif ({err})") from err
    return path


def video_suffix() -> str:
    """'.mp4' if imageio can encode mp4 here (imageio-ffmpeg installed), else '.gif'."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return ".gif"
    return ".mp4"


class Episode(NamedTuple):
    """One video to render: ``policy`` at ``params`` (None: its own) on ``task``, written to ``path``."""

    path: str | Path
    params: Mapping[str, torch.Tensor] | None
    task: dict[str, Any] | None = None


class RenderedEpisode(NamedTuple):
    """A written video, the return of its episode, its number of frames and the renderer that drew it."""

    path: Path
    episode_return: float
    frames: int
    renderer: str  # 'gl' or 'matplotlib'


def render_episodes(
    env_id: str,
    policy: Any,
    episodes: Sequence[Episode],
    *,
    seed: int = 0,
    preset: str = "paper",
    width: int = 320,
    height: int = 240,
    fps: float = 20.0,
    backend: str = "auto",
    max_steps: int | None = None,
) -> list[RenderedEpisode]:
    """Render each of ``episodes`` (one env and one renderer for all), each from ``env.reset(seed=seed)``.

    The same ``seed`` gives every episode the same initial state, so videos of different parameters
    show the same robot from the same start. Actions are the policy's mean (see :func:`rollout_frames`).
    """
    import gymnasium as gym

    import metalearn_edu.envs  # noqa: F401  (registers the meta-envs)

    env = gym.make(env_id, preset=preset)
    written = []
    try:
        renderer = make_renderer(env.unwrapped.model, width, height, backend)
        try:
            for episode in episodes:
                frames, total = rollout_frames(env, policy, episode.params, task=episode.task, seed=seed, renderer=renderer, max_steps=max_steps)
                written.append(RenderedEpisode(write_video(episode.path, frames, fps), total, len(frames), renderer_kind(renderer)))
        finally:
            renderer.close()
    finally:
        env.close()
    return written


def render_policy(
    env_id: str,
    policy: Any,
    params: Mapping[str, torch.Tensor] | None,
    path: str | Path,
    *,
    task: dict[str, Any] | None = None,
    seed: int = 0,
    **render_kwargs: Any,
) -> Path:
    """Render one episode of ``policy`` at ``params`` on ``task`` of ``env_id`` to ``path`` (.gif or .mp4).

    ``render_kwargs``: ``preset``, ``width``, ``height``, ``fps``, ``backend``, ``max_steps`` of :func:`render_episodes`.
    """
    return render_episodes(env_id, policy, [Episode(path, params, task)], seed=seed, **render_kwargs)[0].path


def render_before_after(
    env_id: str,
    policy: Any,
    params_before: Mapping[str, torch.Tensor] | None,
    params_after_by_goal: Mapping[float, Mapping[str, torch.Tensor]],
    out_dir: str | Path,
    *,
    seed: int = 0,
    suffix: str | None = None,
    **render_kwargs: Any,
) -> dict[str, Path]:
    """For each goal g (v* or d) write ``before_<key>_<g>`` (meta-parameters) and ``after_<key>_<g>`` (adapted).

    ``params_after_by_goal`` maps a goal value to the parameters adapted to it; the task is
    ``{key: g}`` with key the family's task key ('velocity' or 'direction'). Returns name -> path.
    """
    from metalearn_edu.envs.locomotion import get_family

    key = get_family(env_id).task_key
    if key == "mass_scale":
        raise ValueError(f"env_id must be a family with a scalar goal (velocity or direction), got {env_id!r}")
    suffix = suffix or video_suffix()
    names, episodes = [], []
    for goal, params_after in params_after_by_goal.items():
        for stage, params in (("before", params_before), ("after", params_after)):
            names.append(f"{stage}_{key}_{float(goal):+.2f}")
            episodes.append(Episode(Path(out_dir) / f"{names[-1]}{suffix}", params, {key: float(goal)}))
    rendered = render_episodes(env_id, policy, episodes, seed=seed, **render_kwargs)
    return {name: r.path for name, r in zip(names, rendered)}


__all__ = [
    "BACKENDS",
    "Episode",
    "GLRenderer",
    "RenderedEpisode",
    "StickFigureRenderer",
    "before_after_html",
    "make_renderer",
    "render_before_after",
    "render_episodes",
    "render_policy",
    "renderer_kind",
    "rollout_frames",
    "show_video",
    "video_html",
    "video_suffix",
    "write_video",
]
