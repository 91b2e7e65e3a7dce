"""The same-results check's comparison (``benchmarks/run_dump.py``): exact on one CPU kind, float-tolerant across
kinds only where a table's rows and shape (every non-float value) are the same."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from run_dump import _masked, _plain, compare  # noqa: E402


def _digest(cpu: str, faces_sha: str, faces_shape: str = "s1", rows: int = 3) -> dict[str, object]:
    return {
        "cpu": cpu,
        "table faces": {"rows": rows, "sha256": faces_sha, "shape": faces_shape},
        "table videos": {"rows": 1, "sha256": "v", "shape": "vs"},
    }


def test_floats_mask_but_integers_and_text_stay() -> None:
    row = (("x1", 1.25), ("frame_index", 7), ("crop_key", "faces/a.jpg"), ("embedding", np.ones(4, np.float32)))
    assert _masked(tuple(row)) == (("x1", "<f>"), ("frame_index", 7), ("crop_key", "faces/a.jpg"), ("embedding", "<f>"))
    assert _masked(np.arange(3)) is not None and not isinstance(_masked(np.arange(3)), str)  # integer arrays stay
    # As the dump holds them: a stored descriptor becomes bytes, still masked, and equal to the plain bytes.
    plain = _plain(np.ones(4, np.float32))
    assert plain == np.ones(4, np.float32).tobytes() and _masked(plain) == "<f>"
    assert _masked(_plain(np.arange(3))) == np.arange(3).tobytes()


def test_same_cpu_kind_must_be_identical() -> None:
    differences, float_only = compare(_digest("amd avx2", "a"), _digest("amd avx2", "b"))
    assert len(differences) == 1 and differences[0].startswith("table faces") and float_only == []
    assert compare(_digest("amd avx2", "a"), _digest("amd avx2", "a")) == ([], [])


def test_other_cpu_kind_tolerates_floats_only() -> None:
    differences, float_only = compare(_digest("amd avx2", "a"), _digest("intel avx512f", "b"))
    assert differences == [] and len(float_only) == 1
    # Another shape (a face more or less, another individual) or another row count is a difference on any CPU.
    differences, _ = compare(_digest("amd avx2", "a"), _digest("intel avx512f", "b", faces_shape="s2"))
    assert len(differences) == 1
    differences, _ = compare(_digest("amd avx2", "a", rows=3), _digest("intel avx512f", "b", rows=4))
    assert len(differences) == 1


def test_reference_without_shapes_compares_exactly() -> None:
    old = {"table faces": {"rows": 3, "sha256": "a"}, "table videos": {"rows": 1, "sha256": "v"}}
    differences, float_only = compare(old, _digest("intel avx512f", "b"))
    assert float_only == [] and [d.split(":")[0] for d in differences] == ["table faces"]  # videos: same sha256
