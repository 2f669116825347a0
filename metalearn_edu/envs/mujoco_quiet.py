"""How this package sets MuJoCo up: its C-level warnings go through Python, and headless machines render with EGL.

MuJoCo reports warnings with ``mju_warning``; its default handler prints ``WARNING: ...`` to stdout *and*
appends the message to ``MUJOCO_LOG.TXT`` in the working directory. Since mujoco 3.16 every compile of
gymnasium's ``half_cheetah.xml`` warns that the compiler attribute ``settotalmass`` is deprecated, so each
``gymnasium.make("HalfCheetah-v5")`` would print a line (which breaks nbval's output comparison) and litter
the working directory with a log file.

:func:`quiet_mujoco_warnings` installs a Python handler with ``mujoco.set_mju_user_warning`` (the bindings'
setter for the C global ``mju_user_warning``; while it is set, MuJoCo calls it instead of printing or
logging). The handler

* keeps every message (see :func:`recent_mujoco_warnings`), so nothing is lost;
* drops the known, harmless compile-time deprecations listed in :data:`SILENCED` without a word;
* re-issues anything else (an unstable simulation: ``Nan, Inf or huge value in QACC ...``) as a Python
  :class:`MujocoWarning`, with the varying ``Time = ...`` suffix removed so that Python's default filter
  shows each kind of problem once instead of once per step.

The handler is installed when this module is imported (every module of this package that makes a MuJoCo
model imports it first); calling :func:`quiet_mujoco_warnings` again does nothing.

Headless rendering: MuJoCo picks its OpenGL platform from ``MUJOCO_GL`` once, when ``mujoco`` is first
imported, and defaults to GLFW, which needs a display. If ``mujoco`` is not imported yet, ``MUJOCO_GL`` is
unset, (on Linux) there is no ``DISPLAY``/``WAYLAND_DISPLAY`` and libEGL and libGL (or libOpenGL) are
installed, this module sets ``MUJOCO_GL=egl`` before importing it, so that ``mujoco.Renderer`` works on a
server with Mesa's software EGL (Debian/Ubuntu: ``apt-get install libegl1 libgl1 libgl1-mesa-dri``).
Without them :mod:`metalearn_edu.render` falls back to matplotlib.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import sys
import warnings
from collections import deque


def _prefer_headless_gl() -> None:
    """Set ``MUJOCO_GL=egl`` on a Linux machine without a display, if mujoco has not chosen a platform yet."""
    no_display = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    undecided = "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules
    # PyOpenGL's EGL platform needs libEGL and libOpenGL or libGL; without them ``import mujoco`` would fail.
    libraries = ctypes.util.find_library("EGL") and (ctypes.util.find_library("OpenGL") or ctypes.util.find_library("GL"))
    if sys.platform.startswith("linux") and no_display and undecided and libraries:
        os.environ["MUJOCO_GL"] = "egl"


_prefer_headless_gl()

import mujoco  # noqa: E402  (after choosing the GL platform)

# Substrings of MuJoCo warnings that are expected and harmless for the gymnasium models this course uses.
SILENCED: tuple[str, ...] = ("compiler attribute 'settotalmass' is deprecated",)

_RECENT: deque[str] = deque(maxlen=200)
_TIME_SUFFIX = re.compile(r"\s*Time = [-+0-9.eE]+\.?\s*$")


class MujocoWarning(RuntimeWarning):
    """A MuJoCo warning that is not in :data:`SILENCED` (typically an unstable simulation)."""


def _handle(message: str) -> None:
    """The ``mju_user_warning`` handler: remember ``message``; re-issue it unless it is silenced."""
    text = str(message).strip()
    _RECENT.append(text)
    if any(known in text for known in SILENCED):
        return
    warnings.warn(f"MuJoCo: {_TIME_SUFFIX.sub('', text)}", MujocoWarning, stacklevel=2)


def quiet_mujoco_warnings() -> None:
    """Install the handler (idempotent); see the module docstring for what it does with each message."""
    if mujoco.get_mju_user_warning() is not _handle:
        mujoco.set_mju_user_warning(_handle)


def recent_mujoco_warnings() -> list[str]:
    """The last (up to 200) MuJoCo warning messages, oldest first, including the silenced ones."""
    return list(_RECENT)


quiet_mujoco_warnings()

__all__ = ["MujocoWarning", "SILENCED", "quiet_mujoco_warnings", "recent_mujoco_warnings"]
