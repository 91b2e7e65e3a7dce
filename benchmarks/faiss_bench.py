"""FAISS against the blocked torch loop: cross-video track similarities (a range search) and the gallery vote (knn).

    .venv/bin/python benchmarks/faiss_bench.py [--sizes 10000 100000 1000000] [--dim 128] [--queries 1000]

Synthetic, seeded descriptors shaped like the engine's track prototypes: identities of 1 to 9 tracks, each track its
identity's direction plus noise (same-identity cosines about 0.75 to 0.96), unit-normalised, then scaled by 0.85 to
1 (a prototype is a weighted mean of unit vectors, shorter than one) and 1 % of the tracks without a vote. The floor
is the engine's for the embedder of that dimension (``group_similarity - CLUSTER_FLOOR_MARGIN``: dlib 128-d 0.78,
HSE 1024-d 0.45).

Rows, each timed once (wall clock, the machine's threads):

* ``range`` ``torch`` / ``faiss``: ``engine.index.pairs_above`` both ways, exact. Up to ``--exact-limit`` tracks the
  whole search is run; above it only the first ``--sample-blocks`` row blocks (4096 rows each, against every later
  row) are run and the time is scaled by the number of dot products (column ``how``: ``extrapolated``).
  Agreement: the pair sets compared, leaving out pairs within 1e-5 of the floor (float rounding may put those on
  either side), with the largest difference of a shared pair's similarity.
* ``range`` ``faiss-ivf``: an approximate IVF index (``--ivf-from`` tracks on): train, add and a range search of
  every track, measured in full; recall against the exact pairs of the sampled row blocks.
* ``knn`` ``torch`` / ``faiss``: ``engine.index.knn``, ``--queries`` faces against a gallery of that many rows,
  k = 5; agreement: queries with the same neighbours, largest distance difference.

The last column of the summary says what ``method="auto"`` picks at each size (``engine.index`` thresholds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import index  # noqa: E402
from engine.config.sections import CLUSTER_FLOOR_MARGIN  # noqa: E402
from engine.faces.embedders import embedder_spec  # noqa: E402

BLOCK = 4096
BOUNDARY = 1e-5


def floor_for(dim: int) -> float:
    for name in ("dlib", "hse"):
        spec = embedder_spec(name)
        if spec.dim == dim:
            return round(spec.group_pair_similarity - CLUSTER_FLOOR_MARGIN, 4)
    return 0.5


def descriptors(n: int, dim: int, seed: int, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, dim]`` prototypes and the ``[n]`` live mask (see the module), made in chunks to bound memory."""
    g = torch.Generator().manual_seed(seed)
    size = torch.randint(1, 10, (n // 5 + 1,), generator=g)
    who = torch.repeat_interleave(torch.arange(len(size)), size)[:n]
    who = who[torch.randperm(len(who), generator=g)]
    if len(who) < n:  # too few identities drawn: the rest are singletons
        who = torch.cat([who, torch.arange(n - len(who)) + len(size)])
    centres = torch.nn.functional.normalize(torch.randn(int(who.max()) + 1, dim, generator=g), dim=1)
    x = torch.empty((n, dim))
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        spread = 0.2 + 0.4 * torch.rand(m, 1, generator=g)
        noise = torch.randn(m, dim, generator=g) * spread / dim**0.5
        x[i : i + m] = torch.nn.functional.normalize(centres[who[i : i + m]] + noise, dim=1)
        x[i : i + m] *= 0.85 + 0.15 * torch.rand(m, 1, generator=g)
    live = torch.rand(n, generator=g) >= 0.01
    return x, live


def queries_near(x: torch.Tensor, q: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    pick = x[torch.randint(0, len(x), (q,), generator=g)]
    return torch.nn.functional.normalize(pick + 0.3 * torch.randn(pick.shape, generator=g) / x.shape[1] ** 0.5, dim=1)


def work(rows: int, starts: list[int]) -> int:
    """Dot products of the row blocks starting at ``starts`` (each against every later row)."""
    return sum(min(BLOCK, rows - i) * (rows - i) for i in starts)


def as_set(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.unique(a.astype(np.int64) * n + b.astype(np.int64))


def compare(ref: tuple, got: tuple, n: int, floor: float) -> str:
    """Same pairs away from the floor? Pairs are ``(a, b, sim)`` numpy arrays."""
    far = [np.abs(p[2] - floor) > BOUNDARY for p in (ref, got)]
    r, g = (as_set(p[0][f], p[1][f], n) for p, f in zip((ref, got), far, strict=True))
    near = int((~far[0]).sum() + (~far[1]).sum())
    rk, gk = ref[0].astype(np.int64) * n + ref[1], got[0].astype(np.int64) * n + got[1]
    common, ri, gi = np.intersect1d(rk, gk, return_indices=True)
    delta = float(np.abs(ref[2][ri] - got[2][gi]).max()) if len(common) else 0.0
    missing, extra = len(np.setdiff1d(r, g)), len(np.setdiff1d(g, r))
    same = "same pairs" if missing == extra == 0 else f"{missing} missing, {extra} extra"
    return f"{same} ({near} near floor), max|dsim| {delta:.1e}"


def range_rows(x: torch.Tensor, live: torch.Tensor, floor: float, a: argparse.Namespace) -> tuple[list, dict]:
    n = len(x)
    full = n <= a.exact_limit
    out, found = [], {}
    for method in ("torch", "faiss"):
        t0 = time.perf_counter()
        if full:
            p = index.pairs_above(x, live, floor, BLOCK, method=method)
            seconds, how = time.perf_counter() - t0, "measured"
            found[method] = tuple(v.numpy() for v in p)
        elif method == "torch":
            starts = list(range(0, a.sample_blocks * BLOCK, BLOCK))
            parts = [index.torch_row_block(x, live, floor, i, BLOCK) for i in starts]
            scale = work(n, list(range(0, n, BLOCK))) / work(n, starts)
            seconds, how = (time.perf_counter() - t0) * scale, f"extrapolated x{scale:.0f}"
            found[method] = tuple(torch.cat(v).numpy() for v in zip(*parts, strict=True))
        else:
            rows, xs = index.faiss_rows(x, live)
            starts = list(range(0, a.sample_blocks * BLOCK, BLOCK))
            parts = [index.faiss_row_block(xs, floor, i, BLOCK) for i in starts]
            scale = work(len(xs), list(range(0, len(xs), BLOCK))) / work(len(xs), starts)
            seconds, how = (time.perf_counter() - t0) * scale, f"extrapolated x{scale:.0f}"
            pa, pb, pc = (np.concatenate(v) for v in zip(*parts, strict=True))
            found[method] = (rows[pa], rows[pb], pc)
            found["sample_rows"] = int(rows[min(len(rows), a.sample_blocks * BLOCK) - 1]) + 1
        out.append([method, seconds, how, len(found[method][0])])
    ref, got = found["torch"], found["faiss"]
    bound = n if full else min(a.sample_blocks * BLOCK, found["sample_rows"])  # the rows both samples cover
    ref, got = ([v[p[0] < bound] for v in p] for p in (ref, got))
    found["exact"], found["bound"] = got, bound
    out[0].append("reference" if full else f"reference (rows < {bound})")
    out[1].append(compare(ref, got, n, floor))
    return out, found


def ivf_row(x: torch.Tensor, live: torch.Tensor, floor: float, found: dict, a: argparse.Namespace) -> list:
    """Approximate: IVF (inner product), every live track queried; recall on the exact sample's pairs."""
    faiss = index.faiss_module()
    rows, xs = index.faiss_rows(x, live)
    m, d = xs.shape
    nlist = a.nlist or int(4 * m**0.5)
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    train = np.random.default_rng(a.seed).choice(m, min(m, 40 * nlist), replace=False)
    ivf.train(xs[np.sort(train)])
    ivf.add(xs)
    ivf.nprobe = a.nprobe
    radius = float(np.nextafter(np.float32(floor), np.float32(-np.inf)))
    keys = []
    for i in range(0, m, 65536):
        lims, dist, col = ivf.range_search(xs[i : i + 65536], radius)
        row = np.repeat(np.arange(i, i + len(lims) - 1), np.diff(lims.astype(np.int64)))
        keep = (row != col) & (dist >= np.float32(floor))
        lo, hi = np.minimum(row[keep], col[keep]), np.maximum(row[keep], col[keep])
        keys.append(rows[lo] * len(x) + rows[hi])
    key = np.unique(np.concatenate(keys))
    seconds = time.perf_counter() - t0
    exact, bound = found["exact"], found["bound"]
    want = as_set(exact[0], exact[1], len(x))
    got = key[key // len(x) < bound]
    recall = len(np.intersect1d(want, got)) / max(1, len(want))
    extra = len(np.setdiff1d(got, want))
    note = f"recall {recall:.4f} on rows < {bound} ({extra} extra), nlist {nlist}, nprobe {a.nprobe}"
    return ["faiss-ivf", seconds, "measured", len(key), note]


def knn_rows(x: torch.Tensor, a: argparse.Namespace) -> list:
    q = queries_near(x, a.queries, a.seed)
    out, got = [], {}
    for method in ("torch", "faiss"):
        t0 = time.perf_counter()
        got[method] = index.knn(q, x, 5, method=method)
        out.append([method, time.perf_counter() - t0, "measured", len(q)])
    (dt, it), (df, jf) = got["torch"], got["faiss"]
    same = (it.sort(1).values == jf.sort(1).values).all(1).float().mean().item()
    out[0].append("reference")
    out[1].append(f"same neighbours {same:.4f} of queries, max|ddist| {(dt - df).abs().max().item():.1e}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--floor", type=float, help="default: the engine's for the embedder of --dim")
    ap.add_argument("--queries", type=int, default=1000, help="faces per knn (the gallery is the size)")
    ap.add_argument("--exact-limit", type=int, default=100_000, help="largest size searched in full")
    ap.add_argument("--sample-blocks", type=int, default=1, help="row blocks timed above --exact-limit")
    ap.add_argument("--ivf-from", type=int, default=1_000_000, help="size from which IVF is measured too")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 4 sqrt(n))")
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--skip-knn", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    floor = a.floor if a.floor is not None else floor_for(a.dim)
    threads = torch.get_num_threads()
    print(f"dim {a.dim}, floor {floor}, torch threads {threads}, faiss {index.faiss_module().__version__}", flush=True)
    print(f"{'job':6} {'size':>8} {'method':10} {'seconds':>9} {'how':18} {'found':>9}  agreement", flush=True)
    print("(found: pairs, in the timed row blocks where extrapolated; queries for knn)", flush=True)
    picks = []
    for n in a.sizes:
        x, live = descriptors(n, a.dim, a.seed)
        rows, found = range_rows(x, live, floor, a)
        if n >= a.ivf_from:
            rows.append(ivf_row(x, live, floor, found, a))
        jobs = [("range", r) for r in rows] + ([] if a.skip_knn else [("knn", r) for r in knn_rows(x, a)])
        for job, (method, seconds, how, count, note) in jobs:
            print(f"{job:6} {n:>8} {method:10} {seconds:9.2f} {how:18} {count:>9}  {note}", flush=True)
        cpu = torch.device("cpu")
        picks.append(
            f"{n}: range {index.range_method(int(live.sum()), cpu)}, knn {index.knn_method(a.queries, n, cpu)}"
        )
        del x, live, found
    print("auto picks (CPU): " + "; ".join(picks))


if __name__ == "__main__":
    main()
