"""Showing videos in a notebook: one video, or the before | after table of ``metalearn-edu render``.

Videos are embedded (base64 for the HTML helpers), so a saved notebook still shows them without the
files. Nothing here imports MuJoCo: a notebook can show videos rendered elsewhere.

>>> show_video("runs/cheetah.gif")
>>> before_after_html("runs/render/halfcheetahvel")   # the folder 'metalearn-edu render' wrote
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["before_after_html", "show_video", "video_html"]


def show_video(path: str | Path, width: int | None = None) -> Any:
    """An IPython display object for a .gif (an embedded Image) or .mp4 (an embedded Video)."""
    from IPython.display import Image, Video

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    if path.suffix.lower() == ".gif":
        return Image(data=path.read_bytes(), format="gif", width=width)
    return Video(str(path), embed=True, width=width, html_attributes="controls loop autoplay muted")


def video_html(path: str | Path, width: int = 320) -> str:
    """An HTML element showing the .gif (``<img>``) or .mp4 (``<video>``) at ``path``, its bytes embedded as
    base64, so a saved notebook still shows it without the file."""
    import base64

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    if path.suffix.lower() == ".gif":
        return f'<img src="data:image/gif;base64,{data}" width="{int(width)}"/>'
    return f'<video width="{int(width)}" controls loop autoplay muted><source src="data:video/mp4;base64,{data}" type="video/mp4"/></video>'


def before_after_html(videos: str | Path | Sequence[str | Path] | Mapping[str, str | Path], width: int = 320) -> Any:
    """An IPython HTML object showing videos side by side, embedded (works in a saved notebook).

    ``videos``: the folder (or ``render.json``) written by ``metalearn-edu render`` - one row per goal,
    before | after K steps, each captioned with its return; a mapping caption -> path (one row); or a
    sequence of paths (one row, captioned with the file names).
    """
    import html
    import json

    from IPython.display import HTML

    if isinstance(videos, (str, Path)):
        index = Path(videos)
        index = index / "render.json" if index.is_dir() else index
        if not index.is_file():
            raise FileNotFoundError(f"videos must be a folder written by 'metalearn-edu render' (with render.json), got {videos}")
        record = json.loads(index.read_text())
        rows: list[list[tuple[str, Path]]] = []
        for goal in record["goals"]:
            row = [v for v in record["videos"] if v["goal"] == goal]
            rows.append([(f"{record['task_key']} {goal:g}, {_stage_caption(v)}: return {v['return']:.1f}", index.parent / v["file"]) for v in row])
    elif isinstance(videos, Mapping):
        rows = [[(str(caption), Path(path)) for caption, path in videos.items()]]
    else:
        rows = [[(Path(path).name, Path(path)) for path in videos]]
    cells = "".join(
        "<tr>" + "".join(f'<td style="text-align:center">{video_html(path, width)}<br/>{html.escape(caption)}</td>' for caption, path in row) + "</tr>"
        for row in rows
    )
    return HTML(f"<table>{cells}</table>")


def _stage_caption(video: Mapping[str, Any]) -> str:
    k = video["adaptation_steps"]
    return "before adaptation" if k == 0 else f"after {k} step{'s' if k > 1 else ''}"
