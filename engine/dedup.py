"""Near-duplicate face crops by perceptual hash, batched in torch and bit-for-bit equal to ``imagededup.PHash``.

The original project kept the unique face crops with ``imagededup.methods.PHash``: ``encode_image`` per crop, then
``find_duplicates_to_remove(max_distance_threshold=10)``. That is one PIL round trip per crop and an O(N²) Python
search. This module computes the same 64-bit hashes for a whole batch on the crops' own device (CPU or CUDA, one code
path) and makes the same keep/drop decisions with blocked Hamming distances, so stored data does not change.

What ``PHash.encode_image(image_array=...)`` does (imagededup 0.3.3), reproduced step by step:

1. ``Image.fromarray(rgb).resize((32, 32), Image.LANCZOS)`` — *before* the grayscale conversion, per RGB channel.
   Pillow resamples separably, one pass per axis (a pass is skipped when that side is already 32). Each pass is a
   convolution with Lanczos-3 weights stretched by the scale factor (antialiasing), normalised per output pixel,
   converted to 22-bit fixed point, accumulated in integers with a rounding offset and clipped to uint8 — so there
   *is* a rounding to 8 bits between the passes, and their order matters: horizontal first, except that Pillow 13
   runs the vertical pass first for tall images (the height shrinking by more than twice what the width shrinks);
   which rule the installed Pillow follows is probed once. Here each pass is a float64 matrix product with the very
   same integer weights: products stay below 2^39, so float64 sums are exact and equal Pillow's integer arithmetic.
2. ``convert("L")``: ITU-R 601-2 luma in fixed point, ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``.
3. ``scipy.fftpack.dct(dct(x, axis=0), axis=1)``: unnormalised DCT-II, ``y[k] = 2 Σ x[n] cos(π k (2n + 1) / 2N)``
   along both axes; here an exact integer butterfly then a float64 cosine product, first 8 frequencies per axis.
4. The top-left 8×8 block; its median *excluding the DC term* (63 values: the 32nd smallest, exactly); bits are
   ``coefficient >= median`` (the DC term included), row-major.
5. ``np.packbits`` (most significant bit first) and ``'%0.2x'`` per byte: 16 lower-case hex characters. The int64
   hashes here carry coefficient [0, 0] in bit 63 (two's complement), so ``hash_to_hex`` gives that exact string.

Only the cosine products are inexact: scipy's FFT and the matrix product differ in the last bits of a coefficient.
That changes a bit only when the median coefficient *ties* another one. Coefficients that are exactly zero (flat or
mirror-symmetric images) are exact zeros in both, thanks to the butterfly; what remains are images whose coefficients
tie without being zero, e.g. images symmetric about their diagonal (Y[k, l] = Y[l, k]), where scipy's own rounding
noise decides the bit. Real face crops do not do that (the tests check parity on every crop of the shared media).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image

#: imagededup's PHash geometry: the grayscale image it transforms and the low-frequency block it keeps.
PHASH_SIZE = 32
PHASH_BLOCK = 8
#: imagededup's default ``max_distance_threshold``.
DEFAULT_MAX_DISTANCE = 10

_PRECISION_BITS = 32 - 8 - 2  # Pillow's 8-bit resampling fixed point (Resample.c)
_LANCZOS_SUPPORT = 3.0
_UINT64_MASK = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------------------- hashing


def _lanczos(x: float) -> float:
    """Pillow's ``lanczos_filter``: sinc(x)·sinc(x/3) on [-3, 3), with ``math.sin`` (the same libm as Pillow)."""

    def sinc(v: float) -> float:
        if v == 0.0:
            return 1.0
        v = v * math.pi
        return math.sin(v) / v

    if -3.0 <= x < 3.0:
        return sinc(x) * sinc(x / 3)
    return 0.0


