"""imagededup's PHash of many uint8 images in one kernel launch: one program per image, nothing in float64 memory.

Plain torch (:func:`engine.phash.phash_torch`) turns a chunk of chips into a float64 copy (8× the uint8 bytes), runs
two batched float64 matrix products for Pillow's Lanczos resize, then the luma, the DCT products, ``kthvalue`` and
the bit packing as separate launches. Here each program reads its image once (uint8, any strides) and keeps
everything else in registers:

1. **Resize** to 32×32 per channel: Pillow's two 8-bit passes (horizontal, then vertical) with Pillow's own
   fixed-point weights (``engine.phash.resample_weights``), each pass ``(acc + 2^21) >> 22`` clipped to 0..255, as
   int8 tensor-core products (``tl.dot`` int8 × int8 → int32) over 32 × 32 source tiles: the pixel offset to int8
   (``x − 128``; ``128 · Σ w`` added back per output), each 22-bit weight split into three signed bytes
   (``w = d2·2^16 + d1·2^8 + d0``), one product per byte, recombined in int64. Integer arithmetic throughout, so the
   passes are *exactly* the reference's (its float64 sums are exact integers too). A side that is already 32 gets
   2^22 × the identity, which gives back the input exactly, as Pillow's skipped pass does. Tall images that the
   installed Pillow resizes vertical pass first are walked transposed (strides swapped), bit weights transposed.
   (Why not float64 ``tl.dot``: Triton 3.6 cannot lower a float64 MMA whose operand was converted from uint8 on
   sm_90 — "fp64 don't support largeK MMA" — which the interpreter does not show; int8 compiles, checked offline.)
2. **Luma** ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16`` in int32 (1-channel input: the resized channel itself).
3. **DCT** through the same factors as the reference (``engine.phash.dct_factors_cpu``): the integer butterfly
   ``B G Bᵀ`` (exact), then the cosines, arranged as ``coef[8k + l] = Σ_i C[k, i] (E Cᵀ)[i, l]`` so that the 64
   coefficients come out as one vector. Coefficients that are mathematically zero (flat or mirror-symmetric images)
   are exact zeros here as in the reference and in scipy.
4. **Median** of the 63 AC coefficients (the 32nd smallest) by counting, per coefficient, the coefficients below it
   and not above it; bits ``coef >= median``; packed into an int64 with coefficient [0, 0] in bit 63.

**Exactness.** Steps 1, 2 and the butterfly (float64 products of whole numbers below 2^19) are exact. The cosine
products are float64 sums in another order than the reference's BLAS, so a coefficient may differ in its last bits; a
hash bit can then differ only where two coefficients tie to within ~1e-12 relative without being exactly equal — e.g.
images symmetric about their diagonal, which the reference itself cannot match scipy on (see ``engine.phash``). On
real face chips, random images, and flat or mirrored images the hashes are equal (tests/test_kernels.py).

**Status: not yet timed on a GPU.** No GPU was available when this was written; the CUDA test prints kernel vs
plain-torch timings. A kernel not faster than plain torch on the device is to be removed (kernels/README.md).
Tunables to try there: ``num_warps`` (8: 255 registers a thread without spills on sm_90; 4 spills a little) and the
median's 64 × 64 comparison, the main register user after the products.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from engine.phash import (
    PRECISION_BITS,
    bit_weights_cpu,
    dct_factors_cpu,
    phash_torch,
    pillow_tall_images_vertical_first,
    resample_weights,
)

from ._triton import HAVE_TRITON, is_interpreted, runnable_on, tl, triton

#: imagededup's geometry (``engine.phash.PHASH_SIZE`` / ``PHASH_BLOCK``), which the kernel's shapes assume.
SIZE = 32
BLOCK = 8

if HAVE_TRITON:

    @triton.jit
    def _pillow_round(d0, d1, d2, offset):
        """Pillow's ``(acc + 2^21) >> 22`` clipped to a byte, from the three digit products and the offset term."""
        acc = (d2.to(tl.int64) << 16) + (d1.to(tl.int64) << 8) + d0.to(tl.int64) + offset
        return tl.minimum(tl.maximum((acc + 2097152) >> 22, 0), 255)

    # layout: long function — one Triton program per image: resize, luma, DCT and median stay in registers
    @triton.jit
    def _phash_kernel(
        img_ptr,
        out_ptr,
        wh_ptr,
        wh_sum_ptr,
        wv_ptr,
        wv_sum_ptr,
        bfly_ptr,
        bfly_t_ptr,
        cos_l_ptr,
        cos_k_ptr,
        bits_ptr,
        height,
        width,
        s_n,
        s_c,
        s_h,
        s_w,
        wh_digit_stride,
        wv_digit_stride,
        wv_row_stride,
        CHANNELS: tl.constexpr,
        ROW_TILES: tl.constexpr,
        COL_TILES: tl.constexpr,
        TILE: tl.constexpr,
    ):
        """One image: ``height × width`` as walked (rows along ``s_h``), horizontal pass first.

        Source tiles are ``TILE × TILE``; the tile counts ``ceil(height / TILE)``, ``ceil(width / TILE)`` are
        compile-time constants: one compiled variant per size class, not per size (and Triton 3.6's interpreter
        cannot loop to a runtime bound on NumPy 2).
        """
        n = tl.program_id(0).to(tl.int64)
        t = tl.arange(0, 32)
        s = tl.arange(0, TILE)
        base = img_ptr + n * s_n
        wh_offset = tl.load(wh_sum_ptr + t)[None, :] * 128  # Σ_x x·w = Σ_x (x − 128)·w + 128·Σ_x w
        wv_offset = tl.load(wv_sum_ptr + t)[:, None] * 128
        gray = tl.zeros([32, 32], dtype=tl.int32)
        for c in tl.static_range(CHANNELS):
            v0 = tl.zeros([32, 32], dtype=tl.int32)  # vertical pass, one accumulator per weight digit
            v1 = tl.zeros([32, 32], dtype=tl.int32)
            v2 = tl.zeros([32, 32], dtype=tl.int32)
            for ri in range(ROW_TILES):
                rows = ri * TILE + s
                h0 = tl.zeros([TILE, 32], dtype=tl.int32)  # horizontal pass of these rows: [row, out col]
                h1 = tl.zeros([TILE, 32], dtype=tl.int32)
                h2 = tl.zeros([TILE, 32], dtype=tl.int32)
                for ki in range(COL_TILES):
                    cols = ki * TILE + s
                    mask = (rows < height)[:, None] & (cols < width)[None, :]
                    x = tl.load(base + c * s_c + rows[:, None] * s_h + cols[None, :] * s_w, mask=mask, other=0)
                    x = (x.to(tl.int32) - 128).to(tl.int8)
                    w = wh_ptr + cols[:, None] * 32 + t[None, :]  # [col, out col]; zero past width
                    wmask = (cols < width)[:, None]
                    h0 = tl.dot(x, tl.load(w, mask=wmask, other=0), h0, out_dtype=tl.int32)
                    h1 = tl.dot(x, tl.load(w + wh_digit_stride, mask=wmask, other=0), h1, out_dtype=tl.int32)
                    h2 = tl.dot(x, tl.load(w + 2 * wh_digit_stride, mask=wmask, other=0), h2, out_dtype=tl.int32)
                # Rows past the height hold junk here; their vertical weights are zero.
                row8 = (_pillow_round(h0, h1, h2, wh_offset) - 128).to(tl.int8)
                v = wv_ptr + t[:, None] * wv_row_stride + rows[None, :]  # [out row, row]; zero past height
                vmask = (rows < height)[None, :]
                v0 = tl.dot(tl.load(v, mask=vmask, other=0), row8, v0, out_dtype=tl.int32)
                v1 = tl.dot(tl.load(v + wv_digit_stride, mask=vmask, other=0), row8, v1, out_dtype=tl.int32)
                v2 = tl.dot(tl.load(v + 2 * wv_digit_stride, mask=vmask, other=0), row8, v2, out_dtype=tl.int32)
            small = _pillow_round(v0, v1, v2, wv_offset).to(tl.int32)
            if CHANNELS == 3:
                if c == 0:
                    gray += small * 19595
                elif c == 1:
                    gray += small * 38470
                else:
                    gray += small * 7471
            else:
                gray = small
        if CHANNELS == 3:
            gray = (gray + 32768) >> 16
        b = tl.load(bfly_ptr + t[:, None] * 32 + t[None, :])
        b_t = tl.load(bfly_t_ptr + t[:, None] * 32 + t[None, :])
        e = tl.dot(tl.dot(b, gray.to(tl.float64), out_dtype=tl.float64), b_t, out_dtype=tl.float64)  # exact
        p = tl.arange(0, 64)
        cos_l = tl.load(cos_l_ptr + t[:, None] * 64 + p[None, :])  # [j, p] = C[p % 8, j]
        cos_k = tl.load(cos_k_ptr + t[:, None] * 64 + p[None, :])  # [i, p] = C[p // 8, i]
        coef = tl.sum(cos_k * tl.dot(e, cos_l, out_dtype=tl.float64), axis=0)  # [64]: (C E Cᵀ)[p // 8, p % 8]
        ac = p >= 1
        below = tl.sum((ac[None, :] & (coef[None, :] < coef[:, None])).to(tl.int32), axis=1)
        not_above = tl.sum((ac[None, :] & (coef[None, :] <= coef[:, None])).to(tl.int32), axis=1)
        is_median = ac & (below < 32) & (not_above >= 32)  # the 32nd smallest of the 63 AC coefficients
        median = tl.max(tl.where(is_median, coef, float("-inf")), axis=0)
        weights = tl.load(bits_ptr + p)
        tl.store(out_ptr + n, tl.sum(tl.where(coef >= median, weights, 0), axis=0))

