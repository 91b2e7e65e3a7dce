"""Per-face quality: how far a detected face's descriptor can be trusted to say who it is.

A face votes for an identity only when its chip shows a real, clear, roughly frontal face; false detections (hands,
plates), heads seen from behind, profiles, faces cut by the frame edge and tiny or blurred faces give descriptors
that land near the wrong person. Each cue is measured from what the engine already has per face (detector score, the
five RetinaFace landmarks in frame pixels, the aligned 150-px chip the embedder saw), turned into a soft ramp in
[0, 1], and the ramps are multiplied: any one bad cue is enough to silence a face, and none can make up for another.

Everything is batched and device-agnostic: ``[F]`` tensors in, ``[F]`` tensors out on the inputs' device, no loop
over faces, and each face's numbers depend on that face only. The ramps and :data:`QUALITY_FLOOR` were set on the
labelled faces of ``friends_poker.mp4`` (``benchmarks/identity/quality_check.py``) at round values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from engine.faces.detect import Detections

#: Faces whose ``quality`` is below this do not vote for an identity. Chosen with the ramps below on the three
#: labelled clips of ``benchmarks/identity`` (``python -m benchmarks.identity.quality_check`` prints the split): it
#: keeps most visible faces voting (tiny crowd faces and 640x360 stage shots included) while false detections and
#: heads seen from behind fall under it; RESULTS.md ("Identity") has the figures.
QUALITY_FLOOR = 0.10

#: Head model behind the pose estimates, in interocular distances (eye centre to eye centre): the nose tip stands
#: ``NOSE_DEPTH`` in front of the eyes and mouth, the mouth line is ``EYE_MOUTH`` below the eye line, the nose tip
#: ``NOSE_AT`` of the way from the eye line to the mouth line (``engine.faces.align.CHIP_TEMPLATE``: 62 / 54.5 and
#: 33.7 / 61.9; a generic 3-D face puts the nose tip about half an eye distance in front of the eyes).
NOSE_DEPTH = 0.5
EYE_MOUTH = 1.15
NOSE_AT = 0.55
#: The chip's face interior (eyes, nose, mouth: ``CHIP_TEMPLATE`` spans 46..109 px), free of background and hair.
CENTRE = slice(30, 120)
#: Ramps ``(lo, hi)``: a cue scores 0 at or beyond ``lo`` and 1 at or beyond ``hi`` (linear between).
#: Detector score: nothing under 0.7, full trust only at certainty. Visible faces in the labelled clips score 0.97
#: and up (10th percentile; small stage faces from 0.63), false detections (hands, plates, a dress) 0.52..0.86.
SCORE_RAMP = (0.7, 1.0)
#: Frontal-equivalent eye distance in frame px: under 8 px (a head of ~20 px) the chip is blown up from almost
#: nothing; from 30 px (a ~70-px head) it holds enough detail for both embedders. Crowd faces of the talk-show
#: clip measure 12..18 px and still embed usably (they keep part of their vote).
SIZE_RAMP = (8.0, 30.0)
#: ``sqrt(var(Laplacian) / var(grey))`` of the chip's centre: a chip blown up 4× or more from a tiny or blurred
#: face measures under 0.05; sharp chips measure 0.1..0.25 (visible faces of the clips: 10th percentile 0.08).
SHARPNESS_RAMP = (0.04, 0.08)
#: |yaw| in degrees, from the ramp's far end: full trust to 60° (three-quarter views embed well, and the HSE
#: network groups near-profiles correctly on the labelled clips), none from 90° (heads from behind, whose
#: landmarks are guesses: they measure 83..88°).
YAW_RAMP = (90.0, 60.0)
#: |pitch| in degrees: the estimate is rougher than yaw's, so the ramp is wide.
PITCH_RAMP = (60.0, 30.0)
#: Mean luminance (0..1) of the chip's centre: too dark, the features drown in noise; too bright, they burn out.
#: Faces in the labelled clips sit at 0.04..0.62 (a dark stage at the low end).
DARK_RAMP = (0.05, 0.15)
BRIGHT_RAMP = (0.95, 0.85)
#: Share of the whole chip that is pure black (the fill outside the frame: the face is cut by the frame's edge) or
#: pure white (blown out).
CLIPPED_RAMP = (0.3, 0.1)
_GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


@dataclass
class FaceQuality:
    """Quality cues of ``F`` faces, each a float32 ``[F]`` tensor on the inputs' device."""

    score: torch.Tensor  # detector score
    interocular_px: torch.Tensor  # eye centre to eye centre, frame pixels (shrinks with yaw)
    size_px: torch.Tensor  # frontal-equivalent eye distance: interocular_px / cos(yaw), cos at least 0.5
    sharpness: torch.Tensor  # sqrt(var(Laplacian) / var(grey)) of the chip's centre
    yaw: torch.Tensor  # degrees; positive: nose towards the image's right
    pitch: torch.Tensor  # degrees; positive: looking down
    roll: torch.Tensor  # degrees, eye line against the image's x axis (also holds the detector's 90/270 retries)
    exposure: torch.Tensor  # mean luminance of the chip's centre, 0..1
    clipped: torch.Tensor  # share of the chip that is pure black or pure white
    magnitude: torch.Tensor  # the embedder's descriptor length before normalisation (NaN where not given)
    quality: torch.Tensor  # product of the ramps, 0..1

    def __len__(self) -> int:
        return int(self.quality.numel())

    def select(self, idx: torch.Tensor | slice) -> FaceQuality:
        """The faces picked by an index, slice or boolean mask, fields kept in step."""
        return FaceQuality(*(getattr(self, f.name)[idx] for f in fields(self)))


