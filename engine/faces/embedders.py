"""The face embedders a run can choose (``[faces] embedder`` in the challenge, ``--embedder`` on the command line),
and what each one's distances mean.

Two networks turn a face into a descriptor:

* ``hse``: the HSE MobileNet face network (``engine.faces.embed_hse``), 1024-d unit vectors from the detector's box.
  On the labelled real footage of ``benchmarks/identity`` it separates people far better than dlib's network
  (``benchmarks/RESULTS.md``, "Identity"), at about 3x its CPU time per face: the default.
* ``dlib``: dlib's face recognition ResNet (``engine.faces.embed``), 128-d descriptors of the aligned chip, the
  seed's network and the parity oracle.

Descriptors of two embedders are never compared: every stored descriptor carries its embedder's name. Distances
are Euclidean between descriptors as the embedder returns them (for ``hse`` a function of the cosine:
``d = sqrt(2 - 2 cos)``). Each embedder has its own ``same_person`` distance (the appearance gate of the tracker,
the first test of search and the monitor) and its own grouping threshold; ``benchmarks/identity`` measures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from engine.config.sections import EMBEDDER_NAMES
from engine.faces.detect import Detections


class Embedder(Protocol):
    """What the faces stage asks of an embedder."""

    name: str
    device: torch.device

    def embed_faces(
        self, frames: torch.Tensor, det: Detections, chips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Descriptors ``[F, D]`` of the faces of ``det`` in uint8 ``frames``, whose aligned chips are ``chips``, and
        their magnitudes ``[F]``: the length of the network's output before any normalisation."""
        ...

    def embed(self, frames: torch.Tensor, det: Detections) -> torch.Tensor:
        """Descriptors ``[F, D]`` of the faces of ``det`` in uint8 ``frames``."""
        ...


@dataclass(frozen=True)
class EmbedderSpec:
    """An embedder's facts. ``same_person``: the Euclidean distance under which two single faces are taken for one
    person (tracker gate, search and monitor); ``group_similarity``: the cosine between two groups' quality-weighted
    mean directions at which they are one individual, and ``group_pair_similarity`` the mean cosine over their faces'
    pairs they must reach as well (``engine.cluster``); ``confident_magnitude``: the descriptor magnitude from which
    the network reads a face confidently, so that it votes whatever its quality
    (``engine.faces.quality.vote_floors``), and ``unreadable_magnitude`` the one under which the network does
    not read a face at all, so that it never votes; ``None`` where the magnitude says nothing. All measured in
    ``benchmarks/identity``."""

    name: str
    dim: int
    same_person: float
    group_similarity: float
    group_pair_similarity: float
    confident_magnitude: float | None
    unreadable_magnitude: float | None
    description: str


EMBEDDERS: dict[str, EmbedderSpec] = {
    "hse": EmbedderSpec(
        "hse", 1024, same_person=0.90, group_similarity=0.65, group_pair_similarity=0.53,
        confident_magnitude=8.0, unreadable_magnitude=5.0,
        description="HSE MobileNet (VGGFace2), 1024-d unit vectors of the box + 10 % at 224 px",
    ),
    "dlib": EmbedderSpec(
        "dlib", 128, same_person=0.60, group_similarity=0.96, group_pair_similarity=0.91,
        confident_magnitude=None, unreadable_magnitude=None,
        description="dlib face recognition ResNet v1, 128-d, aligned 150-px chip",
    ),
}  # fmt: skip
assert set(EMBEDDERS) == set(EMBEDDER_NAMES)


def embedder_spec(name: str) -> EmbedderSpec:
    """The spec of embedder ``name`` (``ValueError`` naming the choices when unknown)."""
    try:
        return EMBEDDERS[name]
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}") from None


def load_embedder(name: str, device: str, precision: str = "auto", mirror: Path | None = None) -> Embedder:
    """Embedder ``name`` on ``device``, its weights resolved through the manifest (with ``mirror``)."""
    from engine.inference.weights import resolve

    embedder_spec(name)
    if name == "dlib":
        from engine.faces.embed import FaceEmbedder

        return FaceEmbedder(resolve("dlib_resnet_v1", mirror), device=device, precision=precision)
    from engine.faces.embed_hse import HSEEmbedder

    weights = (resolve("hse_faceres_json", mirror), resolve("hse_faceres_bin", mirror))
    return HSEEmbedder(device, precision, weights)