else:  # pragma: no cover
    _phash_kernel = None


def available(device: str | torch.device) -> bool:
    """Triton importable and ``device`` CUDA (compiled), or a CPU device with the interpreter forced."""
    return runnable_on(_phash_kernel, device)


def _resample_matrix(in_size: int) -> np.ndarray:
    """Pillow's whole-number weights ``[32, in_size]`` for one pass; 2^22 × identity where Pillow skips the pass."""
    if in_size == SIZE:
        return np.eye(SIZE, dtype=np.int64) << PRECISION_BITS
    return resample_weights(in_size, SIZE).astype(np.int64)


def _signed_bytes(weights: np.ndarray) -> np.ndarray:
    """Whole numbers as three balanced signed bytes ``w = d2·2^16 + d1·2^8 + d0``: int8 ``[3, ...]``.

    Pillow's weights are 22-bit fixed point (the identity is 2^22, so ``d2 = 64``); the top byte must fit.
    """
    d0 = (weights + 128) % 256 - 128
    rest = (weights - d0) // 256
    d1 = (rest + 128) % 256 - 128
    d2 = (rest - d1) // 256
    if np.abs(d2).max(initial=0) > 127:
        raise ValueError("resampling weight out of the three-byte range")
    return np.stack([d0, d1, d2]).astype(np.int8)


