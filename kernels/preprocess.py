"""The detector's input in one pass: bilinear resize + pad + RGB→BGR + mean subtraction (+ fp16), uint8 in.

Plain torch (:func:`engine.faces.preprocess.preprocess_torch`) makes a float32 copy of the uint8 frames, resizes it
(``upsample_bilinear2d``), flips the channels, subtracts the mean, casts and makes the result channels-last: five
passes over frame-sized tensors. :func:`preprocess` reads each uint8 frame once and writes the network's input once,
already channels-last, optionally padded to a batch shape.

**Equal to plain torch, bit for bit.** The resize is ``torch.ops.aten.upsample_bilinear2d(x, out, False, s, s)``
(OpenCV's INTER_LINEAR geometry: ``out = max(1, round(size * s))``, source ``(dst + 0.5) / s - 0.5`` clamped at 0,
``1 / s`` rounded to float32 first), and the kernel does the same float32 operations in the same order, with the
same fused multiply-adds, as the torch kernel it replaces. That order differs between torch's kernels, so the kernel
has one arithmetic *mode* per torch kernel (torch 2.11; a new torch may change them, which the tests will show):

* ``MODE_LEFT`` — CUDA, input not channels-last (``upsample_bilinear2d_out_frame``), and the CPU generic kernel:
  ``top = fma(x00, w0, x01 * w1)``, ``bottom = fma(x10, w0, x11 * w1)``, ``out = fma(top, h0, bottom * h1)``.
* ``MODE_CUDA_NHWC`` — CUDA, channels-last input (what the decoder gives; ``upsample_bilinear2d_nhwc_out_frame``):
  ``top = fma(x01, w1, x00 * w0)``, the rest as above. Read off the sm_90 SASS of torch 2.11's libtorch_cuda.so
  (``cuobjdump -sass``): nvcc fused the *right* tap of the top row but the *left* tap of the bottom row.
* ``MODE_CPU_CL`` — the CPU channels-last kernel, which torch picks when ``out_h + out_w <= 128`` or when it runs on
  one thread (C == 3): weights ``h0 * w0`` … ``h1 * w1`` rounded first, then
  ``fma(x11, w11, fma(x10, w10, fma(x00, w00, x01 * w01)))``. Found by probing torch on this CPU (an AVX2 build).

Every mode computes the source coordinate as ``fma(dst + 0.5, 1 / s, -0.5)`` (both CUDA and the AVX2 CPU build
fuse it). On the CPU an axis whose size does not change is copied (lambda 1, 0); on CUDA only a resize that changes
neither axis is a copy. Then ``value - mean`` in float32 and one round-to-nearest-even cast to the output dtype,
as ``(x.flip(1) - mean).to(dtype)`` does. So the output equals plain torch exactly, on the device it runs on.

Triton's interpreter computes ``tl.fma`` as ``x * y + z`` in float32 (two roundings), so interpreted runs form each
fma in float64 instead (``EMULATE_FMA``): exact products, one float64 rounding of the sum, then float32 — identical to
a hardware fma except when the float64 sum falls exactly on a float32 tie (about 2^-29 per operation).

**Padding.** ``pad_multiple`` / ``pad_to`` grow the output at the bottom and right (box coordinates are unchanged) and
fill it with ``pad_value`` *after* mean subtraction: the default 0.0 is the training mean colour, the network's
neutral input (and what ``torch.nn.functional.pad`` of the plain result gives). :func:`preprocess_reference` is the
plain-torch result padded the same way.

**Status: not yet timed on a GPU.** No GPU was available when this was written; the CUDA test prints kernel vs
plain-torch timings. A kernel not faster than plain torch on the device is to be removed (kernels/README.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from engine.faces.preprocess import BGR_MEAN, preprocess_torch

from ._triton import HAVE_TRITON, is_interpreted, runnable_on, tl, triton

MODE_LEFT = 0
MODE_CUDA_NHWC = 1
MODE_CPU_CL = 2

#: Output dtypes: the detector runs in float32 or float16. (bfloat16 would round right compiled, but Triton 3.6's
#: interpreter truncates float32 → bfloat16, so it could not be tested here.)
_OUT_DTYPES = (torch.float32, torch.float16)

if HAVE_TRITON:

    @triton.jit
    def _fma(a, b, c, EMULATE: tl.constexpr):
        """``a * b + c`` rounded once (see the module docstring for the interpreter's float64 form)."""
        if EMULATE:
            return (a.to(tl.float64) * b.to(tl.float64) + c.to(tl.float64)).to(tl.float32)
        else:
            return tl.fma(a, b, c)

    @triton.jit
    def _axis(dst, n_in, n_out, rscale, COPY_SAME_SIZE: tl.constexpr, EMULATE: tl.constexpr):
        """Source taps and weights along one axis, as ATen computes them (``area_pixel_compute_source_index``)."""
        centre = dst.to(tl.float32) + 0.5
        src = _fma(centre, tl.full(centre.shape, rscale, tl.float32), tl.full(centre.shape, -0.5, tl.float32), EMULATE)
        src = tl.where(src < 0.0, 0.0, src)
        i0 = tl.minimum(src.to(tl.int32), n_in - 1)  # truncation is floor here (src >= 0); the clamp never bites
        l1 = src - i0.to(tl.float32)
        i1 = tl.where(i0 < n_in - 1, i0 + 1, i0)
        if COPY_SAME_SIZE:  # ATen's CPU kernels copy an axis whose size does not change
            same = n_in == n_out
            i0 = tl.where(same, dst, i0)
            i1 = tl.where(same, dst, i1)
            l1 = tl.where(same, 0.0, l1)
        l0 = 1.0 - l1
        return i0, i1, l0, l1

    @triton.jit
    def _preprocess_kernel(
        src_ptr,
        dst_ptr,
        in_h,
        in_w,
        out_h,
        out_w,
        pad_h,
        pad_w,
        s_n,
        s_c,
        s_h,
        s_w,
        d_n,
        d_c,
        d_h,
        d_w,
        rscale_h,
        rscale_w,
        mean_b,
        mean_g,
        mean_r,
        pad_value,
        RESIZE: tl.constexpr,
        MODE: tl.constexpr,
        COPY_SAME_SIZE: tl.constexpr,
        EMULATE_FMA: tl.constexpr,
        BLOCK_H: tl.constexpr,
        BLOCK_WC: tl.constexpr,
    ):
        """One tile of output rows × (column, channel) pairs of one image: columns and channels interleaved as in the
        channels-last output, so loads and stores run along memory."""
        n = tl.program_id(2).to(tl.int64)
        oh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        wc = tl.program_id(0) * BLOCK_WC + tl.arange(0, BLOCK_WC)
        ow = wc // 3
        c = wc % 3  # output channel: 0 B, 1 G, 2 R
        src_c = 2 - c  # input channel (RGB)
        mean = tl.where(c == 0, mean_b, tl.where(c == 1, mean_g, mean_r))
        inside = (oh < out_h)[:, None] & (ow < out_w)[None, :]
        base = src_ptr + n * s_n + (src_c * s_c)[None, :]
        if RESIZE:
            h0i, h1i, h0l, h1l = _axis(oh, in_h, out_h, rscale_h, COPY_SAME_SIZE, EMULATE_FMA)
            w0i, w1i, w0l, w1l = _axis(ow, in_w, out_w, rscale_w, COPY_SAME_SIZE, EMULATE_FMA)
            r0 = (h0i * s_h)[:, None]
            r1 = (h1i * s_h)[:, None]
            c0 = (w0i * s_w)[None, :]
            c1 = (w1i * s_w)[None, :]
            x00 = tl.load(base + r0 + c0, mask=inside, other=0).to(tl.float32)
            x01 = tl.load(base + r0 + c1, mask=inside, other=0).to(tl.float32)
            x10 = tl.load(base + r1 + c0, mask=inside, other=0).to(tl.float32)
            x11 = tl.load(base + r1 + c1, mask=inside, other=0).to(tl.float32)
            w0 = w0l[None, :]
            w1 = w1l[None, :]
            h0 = h0l[:, None]
            h1 = h1l[:, None]
            if MODE == 2:  # CPU channels-last kernel: product weights, one chain of fmas
                w00 = h0 * w0
                w01 = h0 * w1
                w10 = h1 * w0
                w11 = h1 * w1
                value = _fma(x11, w11, _fma(x10, w10, _fma(x00, w00, x01 * w01, EMULATE_FMA), EMULATE_FMA), EMULATE_FMA)
            else:
                if MODE == 1:  # noqa: SIM108 - a compile-time branch; CUDA NHWC fuses the top row's right tap
                    top = _fma(x01, w1, x00 * w0, EMULATE_FMA)
                else:
                    top = _fma(x00, w0, x01 * w1, EMULATE_FMA)
                bottom = _fma(x10, w0, x11 * w1, EMULATE_FMA)
                value = _fma(top, h0, bottom * h1, EMULATE_FMA)
        else:
            value = tl.load(base + (oh * s_h)[:, None] + (ow * s_w)[None, :], mask=inside, other=0).to(tl.float32)
        value = tl.where(inside, value - mean[None, :], pad_value)
        keep = (oh < pad_h)[:, None] & (ow < pad_w)[None, :]
        dst = dst_ptr + n * d_n + (oh * d_h)[:, None] + (ow * d_w + c * d_c)[None, :]
        tl.store(dst, value.to(dst_ptr.dtype.element_ty), mask=keep)

else:  # pragma: no cover
    _preprocess_kernel = None


def available(device: str | torch.device) -> bool:
    """Triton importable and ``device`` CUDA (compiled), or a CPU device with the interpreter forced."""
    return runnable_on(_preprocess_kernel, device)


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The resized size, as ``engine.faces.preprocess.resize_like_cv2`` computes it (Python's round, at least 1)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded_size(size: tuple[int, int], pad_multiple: int = 1, pad_to: tuple[int, int] | None = None) -> tuple[int, int]:
    """``size`` grown to ``pad_to`` (which must hold it) and then up to a multiple of ``pad_multiple``."""
    if pad_multiple < 1:
        raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
    h, w = size
    if pad_to is not None:
        if pad_to[0] < h or pad_to[1] < w:
            raise ValueError(f"pad_to {tuple(pad_to)} is smaller than the resized size {(h, w)}")
        h, w = pad_to
    return math.ceil(h / pad_multiple) * pad_multiple, math.ceil(w / pad_multiple) * pad_multiple


def _channels_last_input(frames: torch.Tensor) -> bool:
    """Whether ATen sees the float copy of ``frames`` as channels-last (what picks its NHWC CUDA kernel)."""
    try:
        from torch._prims_common import suggest_memory_format

        return suggest_memory_format(frames) == torch.channels_last
    except Exception:  # noqa: BLE001 - private helper; the public test is equivalent for dense tensors
        return frames.is_contiguous(memory_format=torch.channels_last) and not frames.is_contiguous()


def arithmetic_mode(frames: torch.Tensor, out: tuple[int, int]) -> int:
    """Which torch kernel's arithmetic plain torch would use for this resize on ``frames``' device."""
    if frames.device.type == "cuda":
        return MODE_CUDA_NHWC if _channels_last_input(frames) else MODE_LEFT
    # ATen's CPU choice (upsample_bilinear2d_kernel_impl_float): the channels-last kernel for small outputs or a
    # single thread with 3 channels, else the generic one.
    if out[0] + out[1] <= 128 or torch.get_num_threads() == 1:
        return MODE_CPU_CL
    return MODE_LEFT


def preprocess(
    frames: torch.Tensor,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    pad_multiple: int = 1,
    pad_to: tuple[int, int] | None = None,
    pad_value: float = 0.0,
    mode: int | None = None,
) -> torch.Tensor:
    """uint8 RGB ``[N, 3, H, W]`` → resized, padded, BGR, minus the mean: ``[N, 3, PH, PW]`` of ``dtype``,
    channels-last, on ``frames``' device; equal to :func:`preprocess_reference` (see the module docstring).

    ``mode`` overrides the arithmetic mode (tests only); by default it follows the torch kernel of that device.
    """
    if _preprocess_kernel is None:
        raise RuntimeError("Triton is not installed (pip install '.[gpu]')")
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected uint8 [N, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
    if dtype not in _OUT_DTYPES:
        raise ValueError(f"dtype must be one of {_OUT_DTYPES}, got {dtype}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    n, _, in_h, in_w = frames.shape
    out = (in_h, in_w) if scale == 1.0 else output_size(in_h, in_w, scale)
    pad_h, pad_w = padded_size(out, pad_multiple, pad_to)
    dst = torch.empty((n, 3, pad_h, pad_w), dtype=dtype, device=frames.device, memory_format=torch.channels_last)
    if dst.numel() == 0:
        return dst
    interpreted = is_interpreted(_preprocess_kernel)
    # Plain torch calls no resize at scale 1, and its CUDA resize is a copy when neither size changes.
    resize = out != (in_h, in_w)
    if mode is None:
        mode = arithmetic_mode(frames, out)
    # The CPU kernels copy an axis whose size does not change; CUDA's resample it at 1 / scale.
    copy_same_size = frames.device.type != "cuda"
    rscale = float(np.float32(1.0 / scale))  # ATen: static_cast<float>(1.0 / scale)
    # Interpreted programs run one after another in NumPy: few large tiles. Compiled: small tiles, many programs.
    block_h, block_wc = (32, 2048) if interpreted else (4, 256)
    grid = (triton.cdiv(pad_w * 3, block_wc), triton.cdiv(pad_h, block_h), n)
    _preprocess_kernel[grid](
        frames,
        dst,
        in_h,
        in_w,
        out[0],
        out[1],
        pad_h,
        pad_w,
        *frames.stride(),
        *dst.stride(),
        rscale,
        rscale,
        *map(float, BGR_MEAN),
        float(pad_value),
        RESIZE=resize,
        MODE=mode,
        COPY_SAME_SIZE=copy_same_size,
        EMULATE_FMA=interpreted,
        BLOCK_H=block_h,
        BLOCK_WC=block_wc,
        num_warps=4,
        enable_fp_fusion=False,  # no contraction beyond the explicit fmas (the interpreter ignores it)
    )
    return dst


def preprocess_reference(
    frames: torch.Tensor,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    pad_multiple: int = 1,
    pad_to: tuple[int, int] | None = None,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """Plain torch: the engine's own preprocessing (kernel hooks bypassed), then padded bottom/right."""
    x = preprocess_torch(frames, scale, dtype)
    pad_h, pad_w = padded_size(tuple(x.shape[-2:]), pad_multiple, pad_to)
    if (pad_h, pad_w) == tuple(x.shape[-2:]):
        return x
    padded = F.pad(x, (0, pad_w - x.shape[-1], 0, pad_h - x.shape[-2]), value=pad_value)
    return padded.contiguous(memory_format=torch.channels_last)
