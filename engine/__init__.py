"""faceengine: challenge videos to clean, labelled face data, on a CPU or a CUDA GPU with the same code.

The public API is one function per verb (``engine.api``), importable from here::

    import engine

    summary = engine.run("my_challenge.toml", "videos/", runtype="prod")
    faces = engine.embed(["photo.jpg"])  # path -> faces with box, score, landmarks, 128-d embedding
    engine.label("film.mp4", "labels/", gallery="actors/")
    engine.search("person.jpg", ["a.mp4", "b.mp4"], "clips/")

Errors a user can fix are one of ``engine.USER_ERRORS``. The packages follow the data path (config → sources →
media → faces → track → cluster → dedup → store, wired by ``pipeline``; ``apps`` and ``tools`` beside it) and are
private to the engine: ``docs/ARCHITECTURE.md`` draws the map. Names load on first use, so importing ``engine``
does not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "USER_ERRORS",
    "align",
    "bench",
    "detect",
    "doctor",
    "embed",
    "export",
    "export_onnx",
    "label",
    "merge",
    "monitor",
    "report",
    "run",
    "search",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
