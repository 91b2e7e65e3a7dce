"""Near-duplicate face crops by perceptual hash, batched in torch and bit-for-bit equal to ``imagededup.PHash``.

The original project kept the unique face crops with ``imagededup.methods.PHash``: ``encode_image`` per crop, then
``find_duplicates_to_remove(max_distance_threshold=10)``. That is one PIL round trip per crop and an O(N²) Python
search. Here the same 64-bit hashes come for a whole batch from ``engine.phash`` (plain torch, which says step by step
what imagededup does) or, for CUDA batches, from the Triton kernel ``kernels.phash`` (same bits); the same keep/drop
decisions come from blocked Hamming distances, so stored data does not change.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.phash import phash_torch

if TYPE_CHECKING:
    from PIL import Image

#: imagededup's default ``max_distance_threshold``.
DEFAULT_MAX_DISTANCE = 10

_UINT64_MASK = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------------------- hashing


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
