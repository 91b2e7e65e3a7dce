"""Still photos through the face models, file by file, for ``cli.py detect`` and ``cli.py embed``.

A file that cannot be read gives a per-file error entry; the other files are still processed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from engine.faces.detect import Detections, FaceDetector, detections_to_json
from engine.faces.embed import FaceEmbedder
from engine.media import DecodeError, load_image

Result = dict[str, list[dict] | dict[str, str]]


def _each_file(
    paths: Sequence[str | Path],
    detector: FaceDetector,
    long_side: int | None,
    threshold: float,
    rotate: bool,
    describe: Callable[[torch.Tensor, Detections], list[dict]],
) -> Result:
    """Load, detect and ``describe`` every path; unreadable files become ``{"error": message}``."""
    if long_side is not None and long_side < 16:
        raise ValueError("--long-side must be at least 16 pixels")
    results: Result = {}
    for path in paths:
        try:
            img = load_image(path)
        except DecodeError as exc:
            results[str(path)] = {"error": str(exc)}
            continue
        scale = 1.0 if long_side is None else long_side / max(img.shape[-2:])
        find = detector.detect_with_rotation if rotate else detector.detect
        results[str(path)] = describe(img[None], find(img[None], scale, threshold))
    return results


def detect_files(
    paths: Sequence[str | Path],
    detector: FaceDetector,
    long_side: int | None = None,
    threshold: float = 0.5,
    rotate: bool = False,
) -> Result:
    """Map each path (as given) to its faces in original-image pixels, or to ``{"error": message}``."""
    return _each_file(paths, detector, long_side, threshold, rotate, lambda _img, det: detections_to_json(det))


def embed_files(
    paths: Sequence[str | Path],
    detector: FaceDetector,
    embedder: FaceEmbedder,
    long_side: int | None = None,
    threshold: float = 0.5,
    rotate: bool = False,
) -> Result:
    """Like :func:`detect_files`, each face also carrying its 128-d ``embedding`` (aligned from the original image,
    whatever ``long_side`` the detector ran at)."""

    def describe(img: torch.Tensor, det: Detections) -> list[dict]:
        faces = detections_to_json(det)
        for face, vector in zip(faces, embedder.embed(img, det).cpu().tolist(), strict=True):
            face["embedding"] = [round(v, 6) for v in vector]
        return faces

    return _each_file(paths, detector, long_side, threshold, rotate, describe)
