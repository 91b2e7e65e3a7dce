"""Nearest-neighbour and range queries over descriptor matrices: blocked torch, or FAISS when that is faster.

Two jobs, each with one entry point that picks how to run it:

* :func:`pairs_above`: every row pair ``a < b`` whose inner product reaches a floor (the cross-video track
  similarities of ``engine.cluster.similar_pairs``: the faces' mean pairwise cosine of two tracks; the rows are
  weighted means of unit vectors, not unit length, so the metric is the plain inner product).
* :func:`knn`: each query row's ``k`` nearest base rows by Euclidean distance, nearest first (the gallery vote of
  ``engine.apps.people.knn_vote``).

Both ways are exact, so they find the same pairs and the same neighbours. The similarities themselves can differ
in the last bits (MKL in torch, OpenBLAS in FAISS, other summation orders: measured under 1e-6), so a pair whose
similarity lies within that of the floor may be kept by one and not by the other. Pairs come back in the order the
blocked torch loop makes (row block, column block, then row-major), whichever way ran.

Which way (``method="auto"``), measured by ``benchmarks/faiss_bench.py`` (``benchmarks/RESULTS.md``, 2026-12-06):

* tensors on the CPU: torch below :data:`FAISS_MIN_ROWS` live rows (range) or :data:`FAISS_MIN_KNN_WORK` query x
  base rows (knn; or fewer than 20 queries against :data:`FAISS_FEW_QUERIES_BASE` rows), FAISS's exact search
  (``range_search_inner_product``, ``knn``) from there on; under the thresholds the times are small or the two
  are within noise of each other, and torch keeps the numbers of earlier runs bit for bit;
* tensors on a GPU: knn through FAISS's GPU brute force when ``faiss.get_num_gpus() > 0``, else torch on the GPU
  (a copy to the host to run FAISS's CPU search would lose to the GPU's matrix product); ranges always in torch on
  the GPU, as FAISS's GPU indexes have no range search;
* FAISS not installed: torch, said once in the log.

No approximate index is used: candidate pairs it misses are merges the grouping never sees. The benchmark measures
an IVF index at 10^6 rows with its recall (0.983 at ``nprobe`` 16, 10x faster than exact FAISS there) for the day
exact search is too slow.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "FAISS_FEW_QUERIES_BASE",
    "FAISS_MIN_KNN_WORK",
    "FAISS_MIN_ROWS",
    "faiss_module",
    "faiss_row_block",
    "faiss_rows",
    "knn",
    "knn_method",
    "pairs_above",
    "range_method",
    "torch_row_block",
]

#: Live rows from which :func:`pairs_above` runs FAISS on the CPU: more than one 4096-row block. FAISS measured 1.6x
#: to 4x faster at every size from 10^3 to 10^5 rows with 128-d rows, and never slower with 1024-d rows (1.05x:
#: there the matrix product, the same in both, dominates); under one block both take under 0.3 s, and torch keeps the
#: numbers of runs made before FAISS bit for bit.
FAISS_MIN_ROWS = 4096
#: Queries x base rows from which :func:`knn` runs FAISS on the CPU: 1.15x to 4x faster from there (10^4 queries x
#: 10^5 rows, 10^3 x 10^6); under it the two are within noise of each other (from FAISS 2x slower at 100 x 10^5,
#: 1024-d, to 2x faster).
FAISS_MIN_KNN_WORK = 1_000_000_000
#: Fewer queries than FAISS's own switch to BLAS (20) scan the base with SIMD, 3x to 4x faster than torch's matrix
#: product from this many base rows on (10 queries: 0.9 s against 0.2 s on 10^6 rows, 128-d).
FAISS_FEW_QUERIES_BASE = 100_000
#: Elements of one distance block in the torch knn (64 Mi floats: 256 MiB), so a huge gallery never needs the whole
#: ``[queries, base]`` matrix at once.
KNN_BLOCK_ELEMENTS = 1 << 26

_GPU_RESOURCES: list = []


@functools.cache
def faiss_module() -> ModuleType | None:
    """FAISS, imported on first use (it is not needed to start the engine); None, said once, when it is missing."""
    try:
        import faiss  # noqa: PLC0415 - lazy: only large searches need it
    except ImportError as exc:
        log.info("faiss is not installed (%s): nearest-neighbour searches run in torch", exc)
        return None
    return faiss


def _faiss_gpus() -> int:
    faiss = faiss_module()
    return 0 if faiss is None else int(faiss.get_num_gpus())


def range_method(rows: int, device: torch.device) -> str:
    """``"torch"`` or ``"faiss"`` for a range search among ``rows`` live rows on ``device``."""
    if device.type != "cpu" or rows < FAISS_MIN_ROWS or faiss_module() is None:
        return "torch"
    return "faiss"


def knn_method(queries: int, base: int, device: torch.device) -> str:
    """``"torch"``, ``"faiss"`` or ``"faiss-gpu"`` for ``queries`` x ``base`` rows on ``device``."""
    if device.type == "cuda":
        return "faiss-gpu" if _faiss_gpus() > 0 else "torch"
    large = queries * base >= FAISS_MIN_KNN_WORK or (queries < 20 and base >= FAISS_FEW_QUERIES_BASE)
    return "faiss" if large and faiss_module() is not None else "torch"


# ------------------------------------------------------------------------------------------------ range search


def pairs_above(
    x: torch.Tensor, live: torch.Tensor, floor: float, block: int = 4096, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row pairs ``a < b`` among the ``live`` rows of ``x`` ``[N, D]`` with ``x[a] · x[b] >= floor``: ``(a, b,
    similarity)`` on ``x``'s device, in the blocked loop's order. ``method``: ``"auto"``, ``"torch"``, ``"faiss"``."""
    if method == "auto":
        method = range_method(int(live.sum()), x.device)
    if method == "faiss":
        rows, xs = faiss_rows(x, live)
        parts = [faiss_row_block(xs, floor, i, block) for i in range(0, len(xs), block)]
        a, b, c = (np.concatenate(p) for p in zip(*parts, strict=True)) if parts else _no_pairs()
        a, b = rows[a], rows[b]
        order = np.lexsort((b, a, b // block, a // block))  # the torch loop's order, in the caller's row numbers
        return tuple(torch.from_numpy(np.ascontiguousarray(v[order])).to(x.device) for v in (a, b, c))
    parts = [torch_row_block(x, live, floor, i, block) for i in range(0, len(x), block)]
    if not parts:
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return empty, empty, torch.zeros(0, device=x.device)
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def torch_row_block(
    x: torch.Tensor, live: torch.Tensor, floor: float, i: int, block: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs whose ``a`` lies in rows ``i .. i + block`` of ``x``, column block by column block."""
    a_parts, b_parts, c_parts = [], [], []
    for j in range(i, len(x), block):
        sim = x[i : i + block] @ x[j : j + block].T
        keep = (sim >= floor) & live[i : i + block, None] & live[None, j : j + block]
        if i == j:
            keep &= torch.ones_like(keep).triu(1)
        ia, jb = keep.nonzero(as_tuple=True)
        a_parts.append(ia + i)
        b_parts.append(jb + j)
        c_parts.append(sim[ia, jb])
    return torch.cat(a_parts), torch.cat(b_parts), torch.cat(c_parts)


def faiss_rows(x: torch.Tensor, live: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The live rows' numbers and their float32 copy on the host, as FAISS takes them."""
    rows = live.nonzero().flatten().cpu().numpy()
    return rows, np.ascontiguousarray(x.detach().float().cpu().numpy()[rows])


def faiss_row_block(xs: np.ndarray, floor: float, i: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FAISS's exact range search of rows ``i .. i + block`` of ``xs`` against every row from ``i`` on (the upper
    triangle, as in torch). FAISS keeps similarities strictly above its radius: the radius is the float32 just
    under the floor, and the floor itself is applied after, in float32 as torch compares."""
    faiss = faiss_module()
    m, d = xs.shape
    nq = min(block, m - i)
    floor32 = np.float32(floor)
    radius = float(np.nextafter(floor32, np.float32(-np.inf)))
    res = faiss.RangeSearchResult(nq)
    faiss.range_search_inner_product(faiss.swig_ptr(xs[i : i + nq]), faiss.swig_ptr(xs[i:]), d, nq, m - i, radius, res)
    lims = faiss.rev_swig_ptr(res.lims, nq + 1).astype(np.int64)
    total = int(lims[-1])
    sim = faiss.rev_swig_ptr(res.distances, total).copy()
    col = faiss.rev_swig_ptr(res.labels, total) + i
    row = np.repeat(np.arange(i, i + nq), np.diff(lims))
    keep = (col > row) & (sim >= floor32)
    return row[keep], col[keep], sim[keep]


def _no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------------------------- nearest neighbours


def knn(queries: torch.Tensor, base: torch.Tensor, k: int, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Each query row's ``k`` nearest rows of ``base`` (``k`` at most ``len(base)``) by Euclidean distance, nearest
    first: ``(distance [Q, k], row [Q, k])`` on ``base``'s device. ``method``: ``"auto"``, ``"torch"``, ``"faiss"``,
    ``"faiss-gpu"``."""
    queries = queries.to(base).float()
    base = base.float()
    k = min(k, len(base))
    if method == "auto":
        method = knn_method(len(queries), len(base), base.device)
    if method == "faiss-gpu":
        return _faiss_gpu_knn(queries, base, k)
    if method == "faiss":
        host = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in (queries, base)]
        dist2, row = faiss_module().knn(*host, k)
        dist = torch.from_numpy(dist2).clamp(min=0).sqrt()
        return dist.to(base.device), torch.from_numpy(row).to(base.device)
    step = max(1, KNN_BLOCK_ELEMENTS // max(1, len(base)))
    chunks = range(0, len(queries), step)
    parts = [torch.cdist(queries[i : i + step], base).topk(k, dim=1, largest=False) for i in chunks]
    if not parts:
        return torch.zeros((0, k), device=base.device), torch.zeros((0, k), dtype=torch.long, device=base.device)
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


def _faiss_gpu_knn(queries: torch.Tensor, base: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FAISS's GPU brute force on the tensors where they are (``faiss.contrib.torch_utils`` passes device
    pointers); one ``StandardGpuResources`` for the process."""
    faiss = faiss_module()
    importlib.import_module("faiss.contrib.torch_utils")  # lets knn_gpu take torch tensors
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    device = base.device.index if base.device.index is not None else torch.cuda.current_device()
    dist2, row = faiss.knn_gpu(_GPU_RESOURCES[0], queries.contiguous(), base.contiguous(), k, device=device)
    return dist2.clamp(min=0).sqrt(), row