def ramp(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """0 at ``lo``, 1 at ``hi``, linear between and clamped outside; ``hi < lo`` makes a falling ramp."""
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def pose(landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eye distance (px), yaw, pitch and roll (degrees) of ``[F, 10]`` landmarks, from the head model above.

    Positions are taken in the face's own frame (x along the eye line, y perpendicular, towards the mouth), so roll
    and the detector's rotated retries do not disturb yaw and pitch. Orthographic projection of the model gives
    ``nose_x / eye_distance = NOSE_DEPTH · tan(yaw)`` (eye distance shrinks as ``cos(yaw)``, the nose tip moves
    as ``sin(yaw)``) and ``nose_y / mouth_y = NOSE_AT + NOSE_DEPTH / EYE_MOUTH · tan(pitch)``. Good to perhaps
    ±10°, enough to tell frontal from three-quarter from profile. A mouth above the eye line (a head from behind:
    the landmarks are guesses) gives a pitch beyond ±90°, clamped to ±90°.
    """
    pts = landmarks.float().reshape(-1, 5, 2)
    eye_l, eye_r, nose, mouth_l, mouth_r = pts.unbind(1)
    eyes = eye_r - eye_l
    interocular = eyes.norm(dim=1)
    ux = eyes / interocular.clamp_min(1e-6)[:, None]
    uy = torch.stack([-ux[:, 1], ux[:, 0]], 1)  # x turned 90° towards +y (image y points down)
    mid = (eye_l + eye_r) / 2
    nose_x, nose_y = ((nose - mid) * ux).sum(1), ((nose - mid) * uy).sum(1)
    mouth_y = (((mouth_l + mouth_r) / 2 - mid) * uy).sum(1)
    yaw = torch.rad2deg(torch.atan2(nose_x, NOSE_DEPTH * interocular))
    pitch = torch.rad2deg(torch.atan2((nose_y - NOSE_AT * mouth_y) * EYE_MOUTH / NOSE_DEPTH, mouth_y))
    roll = torch.rad2deg(torch.atan2(eyes[:, 1], eyes[:, 0]))
    return interocular, yaw, pitch.clamp(-90.0, 90.0), roll


def chip_cues(chips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sharpness, exposure and clipped share of float RGB chips ``[F, 3, S, S]`` (0..255).

    Sharpness is the Laplacian's spread over the grey level's: the ratio ignores contrast and brightness (a dim
    face is not a blurred one) and measures how much of the face's detail sits at the finest scale, which is what a
    face blown up from few pixels, out of focus or in motion lacks. The Laplacian is written with shifted slices,
    not a convolution, so every face's value is exact elementwise arithmetic on its own pixels.
    """
    rgb = chips.float()
    grey = torch.einsum("fchw,c->fhw", rgb, torch.tensor(_GREY, device=rgb.device))
    centre = grey[:, CENTRE, CENTRE]
    c = centre[:, 1:-1, 1:-1]
    lap = 4 * c - centre[:, :-2, 1:-1] - centre[:, 2:, 1:-1] - centre[:, 1:-1, :-2] - centre[:, 1:-1, 2:]
    sharpness = (lap.flatten(1).var(1) / centre.flatten(1).var(1).clamp_min(1.0)).sqrt()
    exposure = centre.flatten(1).mean(1) / 255
    black, white = rgb.amax(1) <= 0, rgb.amin(1) >= 255
    clipped = (black | white).flatten(1).float().mean(1)
    return sharpness, exposure, clipped


def face_quality(
    scores: torch.Tensor, landmarks: torch.Tensor, chips: torch.Tensor, magnitude: torch.Tensor | None = None
) -> FaceQuality:
    """Quality of ``F`` faces from detector ``scores`` ``[F]``, ``landmarks`` ``[F, 10]`` (frame pixels, the order
    of ``Detections.landmarks``) and their aligned chips ``[F, 3, S, S]`` (``engine.faces.align.align_chips``).
    ``magnitude`` ``[F]`` (the embedder's, NaN when not given) is kept beside the cues: it does not enter
    ``quality``, it decides which floor a face votes from (:func:`vote_floors`)."""
    if chips.shape[0] == 0:
        z = torch.zeros(0, device=chips.device)
        return FaceQuality(*(z for _ in fields(FaceQuality)))
    score = scores.float()
    interocular, yaw, pitch, roll = pose(landmarks)
    size = interocular / torch.cos(torch.deg2rad(yaw)).clamp_min(0.5)
    sharpness, exposure, clipped = chip_cues(chips)
    if magnitude is None:
        magnitude = torch.full_like(score, float("nan"))
    quality = (
        ramp(score, *SCORE_RAMP)
        * ramp(size, *SIZE_RAMP)
        * ramp(sharpness, *SHARPNESS_RAMP)
        * ramp(yaw.abs(), *YAW_RAMP)
        * ramp(pitch.abs(), *PITCH_RAMP)
        * ramp(exposure, *DARK_RAMP)
        * ramp(exposure, *BRIGHT_RAMP)
        * ramp(clipped, *CLIPPED_RAMP)
    )
    return FaceQuality(
        score, interocular, size, sharpness, yaw, pitch, roll, exposure, clipped, magnitude.float(), quality
    )


def quality_of(det: Detections, chips: torch.Tensor, magnitude: torch.Tensor | None = None) -> FaceQuality:
    """:func:`face_quality` of a batch's detections, their chips (``align_chips(frames, det)``) and the embedder's
    descriptor magnitudes."""
    return face_quality(det.scores, det.landmarks, chips, magnitude)


def vote_floors(
    magnitude: torch.Tensor, floor: float, confident_magnitude: float | None, unreadable_magnitude: float | None = None
) -> torch.Tensor:
    """Each face's voting floor ``[F]``: ``floor``; 0 for faces whose descriptor magnitude reaches
    ``confident_magnitude``; infinite for faces whose magnitude is under ``unreadable_magnitude``. ``None``: the
    embedder's magnitude says nothing on that side. NaN magnitudes (stored before they were measured) keep
    ``floor``.

    Why 0: the network reads such a face as well as a typical clear one (for hse, 8 is above every false detection
    measured on the labelled footage, and visible faces have a median of 12.9). Small, soft or turned faces that
    the cues score low then still vote, weighted by their quality, so they weigh little. A face whose quality is
    exactly 0 weighs nothing and does not vote. Faces the network cannot read never vote, whatever their cues say.
    RESULTS.md (ninth session) has the sweeps."""
    floors = torch.full(magnitude.shape, floor, dtype=torch.float32, device=magnitude.device)
    if confident_magnitude is not None:
        floors = torch.where(magnitude >= confident_magnitude, torch.zeros_like(floors), floors)  # NaN: false
    if unreadable_magnitude is not None:
        floors = torch.where(magnitude < unreadable_magnitude, torch.full_like(floors, float("inf")), floors)
    return floors