@functools.lru_cache(maxsize=256)
def _resample_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point Lanczos weights as a dense ``[out_size, in_size]`` matrix of whole numbers.

    A line-by-line port of ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` (full-image box), in the same
    double-precision operation order, so the truncation to 22-bit integers lands where Pillow's does.
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    ss = 1.0 / filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        for x, w in enumerate(k):
            w = w / ww if ww != 0.0 else w
            fixed = w * (1 << _PRECISION_BITS)
            weights[xx, xmin + x] = int(-0.5 + fixed) if w < 0 else int(0.5 + fixed)
    return weights


def _resample_pass(x: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """One Pillow 8-bit pass along the last axis: integer dot products, +2^21, >>22, clipped to 0..255.

    ``x`` holds whole numbers 0..255 in float64; every partial sum is an integer below 2^53, so the matrix product is
    exact in any summation order and the floor division by 2^22 reproduces Pillow's shift.
    """
    w = torch.from_numpy(weights).to(x.device)
    acc = x @ w.T + float(1 << (_PRECISION_BITS - 1))
    return torch.floor(acc * (1.0 / (1 << _PRECISION_BITS))).clamp_(0.0, 255.0)


@functools.lru_cache(maxsize=1)
def _pillow_tall_images_vertical_first() -> bool:
    """Whether the installed Pillow resizes tall images vertical pass first (Pillow 13 does, Pillow ≤ 12 never).

    The pass order changes the result (each pass rounds to 8 bits), and Pillow picks it internally, so it is probed
    once: a 40×33 image (tall, both sides shrink) resized by Pillow, compared with both orders here.
    """
    from PIL import Image

    probe = ((np.arange(40 * 33, dtype=np.uint64) * 2654435761) % 251).astype(np.uint8).reshape(40, 33)
    expected = torch.from_numpy(np.asarray(Image.fromarray(probe).resize((32, 32), Image.LANCZOS)).copy())
    x = torch.from_numpy(probe)[None, None]
    if torch.equal(_resize_32(x, vertical_first=True)[0, 0], expected.to(torch.float64)):
        return True
    if not torch.equal(_resize_32(x, vertical_first=False)[0, 0], expected.to(torch.float64)):
        warnings.warn("this Pillow resamples differently from both known pass orders", RuntimeWarning, stacklevel=2)
    return False


def _resize_32(images: torch.Tensor, vertical_first: bool) -> torch.Tensor:
    x = images.to(torch.float64)
    height, width = x.shape[-2:]

    def horizontal(t: torch.Tensor) -> torch.Tensor:
        return _resample_pass(t, _resample_weights(t.shape[-1], PHASH_SIZE)) if t.shape[-1] != PHASH_SIZE else t

    def vertical(t: torch.Tensor) -> torch.Tensor:
        if t.shape[-2] == PHASH_SIZE:
            return t
        return _resample_pass(t.transpose(-1, -2), _resample_weights(t.shape[-2], PHASH_SIZE)).transpose(-1, -2)

    # Pillow 13's choice, measured on every size pair 2..129 (and boundary pairs up to 3001 rows): vertical first
    # exactly when the height shrinks by more than twice what the width shrinks.
    if vertical_first and height > PHASH_SIZE and height - PHASH_SIZE > 2 * (width - PHASH_SIZE):
        return horizontal(vertical(x))
    return vertical(horizontal(x))


def resize_like_pil(images: torch.Tensor) -> torch.Tensor:
    """``Image.resize((32, 32), Image.LANCZOS)`` of uint8 ``[N, C, H, W]``: float64 whole numbers ``[N, C, 32, 32]``.

    Two passes, each rounded to 8 bits and skipped when that side is already 32 (Pillow does no identity pass):
    horizontal then vertical, except on a Pillow that runs tall images vertical pass first (see
    :func:`_pillow_tall_images_vertical_first`). Face chips are square, where every Pillow goes horizontal first.
    """
    return _resize_32(images, _pillow_tall_images_vertical_first())


def luma_like_pil(rgb: torch.Tensor) -> torch.Tensor:
    """Pillow's ``convert("L")`` of whole-number RGB ``[N, 3, H, W]`` (any dtype): int32 ``[N, H, W]``, 0..255."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


@functools.lru_cache(maxsize=1)
def _dct_factors_cpu() -> tuple[torch.Tensor, torch.Tensor]:
    """scipy's unnormalised DCT-II (32 points, first 8 frequencies) factored as ``C @ B``, both ``[.., 32]`` float64.

    ``B`` is the integer butterfly of a fast DCT: ``x[n] ± x[31 - n]``, then the same on the 16 sums, then on the 8
    sums again, leaving (sums 4 | differences 4 | differences 8 | differences 16). Frequency k only reads one of those
    groups (odd k the 16 first-level differences, k = 2, 6 the second level, k = 4 the third, k = 0 the sums), so
    ``C`` holds ``2·cos(π k (2n + 1) / 64)`` in that group's columns and zeros elsewhere.

    Why factor it: ``B`` applied to whole numbers is exact, so an image symmetric along an axis (or constant) gives
    coefficients that are *exactly* zero — as scipy's FFT-based DCT also gives them. A plain cosine matrix leaves
    ~1e-13 of noise there, which flips bits when the median is one of those zeros (flat or mirrored crops).
    """
    n = PHASH_SIZE
    butterfly = torch.zeros(n, n, dtype=torch.float64)
    cos = torch.zeros(PHASH_BLOCK, n, dtype=torch.float64)
    # sums[i]: the ±1 combination of the 32 inputs behind the i-th running sum of the current level.
    sums = [torch.eye(n, dtype=torch.float64)[i] for i in range(n)]
    row = n
    for level in range(3):  # 32 → 16 → 8 → 4 sums; each level's differences fill the bottom rows upwards
        half = len(sums) // 2
        diffs = [sums[i] - sums[len(sums) - 1 - i] for i in range(half)]
        sums = [sums[i] + sums[len(sums) - 1 - i] for i in range(half)]
        row -= half
        butterfly[row : row + half] = torch.stack(diffs)
        # Frequencies served by this level's differences: odd k (level 0), k ≡ 2 mod 4 (level 1), k = 4 (level 2).
        step = 2 ** (level + 1)
        for k in range(2**level, PHASH_BLOCK, step):
            for i in range(half):
                cos[k, row + i] = 2.0 * math.cos(math.pi * k * (2 * i + 1) / (2 * n))
    butterfly[:row] = torch.stack(sums)
    cos[0, :row] = 2.0  # k = 0: 2 Σ x
    return cos, butterfly


@functools.lru_cache(maxsize=1)
def _bit_weights_cpu() -> torch.Tensor:
    """int64 value of each of the 64 hash bits, row-major, first bit = bit 63 (the sign bit, hence negative)."""
    return torch.tensor([-(1 << 63)] + [1 << (62 - i) for i in range(63)], dtype=torch.int64)


def _phash_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8:
        raise TypeError(f"phash expects uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"phash expects [N, 3, H, W] (or [N, 1, H, W] grayscale), got {tuple(images.shape)}")
    if images.device.type == "cuda" and _phash_kernel_ok(images):
        from kernels.phash import phash as phash_kernel

        return phash_kernel(images)
    return phash_torch(images)


def _phash_kernel_ok(images: torch.Tensor) -> bool:
    """The Triton kernel (``kernels.phash``, same bits) where Triton is there and ``ENGINE_KERNELS`` is not ``0``."""
    if images.numel() == 0:
        return False
    try:
        import kernels
        from kernels import phash as phash_kernel
    except ImportError:
        return False
    return kernels.enabled() and phash_kernel.available(images.device)


def phash_torch(images: torch.Tensor) -> torch.Tensor:
    """Plain-torch hashes of a validated uint8 ``[N, C, H, W]`` batch (the CPU path, and the kernel's reference)."""
    small = resize_like_pil(images)
    # A 1-channel input is a PIL "L" image already: convert("L") leaves it as it is.
    gray = small[:, 0] if small.shape[1] == 1 else luma_like_pil(small).to(torch.float64)
    cos, butterfly = (t.to(images.device) for t in _dct_factors_cpu())
    exact = butterfly @ gray @ butterfly.T  # whole numbers below 2^19: exact
    coef = (cos @ exact @ cos.T).flatten(1)  # [N, 64]: scipy's dct(dct(x, axis=0), axis=1)[:8, :8]
    median = coef[:, 1:].kthvalue((PHASH_BLOCK * PHASH_BLOCK) // 2, dim=1).values  # 63 values: the 32nd
    bits = (coef >= median[:, None]).to(torch.int64)
    return (bits * _bit_weights_cpu().to(images.device)).sum(1)


def phash(images: torch.Tensor | Sequence[torch.Tensor], chunk: int | None = None) -> torch.Tensor:
    """imagededup's PHash of uint8 RGB images, as int64 ``[N]`` on the images' device.

    ``images`` is one ``[N, 3, H, W]`` batch, or a sequence of ``[3, H, W]`` images of any sizes (hashed grouped by
    size, results in input order). ``chunk`` images are resized at a time: the float64 working copy is
    ``chunk × 3 × H × W × 8`` bytes. By default 16 on the CPU (it stays in cache: ~2.5× faster than 256 on 150×150
    chips) and 1024 on a GPU. ``hash_to_hex`` turns a hash into imagededup's 16-character string.
    """
    if chunk is None:
        first = images if isinstance(images, torch.Tensor) else (images[0] if len(images) else None)
        chunk = 1024 if first is not None and first.device.type == "cuda" else 16
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            raise ValueError("phash expects a batch [N, 3, H, W]; use images[None] for one image")
        parts = [_phash_batch(images[lo : lo + chunk]) for lo in range(0, len(images), chunk)]
        device = images.device
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=device)
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.int64)
    device = images[0].device
    out = torch.zeros(len(images), dtype=torch.int64, device=device)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(tuple(img.shape), []).append(i)
    for idx in by_shape.values():
        for lo in range(0, len(idx), chunk):
            sel = idx[lo : lo + chunk]
            batch = torch.stack([images[i].to(device) for i in sel])
            out[torch.tensor(sel, device=device)] = _phash_batch(batch)
    return out


def hash_to_hex(h: int | torch.Tensor) -> str:
    """imagededup's string for one int64 hash: 16 lower-case hex digits, coefficient [0, 0] first."""
    return format(int(h) & _UINT64_MASK, "016x")


def hashes_to_hex(hashes: torch.Tensor) -> list[str]:
    """``hash_to_hex`` of every hash of an int64 tensor (one host transfer)."""
    return [hash_to_hex(h) for h in hashes.reshape(-1).cpu().tolist()]


def hex_to_hash(text: str) -> int:
    """The signed int64 value of an imagededup hash string (inverse of :func:`hash_to_hex`)."""
    value = int(text, 16)
    if not 0 <= value <= _UINT64_MASK:
        raise ValueError(f"not a 64-bit hash: {text!r}")
    return value - (1 << 64) if value >= 1 << 63 else value


def hex_to_hashes(texts: Sequence[str], device: str | torch.device = "cpu") -> torch.Tensor:
    """int64 tensor of imagededup hash strings, e.g. hashes stored by the original project."""
    return torch.tensor([hex_to_hash(t) for t in texts], dtype=torch.int64, device=device)


# ---------------------------------------------------------------------------------------------------- distances


def popcount64(x: torch.Tensor) -> torch.Tensor:
    """Set bits of each int64 (torch has no popcount): the SWAR bit-sum (SIMD-within-a-register), on a copy."""
    return _popcount_(x.to(torch.int64, copy=True))


def _popcount_(x: torch.Tensor) -> torch.Tensor:
    """In-place SWAR popcount of an int64 tensor; it saves an N×M copy in the blocked distance loops.

    Shifts are arithmetic on int64, but every mask clears the sign-extended bits, so this counts the 64-bit pattern
    (the subtraction may wrap, which two's complement makes exact).
    """
    y = x >> 1
    y &= 0x5555555555555555
    x -= y
    y = x >> 2
    y &= 0x3333333333333333
    x &= 0x3333333333333333
    x += y
    y = x >> 4
    x += y
    x &= 0x0F0F0F0F0F0F0F0F
    for shift in (8, 16, 32):
        y = x >> shift
        x += y
    x &= 0x7F
    return x


def hamming(a: torch.Tensor | int, b: torch.Tensor | int) -> torch.Tensor:
    """Hamming distances of int64 hashes, broadcast elementwise (``a[:, None], b[None]`` gives all pairs)."""
    a = torch.as_tensor(a, dtype=torch.int64)
    b = torch.as_tensor(b, dtype=torch.int64, device=a.device)
    return _popcount_(a ^ b)


def pairwise_hamming(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """All Hamming distances ``[len(a), len(b)]`` (``b`` defaults to ``a``); for large sets use blocks."""
    b = a if b is None else b
    return hamming(a[:, None], b[None, :]).to(torch.uint8)


# ---------------------------------------------------------------------------------------------------- dedup


def _check_max_distance(max_distance: int) -> None:
    """imagededup's own bounds check (``_check_hamming_distance_bounds``), same exceptions."""
    if not isinstance(max_distance, int) or isinstance(max_distance, bool):
        raise TypeError("Threshold must be an int between 0 and 64")
    if not 0 <= max_distance <= 64:
        raise ValueError("Threshold must be an int between 0 and 64")


def _traversal(n: int, order: Sequence[int] | torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if order is None:
        return torch.arange(n, device=device)
    perm = torch.as_tensor(order, dtype=torch.int64).to(device).reshape(-1)
    if len(perm) != n or not torch.equal(torch.sort(perm).values, torch.arange(n, device=device)):
        raise ValueError(f"order must be a permutation of 0..{n - 1}")
    return perm


def _close(
    a: torch.Tensor, b: torch.Tensor, max_distance: int, ga: torch.Tensor | None, gb: torch.Tensor | None
) -> torch.Tensor:
    """``[len(a), len(b)]`` bool: within ``max_distance`` bits (and in the same group, when groups are given)."""
    close = hamming(a[:, None], b[None, :]) <= max_distance
    if ga is not None and gb is not None:
        close &= ga[:, None] == gb[None, :]
    return close


def _greedy_keep(adjacent: np.ndarray) -> np.ndarray:
    """Sequential keep/drop over a strictly upper-triangular adjacency: row i, if not dropped yet, drops its later
    neighbours. Returns the dropped mask."""
    dropped = np.zeros(len(adjacent), dtype=bool)
    for i in np.flatnonzero(adjacent.any(1)):
        if not dropped[i]:
            dropped |= adjacent[i]
    return dropped


def duplicates_to_remove(
    hashes: torch.Tensor,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    order: Sequence[int] | torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    block: int = 4096,
) -> torch.Tensor:
    """Bool mask ``[N]`` (hashes' device) of the crops to drop, exactly as imagededup's ``find_duplicates_to_remove``.

    imagededup finds, for every file, all *other* files within ``max_distance`` bits (Hamming ≤ threshold, identical
    hashes included), then walks the files in the encoding map's order: a file not yet marked for removal marks all
    its duplicates. A kept file's earlier neighbours were already marked (or it would have been), so the result is the
    greedy pass "keep a crop unless a crop kept before it is within ``max_distance``" — computed here per ``block``
    of the traversal: distances to the crops kept in earlier blocks, then the sequential pass inside the block on the
    (small) adjacency of the crops that still have a neighbour. Memory stays O(block²), never O(N²).

    ``order``: the traversal order as a permutation of ``0..N-1`` (the encoding map's key order; default: index
    order). ``groups``: optional int labels ``[N]`` (per individual, per video): crops are only compared within a
    group; each group's result is the same as deduplicating it alone in the same order.
    """
    _check_max_distance(max_distance)
    if hashes.ndim != 1 or hashes.dtype != torch.int64:
        raise ValueError(f"hashes must be int64 [N], got {hashes.dtype} {tuple(hashes.shape)}")
    device = hashes.device
    n = len(hashes)
    perm = _traversal(n, order, device)
    labels = None
    if groups is not None:
        if groups.shape != hashes.shape:
            raise ValueError(f"groups must be [N] like hashes, got {tuple(groups.shape)}")
        labels = groups.to(device, torch.int64)[perm]
        # Group-major, traversal order kept within each group: a block then only meets kept crops of its own groups.
        by_group = torch.sort(labels, stable=True).indices
        perm, labels = perm[by_group], labels[by_group]
    seq = hashes[perm]

    dropped = torch.zeros(n, dtype=torch.bool, device=device)
    kept = torch.empty(n, dtype=torch.int64, device=device)  # hashes kept so far, in traversal order
    kept_labels = torch.empty(n, dtype=torch.int64, device=device) if labels is not None else None
    n_kept = 0
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        h = seq[lo:hi]
        g = labels[lo:hi] if labels is not None else None
        drop = torch.zeros(hi - lo, dtype=torch.bool, device=device)
        first = 0
        if g is not None and kept_labels is not None and n_kept:
            first = int(torch.searchsorted(kept_labels[:n_kept], g[:1]).item())
        for k_lo in range(first, n_kept, block):
            k_hi = min(k_lo + block, n_kept)
            kg = kept_labels[k_lo:k_hi] if kept_labels is not None else None
            drop |= _close(h, kept[k_lo:k_hi], max_distance, g, kg).any(1)
        # Inside the block: pairs i < j of crops that survived the earlier blocks.
        adjacent = _close(h, h, max_distance, g, g).triu_(1)
        adjacent &= ~drop[:, None]
        adjacent &= ~drop[None, :]
        involved = (adjacent.any(1) | adjacent.any(0)).nonzero().flatten()
        if len(involved):
            sub = adjacent[involved][:, involved].cpu().numpy()
            inner = torch.from_numpy(_greedy_keep(sub)).to(device)
            drop[involved[inner]] = True
        dropped[lo:hi] = drop
        survivors = (~drop).nonzero().flatten()
        kept[n_kept : n_kept + len(survivors)] = h[survivors]
        if kept_labels is not None and g is not None:
            kept_labels[n_kept : n_kept + len(survivors)] = g[survivors]
        n_kept += len(survivors)

    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[perm] = dropped
    return mask


# ------------------------------------------------------------------------------------------- reference (imagededup)


def phash_reference(images: Sequence[str | Path | Image.Image | np.ndarray | torch.Tensor]) -> list[str]:
    """imagededup's own ``PHash().encode_image`` of each image, for tests and benchmarks only (slow: PIL per image).

    Paths go through ``encode_image(image_file=...)`` (imagededup's loader); PIL images are converted as that loader
    does (``RGBA`` then ``RGB`` when not RGB); numpy arrays (``H×W×3`` or ``H×W``) and uint8 tensors (``[3, H, W]``)
    go through ``encode_image(image_array=...)``.
    """
    from imagededup.methods import PHash
    from PIL import Image

    hasher = PHash(verbose=False)
    out = []
    for img in images:
        if isinstance(img, str | Path):
            h = hasher.encode_image(image_file=str(img))
        else:
            if isinstance(img, Image.Image):
                array = np.asarray(img if img.mode == "RGB" else img.convert("RGBA").convert("RGB"))
            elif isinstance(img, torch.Tensor):
                array = img.detach().cpu().permute(1, 2, 0).squeeze(-1).numpy()
            else:
                array = np.asarray(img)
            h = hasher.encode_image(image_array=np.ascontiguousarray(array))
        if h is None:
            raise ValueError(f"imagededup could not hash {img if isinstance(img, str | Path) else type(img)}")
        out.append(h)
    return out


def duplicates_to_remove_reference(hex_hashes: Sequence[str], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[bool]:
    """imagededup's own ``find_duplicates_to_remove`` on hashes in this order (keys ``"0"``, ``"1"``, …), as a mask.

    For tests and benchmarks only: its search is O(N²) in Python and forks a worker pool.
    """
    from imagededup.methods import PHash

    if not hex_hashes:
        return []
    encoding_map = {str(i): h for i, h in enumerate(hex_hashes)}
    with warnings.catch_warnings():  # "num_enc_workers has no effect": we give encodings, as the pipeline did
        warnings.simplefilter("ignore", RuntimeWarning)
        removed = set(
            PHash(verbose=False).find_duplicates_to_remove(
                encoding_map=encoding_map, max_distance_threshold=max_distance, num_dist_workers=1
            )
        )
    return [str(i) in removed for i in range(len(hex_hashes))]