@functools.lru_cache(maxsize=64)
def _operands(height: int, width: int, transposed: bool, device: str) -> tuple[torch.Tensor, ...]:
    """The tables of an image walked as ``height × width``, on ``device``.

    ``wh``: int8 ``[3, width, 32]`` (horizontal weights transposed, one slice per byte), ``wh_sum``: int64 ``[32]``
    (each output's weight sum, for the −128 pixel offset); ``wv`` ``[3, 32, height]``, ``wv_sum`` likewise; the DCT
    factors (float64); the bit weights (int64, transposed to match a transposed walk).
    """
    horizontal = _resample_matrix(width)  # [32, width]
    vertical = _resample_matrix(height)  # [32, height]
    cos, butterfly = dct_factors_cpu()
    p = torch.arange(BLOCK * BLOCK)
    cos_l = cos[p % BLOCK].T  # [32, 64]
    cos_k = cos[p // BLOCK].T  # [32, 64]
    bits = bit_weights_cpu()
    if transposed:  # the kernel's coefficient [k, l] is the image's [l, k]
        bits = bits.view(BLOCK, BLOCK).T.reshape(-1)
    tensors = (
        torch.from_numpy(_signed_bytes(horizontal.T)),
        torch.from_numpy(horizontal.sum(1)),
        torch.from_numpy(_signed_bytes(vertical)),
        torch.from_numpy(vertical.sum(1)),
        butterfly,
        butterfly.T,
        cos_l,
        cos_k,
        bits,
    )
    return tuple(x.to(device=device).contiguous() for x in tensors)


def _walk_transposed(height: int, width: int) -> bool:
    """Whether the installed Pillow resizes this size vertical pass first (``engine.phash``'s resize rule)."""
    tall = height > SIZE and height - SIZE > 2 * (width - SIZE)
    return tall and pillow_tall_images_vertical_first()


def phash(images: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """imagededup's PHash of uint8 ``[N, 3, H, W]`` (or ``[N, 1, H, W]`` grayscale) images of one size: int64 ``[N]``
    on their device, equal to :func:`phash_reference` (see the module docstring for the one caveat).

    ``tile``: the source tile side (a power of two >= 32). By default 32 compiled; 64 interpreted, where the cost is
    mostly per operation (about half the time of 32 on 150×150 chips; larger tiles waste more on padding).
    """
    if _phash_kernel is None:
        raise RuntimeError("Triton is not installed (pip install '.[gpu]')")
    if images.dtype != torch.uint8:
        raise TypeError(f"phash expects uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or min(images.shape[2:]) < 1:
        raise ValueError(f"phash expects [N, 3, H, W] (or [N, 1, H, W] grayscale), got {tuple(images.shape)}")
    n, channels, height, width = images.shape
    out = torch.empty(n, dtype=torch.int64, device=images.device)
    if n == 0:
        return out
    s_n, s_c, s_h, s_w = images.stride()
    transposed = _walk_transposed(height, width)
    if transposed:  # vertical pass first = horizontal pass first on the transposed image
        height, width, s_h, s_w = width, height, s_w, s_h
    if tile is None:
        tile = 64 if is_interpreted(_phash_kernel) else SIZE
    if tile < SIZE or tile & (tile - 1):
        raise ValueError(f"tile must be a power of two >= {SIZE}, got {tile}")
    wh, wh_sum, wv, wv_sum, bfly, bfly_t, cos_l, cos_k, bits = _operands(height, width, transposed, str(images.device))
    _phash_kernel[(n,)](
        images,
        out,
        wh,
        wh_sum,
        wv,
        wv_sum,
        bfly,
        bfly_t,
        cos_l,
        cos_k,
        bits,
        height,
        width,
        s_n,
        s_c,
        s_h,
        s_w,
        wh.stride(0),
        wv.stride(0),
        wv.stride(1),
        CHANNELS=channels,
        ROW_TILES=triton.cdiv(height, tile),
        COL_TILES=triton.cdiv(width, tile),
        TILE=tile,
        num_warps=8,  # 255 registers a thread without spills (sm_90, Triton 3.6, compiled offline); 4 spill
    )
    return out


def phash_reference(images: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Plain torch: ``engine.dedup.phash``'s batch computation (kernel hooks bypassed), chunked as it chunks."""
    if chunk is None:
        chunk = 1024 if images.device.type == "cuda" else 16
    parts = [phash_torch(images[lo : lo + chunk]) for lo in range(0, len(images), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=images.device)


__all__ = ["available", "phash", "phash_reference", "is_interpreted"]
