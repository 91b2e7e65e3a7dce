"""Alignment: RetinaFace's 5 landmarks → 150×150 chips in dlib's geometry, ready for the embedder (``embed``).

dlib's ``get_face_chip_details(shape, 150, 0.25)`` fits a similarity transform from a chip-pixel template to five
points of its own shape predictor (eye corners, nose base) and ``extract_image_chip`` samples it bilinearly, through
an image pyramid when the face is large. RetinaFace gives other points (eye centres, nose tip, mouth corners), so:

* **Template** (:data:`CHIP_TEMPLATE`): where RetinaFace's points fall, on average, inside the chip that dlib's own
  5-point alignment cuts. Measured on 517 faces of the shared *videos* (never the test photos) by
  ``benchmarks/test_chip_template.py``: for each face found by both, dlib's transform maps RetinaFace's landmarks into
  chip pixels, and the mean is the template. It sits within 3 px of the points derived from dlib's 68-point mean face
  (``docs/dlib_dnn_format.md`` §4.3) but follows RetinaFace's own annotation (a lower nose tip and mouth).
* **Weights** (:data:`TEMPLATE_WEIGHTS`): the same measurement gives each point's scatter around its mean; the eyes
  scatter 3–4 px, the nose tip 10 px (it moves with yaw), the mouth 5 px (expression). Weighting the least-squares fit
  by inverse variance is the maximum-likelihood similarity under that noise.
* **Sampling** copies dlib's extractor: side ``k = (150 s - 1) / 149`` about ``T(75, 75)``, a [1 4 6 4 1] pyramid
  (2× per level, with dlib's own level choice and its quarter-pixel level offsets) for faces more than ~2× the chip,
  bilinear sampling with black outside, and the truncation to 8 bits dlib applies at every step. With dlib's own
  landmarks this reproduces dlib's descriptors (``tests/test_embed.py``: median L2 under 0.005, all under 0.05).

Everything is batched on the frames' device: chips gather their pixels straight from the uint8 frames (and, for faces
large enough to need the pyramid, from a crop around each face blurred down), so no float copy of a frame is made.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.faces.detect import Detections

CHIP_SIZE = 150
#: RetinaFace's points (image-left eye, image-right eye, nose tip, left and right mouth corner) in chip pixels.
CHIP_TEMPLATE = (
    (47.60, 46.08),
    (102.09, 45.69),
    (73.43, 79.59),
    (53.93, 108.09),
    (96.68, 107.53),
)
#: Inverse variance (1/px²) of each point around the template, from the same measurement.
TEMPLATE_WEIGHTS = (1 / 9.3, 1 / 14.2, 1 / 62.4, 1 / 27.0, 1 / 27.4)
#: dlib's own 5-point template (shape_predictor_5_face_landmarks order: image-right eye outer and inner corner,
#: image-left eye outer and inner corner, nose base) in chip pixels, ``100 p + 25`` of its normalised mean face.
DLIB_5POINT_TEMPLATE = (
    (110.95674596, 46.34981538),
    (89.60604764, 47.89674388),
    (37.05750621, 46.37274527),
    (58.40850614, 47.90642403),
    (74.01123136, 87.77975316),
)
_PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
#: Chips per embedder call on a CPU (see ``engine.faces.detect.CPU_MICRO_BATCH``).
CPU_CHIP_BATCH = 16


def similarity_transforms(
    landmarks: torch.Tensor, template: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted least-squares similarity transforms ``[F, 2, 3]`` mapping template points onto each face's points.

    ``landmarks`` is ``[F, 2P]`` (x, y pairs) in image pixels, ``template`` ``[P, 2]``, ``weights`` ``[P]`` (equal
    when omitted). Closed form of Umeyama's method without reflection, in float64.
    """
    dst = landmarks.reshape(len(landmarks), -1, 2).to(torch.float64)
    src = template.to(dst).expand_as(dst)
    w = torch.ones(dst.shape[1], dtype=dst.dtype, device=dst.device) if weights is None else weights.to(dst)
    w = (w / w.sum()).view(1, -1, 1)
    src_mean, dst_mean = (w * src).sum(1, keepdim=True), (w * dst).sum(1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    norm = (w * s**2).sum((1, 2))
    a = (w * s * d).sum((1, 2)) / norm  # scale·cos
    b = (w[..., 0] * (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0])).sum(1) / norm  # scale·sin
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)  # [F, 2, 2]
    shift = dst_mean.squeeze(1) - (linear @ src_mean.transpose(1, 2)).squeeze(2)
    return torch.cat([linear, shift[..., None]], dim=2)


