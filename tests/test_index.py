"""engine.index: FAISS and the blocked torch loop find the same pairs and neighbours; the size switch; no FAISS."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from engine import index
from engine.apps.people import People, knn_vote
from engine.cluster import similar_pairs

pytest.importorskip("faiss")

BOUNDARY = 1e-5  # float rounding (MKL in torch, OpenBLAS in FAISS) may put a pair this close to the floor either side


def clustered(n: int, dim: int, seed: int) -> torch.Tensor:
    """Track prototypes: identities of about four rows, noisy, unit-normalised then shortened (weighted means)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n // 4 + 1, dim, generator=g), dim=1)
    who = torch.randint(0, len(centres), (n,), generator=g)
    x = torch.nn.functional.normalize(centres[who] + 0.4 * torch.randn(n, dim, generator=g) / dim**0.5, dim=1)
    return x * (0.85 + 0.15 * torch.rand(n, 1, generator=g))


def pair_set(p: tuple, floor: float) -> set[tuple[int, int]]:
    a, b, c = (v.tolist() for v in p)
    return {(x, y) for x, y, s in zip(a, b, c, strict=True) if abs(s - floor) > BOUNDARY}


@pytest.fixture
def fresh_faiss():
    index.faiss_module.cache_clear()
    yield
    index.faiss_module.cache_clear()


@pytest.mark.parametrize(("dim", "floor", "block"), [(128, 0.78, 4096), (128, 0.78, 300), (64, 0.45, 512)])
def test_faiss_range_equals_torch(dim: int, floor: float, block: int) -> None:
    x = clustered(1500, dim, seed=dim + block)
    live = torch.rand(len(x), generator=torch.Generator().manual_seed(1)) > 0.05
    t = index.pairs_above(x, live, floor, block, method="torch")
    f = index.pairs_above(x, live, floor, block, method="faiss")
    assert len(t[0]) > 500
    assert pair_set(t, floor) == pair_set(f, floor)
    assert not set(f[0].tolist()) - set(live.nonzero().flatten().tolist())
    assert bool((f[0] < f[1]).all())
    if len(t[0]) == len(f[0]):  # no pair at the floor went the other way: then the order is the torch loop's too
        assert torch.equal(t[0], f[0]) and torch.equal(t[1], f[1])
        assert torch.allclose(t[2], f[2], atol=BOUNDARY, rtol=0)


def test_range_empty_and_dead() -> None:
    x = clustered(50, 16, seed=3)
    for method in ("torch", "faiss"):
        a, b, c = index.pairs_above(x, torch.zeros(50, dtype=torch.bool), 0.3, method=method)
        assert len(a) == len(b) == len(c) == 0 and a.dtype == torch.long
        a, b, c = index.pairs_above(x[:0], torch.zeros(0, dtype=torch.bool), 0.3, method=method)
        assert len(a) == 0


def test_similar_pairs_switches_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    sums = clustered(900, 32, seed=5) * 3.0
    mass = torch.full((900,), 3.0)
    mass[::17] = 0.0
    calls = {"torch": 0, "faiss": 0}
    for name, key in (("torch_row_block", "torch"), ("faiss_row_block", "faiss")):
        real = getattr(index, name)
        monkeypatch.setattr(index, name, lambda *a, _r=real, _k=key: calls.__setitem__(_k, calls[_k] + 1) or _r(*a))
    small = similar_pairs(sums, mass, 0.6, block=256)
    assert calls == {"torch": 4, "faiss": 0}
    monkeypatch.setattr(index, "FAISS_MIN_ROWS", 800)
    large = similar_pairs(sums, mass, 0.6, block=256)
    assert calls["faiss"] == 4 and calls["torch"] == 4
    assert pair_set((small.a, small.b, small.cosine), 0.6) == pair_set((large.a, large.b, large.cosine), 0.6)


def test_method_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert index.range_method(index.FAISS_MIN_ROWS - 1, cpu) == "torch"
    assert index.range_method(index.FAISS_MIN_ROWS, cpu) == "faiss"
    assert index.range_method(10**6, cuda) == "torch"  # FAISS has no GPU range search: torch on the GPU
    assert index.knn_method(1000, 1000, cpu) == "torch"
    assert index.knn_method(1000, index.FAISS_MIN_KNN_WORK // 1000, cpu) == "faiss"
    assert index.knn_method(5, index.FAISS_FEW_QUERIES_BASE, cpu) == "faiss"
    assert index.knn_method(5, index.FAISS_FEW_QUERIES_BASE - 1, cpu) == "torch"
    monkeypatch.setattr(index, "_faiss_gpus", lambda: 0)
    assert index.knn_method(10**4, 10**6, cuda) == "torch"
    monkeypatch.setattr(index, "_faiss_gpus", lambda: 1)
    assert index.knn_method(10, 10, cuda) == "faiss-gpu"


def test_faiss_knn_equals_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    base = clustered(3000, 128, seed=7)
    queries = clustered(400, 128, seed=8)
    dt, it = index.knn(queries, base, 5, method="torch")
    df, jf = index.knn(queries, base, 5, method="faiss")
    assert dt.shape == (400, 5) and jf.dtype == torch.long
    assert torch.equal(it, jf)
    assert torch.allclose(dt, df, atol=1e-4, rtol=0)
    monkeypatch.setattr(index, "KNN_BLOCK_ELEMENTS", 3000 * 64)  # the torch loop in blocks of 64 queries
    db, ib = index.knn(queries, base, 5, method="torch")
    assert torch.equal(ib, it) and torch.allclose(db, dt, atol=1e-5, rtol=0)
    dk, ik = index.knn(queries[:3], base[:4], 10, method="faiss")  # k is at most the base's rows
    assert ik.shape == (3, 4)


def test_knn_vote_same_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    gallery = clustered(600, 128, seed=9)
    people = People([f"p{i % 150}" for i in range(600)], [f"{i}.jpg" for i in range(600)], gallery)
    faces = gallery[:40] + 0.01 * torch.randn(40, 128, generator=torch.Generator().manual_seed(2))
    before = knn_vote(faces, people, k=5, top=3)
    monkeypatch.setattr(index, "FAISS_MIN_KNN_WORK", 1)
    after = knn_vote(faces, people, k=5, top=3)
    assert [(v["name"], v["votes"]) for v in before] == [(v["name"], v["votes"]) for v in after]
    for x, y in zip(before, after, strict=True):
        assert x["probability"] == pytest.approx(y["probability"], abs=1e-3)


def test_without_faiss_torch_is_used_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_faiss: None
) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    monkeypatch.setattr(index, "FAISS_MIN_ROWS", 1)
    monkeypatch.setattr(index, "FAISS_MIN_KNN_WORK", 1)
    x = clustered(200, 32, seed=11)
    with caplog.at_level(logging.INFO, logger="engine.index"):
        assert index.range_method(10**6, torch.device("cpu")) == "torch"
        assert index.knn_method(10**4, 10**6, torch.device("cpu")) == "torch"
        a, _b, _c = index.pairs_above(x, torch.ones(200, dtype=torch.bool), 0.5)
        d, i = index.knn(x[:10], x, 3)
    assert len(a) > 0 and torch.equal(i[:, 0], torch.arange(10))
    assert sum("faiss is not installed" in r.getMessage() for r in caplog.records) == 1
