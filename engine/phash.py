"""imagededup's PHash in plain torch: 64-bit hashes of a whole batch of uint8 images, bit for bit ``imagededup.PHash``.

The original project hashed each face crop with ``imagededup.methods.PHash().encode_image``: one PIL round trip per
crop. This computes the same hashes for a whole batch on the crops' own device (CPU or CUDA, one code path). It is a
leaf: it imports nothing from the engine or the kernels, so the Triton kernel that must equal it (``kernels.phash``)
reads its tables from here; ``engine.dedup`` picks between the two and finds the duplicates.

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
   hashes here carry coefficient [0, 0] in bit 63 (two's complement), so ``engine.dedup.hash_to_hex`` gives that
   exact string.

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

import numpy as np
import torch

#: imagededup's PHash geometry: the grayscale image it transforms and the low-frequency block it keeps.
PHASH_SIZE = 32
PHASH_BLOCK = 8
#: Pillow's 8-bit resampling fixed point (Resample.c): weights are whole numbers of 2^-22.
PRECISION_BITS = 32 - 8 - 2
_LANCZOS_SUPPORT = 3.0


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
def resample_weights(in_size: int, out_size: int) -> np.ndarray:
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
            fixed = w * (1 << PRECISION_BITS)
            weights[xx, xmin + x] = int(-0.5 + fixed) if w < 0 else int(0.5 + fixed)
    return weights


def _resample_pass(x: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """One Pillow 8-bit pass along the last axis: integer dot products, +2^21, >>22, clipped to 0..255.

    ``x`` holds whole numbers 0..255 in float64; every partial sum is an integer below 2^53, so the matrix product is
    exact in any summation order and the floor division by 2^22 reproduces Pillow's shift.
    """
    w = torch.from_numpy(weights).to(x.device)
    acc = x @ w.T + float(1 << (PRECISION_BITS - 1))
    return torch.floor(acc * (1.0 / (1 << PRECISION_BITS))).clamp_(0.0, 255.0)


@functools.lru_cache(maxsize=1)
def pillow_tall_images_vertical_first() -> bool:
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
        return _resample_pass(t, resample_weights(t.shape[-1], PHASH_SIZE)) if t.shape[-1] != PHASH_SIZE else t

    def vertical(t: torch.Tensor) -> torch.Tensor:
        if t.shape[-2] == PHASH_SIZE:
            return t
        return _resample_pass(t.transpose(-1, -2), resample_weights(t.shape[-2], PHASH_SIZE)).transpose(-1, -2)

    # Pillow 13's choice, measured on every size pair 2..129 (and boundary pairs up to 3001 rows): vertical first
    # exactly when the height shrinks by more than twice what the width shrinks.
    if vertical_first and height > PHASH_SIZE and height - PHASH_SIZE > 2 * (width - PHASH_SIZE):
        return horizontal(vertical(x))
    return vertical(horizontal(x))


def resize_like_pil(images: torch.Tensor) -> torch.Tensor:
    """``Image.resize((32, 32), Image.LANCZOS)`` of uint8 ``[N, C, H, W]``: float64 whole numbers ``[N, C, 32, 32]``.

    Two passes, each rounded to 8 bits and skipped when that side is already 32 (Pillow does no identity pass):
    horizontal then vertical, except on a Pillow that runs tall images vertical pass first (see
    :func:`pillow_tall_images_vertical_first`). Face chips are square, where every Pillow goes horizontal first.
    """
    return _resize_32(images, pillow_tall_images_vertical_first())


def luma_like_pil(rgb: torch.Tensor) -> torch.Tensor:
    """Pillow's ``convert("L")`` of whole-number RGB ``[N, 3, H, W]`` (any dtype): int32 ``[N, H, W]``, 0..255."""
    r, g, b = rgb.to(torch.int32).unbind(1)
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


@functools.lru_cache(maxsize=1)
def dct_factors_cpu() -> tuple[torch.Tensor, torch.Tensor]:
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
def bit_weights_cpu() -> torch.Tensor:
    """int64 value of each of the 64 hash bits, row-major, first bit = bit 63 (the sign bit, hence negative)."""
    return torch.tensor([-(1 << 63)] + [1 << (62 - i) for i in range(63)], dtype=torch.int64)


def phash_torch(images: torch.Tensor) -> torch.Tensor:
    """Plain-torch hashes of a validated uint8 ``[N, C, H, W]`` batch (the CPU path, and the kernel's reference)."""
    small = resize_like_pil(images)
    # A 1-channel input is a PIL "L" image already: convert("L") leaves it as it is.
    gray = small[:, 0] if small.shape[1] == 1 else luma_like_pil(small).to(torch.float64)
    cos, butterfly = (t.to(images.device) for t in dct_factors_cpu())
    exact = butterfly @ gray @ butterfly.T  # whole numbers below 2^19: exact
    coef = (cos @ exact @ cos.T).flatten(1)  # [N, 64]: scipy's dct(dct(x, axis=0), axis=1)[:8, :8]
    median = coef[:, 1:].kthvalue((PHASH_BLOCK * PHASH_BLOCK) // 2, dim=1).values  # 63 values: the 32nd
    bits = (coef >= median[:, None]).to(torch.int64)
    return (bits * bit_weights_cpu().to(images.device)).sum(1)
