"""Still photos through the face models, file by file, for ``cli.py detect`` (and ``embed`` later).

A file that cannot be read gives a per-file error entry; the other files are still processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .decode import DecodeError, load_image
from .faces import FaceDetector, detections_to_json


def detect_files(
    paths: Sequence[str | Path],
    detector: FaceDetector,
    long_side: int | None = None,
    threshold: float = 0.5,
    rotate: bool = False,
) -> dict[str, list[dict] | dict[str, str]]:
    """Map each path (as given) to its faces in original-image pixels, or to ``{"error": message}``."""
    if long_side is not None and long_side < 16:
        raise ValueError("--long-side must be at least 16 pixels")
    results: dict[str, list[dict] | dict[str, str]] = {}
    for path in paths:
        try:
            img = load_image(path)
        except DecodeError as exc:
            results[str(path)] = {"error": str(exc)}
            continue
        scale = 1.0 if long_side is None else long_side / max(img.shape[-2:])
        find = detector.detect_with_rotation if rotate else detector.detect
        results[str(path)] = detections_to_json(find(img[None], scale, threshold))
    return results