def chip_transforms(
    landmarks: torch.Tensor,
    size: int = CHIP_SIZE,
    template: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's chip → image maps ``[F, 2, 3]`` (chip pixel centres to image pixel centres) and pyramid levels ``[F]``.

    The similarity ``T`` fitted to the template has scale ``s`` (image px per chip px). dlib cuts a square of side
    ``size·s`` centred on ``T(size/2, size/2)`` and spreads the chip's pixel centres over it with step
    ``k = (size·s - 1) / (size - 1)``; it samples from the pyramid level where that square, halved by dlib's
    ``rect_down``, last stays larger than the chip. ``template`` (150-px chip units) and ``weights`` default to
    RetinaFace's; another point set (dlib's own 5 points, say) can be passed with its template.
    """
    if template is None:
        template, weights = torch.tensor(CHIP_TEMPLATE), torch.tensor(TEMPLATE_WEIGHTS)
    template = template.to(landmarks.device, torch.float64) * (size / CHIP_SIZE)
    fit = similarity_transforms(landmarks, template, weights)
    linear, shift = fit[:, :, :2], fit[:, :, 2]
    s = linear[:, :, 0].norm(dim=1)
    centre = linear @ torch.full((2,), size / 2, dtype=fit.dtype, device=fit.device) + shift
    k = (size * s - 1) / (size - 1)
    linear = linear * (k / s)[:, None, None]
    shift = centre - linear @ torch.full((2,), (size - 1) / 2, dtype=fit.dtype, device=fit.device)
    level = torch.zeros_like(s, dtype=torch.long)
    width = size * s  # inclusive width of the chip square in image pixels
    while True:
        down = (width - 1) / 2 + 1  # rect_down halves the extent and keeps the inclusive convention
        more = down > size
        if not bool(more.any()):
            break
        level += more.long()
        width = torch.where(more, down, width)
    return torch.cat([linear, shift[..., None]], dim=2), level


def pyramid_down(images: torch.Tensor) -> torch.Tensor:
    """One level of dlib's ``pyramid_down<2>``: separable [1 4 6 4 1]/16 blur, every other pixel, truncated to
    integers as dlib does on 8-bit images. Output pixel ``j`` is centred on input pixel ``2j``."""
    c = images.shape[1]
    taps = torch.tensor(_PYRAMID_TAPS, dtype=images.dtype, device=images.device) / 16
    x = F.pad(images, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, 5).expand(c, 1, 1, 5), stride=(1, 2), groups=c)
    x = F.conv2d(x, taps.view(1, 1, 5, 1).expand(c, 1, 5, 1), stride=(2, 1), groups=c)
    return torch.floor(x + 1e-3)


def _bilinear(
    src: torch.Tensor,
    which: torch.Tensor,
    chip_to_src: torch.Tensor,
    valid: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """dlib's ``interpolate_bilinear`` for every chip pixel: float chips ``[F, 3, size, size]``.

    ``src`` ``[M, 3, Hs, Ws]`` (uint8 or float) holds the pixels, face ``i`` reads ``src[which[i]]`` through the
    ``[F, 2, 3]`` chip → src pixel map; ``valid`` ``[F, 4]`` (x_lo, y_lo, x_hi, y_hi, exclusive) bounds, in src
    pixels, the image the chip is cut from (a crop may hold more). As in dlib, a chip pixel whose four neighbours
    are not all inside that image is black. Coordinates are computed per pixel in float64 and each face only
    reads its own four neighbours, so a face's chip never depends on what else is in the batch.
    """
    dev = src.device
    grid = torch.arange(size, dtype=torch.float64, device=dev)
    u, v = grid.view(1, 1, size), grid.view(1, size, 1)
    a = chip_to_src[:, :, :, None, None]
    x = a[:, 0, 0] * u + a[:, 0, 1] * v + a[:, 0, 2]  # [F, size, size]
    y = a[:, 1, 0] * u + a[:, 1, 1] * v + a[:, 1, 2]
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0).to(torch.float32)[:, None], (y - y0).to(torch.float32)[:, None]
    lo, hi = valid[:, :2, None, None], valid[:, 2:, None, None]
    inside = (x0 >= lo[:, 0]) & (y0 >= lo[:, 1]) & (x0 + 1 < hi[:, 0]) & (y0 + 1 < hi[:, 1])
    hs, ws = src.shape[-2:]
    # Rows of src's pixels (channels last: decoded frames already are, so this is a view) and, per chip pixel, the
    # row of its top-left neighbour.
    pixels = src.permute(0, 2, 3, 1).reshape(-1, 3)
    flat = ((which[:, None, None] * hs + y0.long().clamp(0, hs - 2)) * ws + x0.long().clamp(0, ws - 2)).view(-1)

    def at(offset: int) -> torch.Tensor:
        return pixels.index_select(0, flat + offset if offset else flat).view(*x.shape, 3).to(torch.float32)

    fx, fy = fx.permute(0, 2, 3, 1), fy.permute(0, 2, 3, 1)  # [F, size, size, 1]
    top = torch.lerp(at(0), at(1), fx)
    bottom = torch.lerp(at(ws), at(ws + 1), fx)
    out = torch.lerp(top, bottom, fy).masked_fill_(~inside[..., None], 0.0)
    return out.permute(0, 3, 1, 2)  # [F, 3, size, size], channels last in memory


def _level_crops(
    frames: torch.Tensor, image: torch.Tensor, at_level: torch.Tensor, lvl: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each face's footprint in pyramid level ``lvl``, computed from a crop of its frame only.

    Returns float crops ``[F, 3, S, S']`` of level ``lvl``, their origins ``[F, 2]`` (x, y, in level pixels) and the
    level's size. The crop is cut from level 0 big enough that every level's [1 4 6 4 1] filter reads only real
    pixels of it (the window grows ``2S + 3`` per level down, from an even origin), and after each level the
    positions beyond the image's edge are refilled with the edge pixel, which is what the whole image's
    ``replicate`` padding gives. The pyramid's values are whole multiples of 1/256 summed exactly, so the crop's
    level image equals the whole frame's, pixel for pixel, wherever the chip reads it.
    """
    dev = frames.device
    corners = torch.tensor([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], device=dev)
    ends = at_level @ corners.to(at_level).T  # [F, 2, 4]
    start = torch.floor(ends.amin(2)).long() - 1  # [F, 2] (x, y): one pixel of margin for the bilinear neighbour
    span = int((torch.floor(ends.amax(2)).long() + 2 - start).max()) + 1
    starts, spans = [start], [span]
    for _ in range(lvl):
        starts.append(2 * starts[-1] - 2)
        spans.append(2 * spans[-1] + 3)
    starts, spans = starts[::-1], spans[::-1]  # level 0 first
    h, w = frames.shape[-2:]
    sizes = [(h, w)]
    for _ in range(lvl):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))

    def edge_fill(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per face, the crop rows / columns holding level ``k``'s pixels at the clamped positions."""
        steps = torch.arange(spans[k], device=dev)
        ys = (starts[k][:, 1:2] + steps).clamp(0, sizes[k][0] - 1)
        xs = (starts[k][:, 0:1] + steps).clamp(0, sizes[k][1] - 1)
        return ys, xs

    ys, xs = edge_fill(0)
    crops = frames[image[:, None, None], :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2).to(torch.float32)
    faces = torch.arange(len(image), device=dev)[:, None, None]
    for k in range(1, lvl + 1):
        crops = pyramid_down(crops)[:, :, 1 : spans[k] + 1, 1 : spans[k] + 1]
        ys, xs = edge_fill(k)
        ys, xs = (ys - starts[k][:, 1:2]).clamp(0, spans[k] - 1), (xs - starts[k][:, 0:1]).clamp(0, spans[k] - 1)
        crops = crops[faces, :, ys[:, :, None], xs[:, None, :]].permute(0, 3, 1, 2)
    return crops, starts[-1], torch.tensor(sizes[-1], device=dev)


#: Faces whose level crops are computed together (bounds memory for very large faces deep in the pyramid).
_CROP_CHUNK = 16


def align_chips(
    frames: torch.Tensor,
    det: Detections,
    size: int = CHIP_SIZE,
    template: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float RGB chips ``[F, 3, size, size]`` (whole numbers 0..255) for every face of ``det`` in ``frames``.

    ``frames`` is ``[N, 3, H, W]`` (uint8 or float, 0..255). Faces sampled at full resolution read their pixels
    straight from ``frames`` (no float copy of a frame is made); larger faces are blurred down from a crop around
    them only (:func:`_level_crops`), never from the whole frame. ``template`` / ``weights``: see
    :func:`chip_transforms`.
    """
    chips = torch.zeros((len(det), 3, size, size), device=frames.device).contiguous(memory_format=torch.channels_last)
    if len(det) == 0:
        return chips
    chip_to_img, level = chip_transforms(det.landmarks, size, template, weights)
    h, w = frames.shape[-2:]
    for lvl in torch.unique(level).tolist():
        faces = (level == lvl).nonzero().flatten()
        if lvl == 0:
            valid = torch.tensor([0, 0, w, h], device=frames.device).expand(len(faces), 4)
            chips[faces] = _bilinear(frames, det.image[faces], chip_to_img[faces], valid, size)
            continue
        # dlib's rect_down maps p → p/2 - (1.25, 0.75) per level while the filter centres output j on input 2j + 2;
        # together the chip at level l looks (2^l - 1)/2 px left of and below where a pure halving would.
        offset = (2**lvl - 1) / 2
        at_level = chip_to_img[faces].clone()
        at_level[:, :, 2] += torch.tensor([-offset, offset], dtype=at_level.dtype, device=at_level.device)
        at_level /= 2**lvl
        for part in torch.split(torch.arange(len(faces), device=frames.device), _CROP_CHUNK):
            crops, origin, (lh, lw) = _level_crops(frames, det.image[faces[part]], at_level[part], lvl, size)
            local = at_level[part].clone()
            local[:, :, 2] -= origin.to(local.dtype)
            valid = torch.stack([-origin[:, 0], -origin[:, 1], lw - origin[:, 0], lh - origin[:, 1]], 1)
            which = torch.arange(len(part), device=frames.device)
            chips[faces[part]] = _bilinear(crops, which, local, valid, size)
    return torch.floor(chips + 1e-3)
