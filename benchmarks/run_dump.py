"""Dump a run's tables and objects in a canonical form, and compare two dumps: the check that a change of code
layout changed no result.

A dump holds every table but ``runs`` as rows without volatile columns (ids, run ids, timestamps), frame and face ids
replaced by their natural keys, and every stored object as its key and sha256. ``digest`` reduces it to one sha256 per
table and per object list, small enough to commit (``benchmarks/demo_run_digest.json``: first made from the code
before the layout change of issue 12, made again after issue 13 changed the identity results by design, and
whenever a change meant to change results landed: the Makefile's ``same-results`` comment lists each).

The models' floats depend on the CPU's instruction set (the same pixels give other last bits with AVX-512 than with
AVX2), so a digest also records the CPU kind it was made on and each table's *shape*: its rows with every float
masked (which faces, tracks, pairs and individuals exist, and every integer and text column), and each object
list's keys. On the CPU kind of the reference everything must be identical; on another kind, an entry whose
sha256 differs but whose shape is the same is reported as a float-only difference and does not fail the check.

Usage:
    python benchmarks/run_dump.py demo OUT_DIR            # builds the demo corpus, runs it, writes OUT_DIR/digest.json
    python benchmarks/run_dump.py compare A.json B.json   # exits 1 and names every table/object that differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Collection, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Columns that differ between equal runs by design: autoincrement ids, run ids and timestamps.
VOLATILE = {"id", "run_id", "created_at", "ingested_at"}


class _FloatBytes(bytes):
    """The bytes of a float array (a descriptor): compares and prints as plain bytes, but :func:`_masked` knows it
    holds floats."""


def _plain(value: object) -> object:
    import numpy as np

    if isinstance(value, np.ndarray):
        return _FloatBytes(value.tobytes()) if value.dtype.kind == "f" else value.tobytes()
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    return value


def _masked(value: object) -> object:
    """``value`` with every float (and float array) replaced by ``"<f>"``: what stays the same across CPU kinds."""
    import numpy as np

    if isinstance(value, float | np.floating | _FloatBytes) or (
        isinstance(value, np.ndarray) and value.dtype.kind == "f"
    ):
        return "<f>"
    if isinstance(value, tuple):
        return tuple(_masked(v) for v in value)
    return value


def cpu_kind() -> str:
    """The CPU kind a digest's floats belong to: architecture, model name and the widest x86 vector extension."""
    import platform

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    vector = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "no-avx" if flags else "unknown")
    model = info.get("model name") or platform.processor() or "unknown model"
    return f"{platform.machine()} {model} {vector}"


def db_tables(
    work: Path | str, apart: Mapping[str, Collection[str]] | None = None
) -> tuple[dict[str, list[tuple]], dict[tuple, object]]:
    """A run's tables (``work/engine.db``, or any database URL ``work``) for comparing runs: every table but
    ``runs`` as sorted rows without volatile columns, frame and face ids replaced by their natural keys ((video,
    frame index), (video, frame index, face index)), which do not depend on insert order. Columns named in
    ``apart`` (per table) are left out of the rows and returned separately, by (table, natural key, column), for
    comparisons within a tolerance."""
    from sqlalchemy import create_engine, select

    from engine.store.schema import ALL_MODELS, Face, Frame, Run

    apart = apart or {}
    engine = create_engine(work if isinstance(work, str) else f"sqlite:///{work / 'engine.db'}")
    exact: dict[str, list[tuple]] = {}
    loose: dict[tuple, object] = {}
    with engine.connect() as conn:
        frames = {r.id: (r.video_sha256, r.frame_index) for r in conn.execute(select(Frame.__table__))}
        faces = {r.id: (*frames[r.frame_id], r.face_index) for r in conn.execute(select(Face.__table__))}
        natural = {"frame_id": frames, "face_id": faces}
        for model in ALL_MODELS:
            if model is Run:
                continue
            table = model.__table__
            aside = apart.get(table.name, ())
            rows = []
            for r in conn.execute(select(table)):
                m = r._mapping
                row = tuple(
                    (c.name, natural[c.name][m[c]] if c.name in natural else _plain(m[c]))
                    for c in table.columns
                    if c.name not in VOLATILE and c.name not in aside
                )
                rows.append(row)
                key = (*frames[m["frame_id"]], m["face_index"]) if model is Face else row
                loose.update({(table.name, key, column): m[column] for column in aside})
            exact[table.name] = sorted(rows, key=repr)
    engine.dispose()
    return exact, loose


def object_hashes(objects: Path) -> dict[str, str]:
    """Every file under a local object store, by key, as its sha256."""
    return {
        p.relative_to(objects).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(objects.rglob("*"))
        if p.is_file()
    }


def digest(work: Path, root: Path | None = None) -> dict[str, object]:
    """One sha256 (and a row count) per table, one per object prefix, over a run's work folder. ``root`` (where
    the corpus was built) is written as ``<root>`` in the rows, so that runs from different folders compare."""
    tables, _ = db_tables(work)
    out: dict[str, object] = {"cpu": cpu_kind()}

    def sha(text: str) -> str:
        text = text if root is None else text.replace(str(root), "<root>")
        return hashlib.sha256(text.encode()).hexdigest()

    for name, rows in tables.items():
        shape = sorted((tuple((c, _masked(v)) for c, v in row) for row in rows), key=repr)
        out[f"table {name}"] = {"rows": len(rows), "sha256": sha(repr(rows)), "shape": sha(repr(shape))}
    objects = object_hashes(work / "objects")
    prefixes = sorted({key.split("/", 1)[0] for key in objects})
    for prefix in prefixes:
        mine = {k: v for k, v in objects.items() if k.split("/", 1)[0] == prefix}
        blob = json.dumps(mine, sort_keys=True)
        out[f"objects {prefix}"] = {"files": len(mine), "sha256": sha(blob), "shape": sha(json.dumps(sorted(mine)))}
    return out


def run_demo(out: Path) -> Path:
    """Build the demo corpus under ``out`` (as ``make run`` does) and run every stage on it, on the CPU."""
    out = out.resolve()
    corpus = out / "corpus"
    env = {**os.environ, "ENGINE_RUNS_DIR": str(out / "runs")}
    if not (corpus / "challenge.toml").exists():
        subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "make_corpus.py"),
                str(corpus),
                "--name",
                "demo_corpus",
                "--logo-auto",
            ],
            check=True,
            env=env,
        )
    subprocess.run(
        [
            sys.executable,
            str(REPO / "cli.py"),
            "run",
            "--challenge",
            str(corpus / "challenge.toml"),
            "--runtype",
            "prod",
            "--device",
            "cpu",
        ],
        check=True,
        env=env,
        cwd=REPO,
    )
    return out / "runs" / "demo_corpus"


def _same(x: object, y: object, *fields: str) -> bool:
    """Two digest entries agree on ``fields`` (a field neither has counts as agreeing)."""
    return isinstance(x, dict) and isinstance(y, dict) and all(x.get(f) == y.get(f) for f in fields)


def compare(a: Mapping[str, object], b: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """``(differences, float_only)``: the entries where two digests differ, one line each, and, when they were made
    on different CPU kinds, the entries that differ only in their floats (same rows and shape), which are expected
    there and not differences."""
    other_cpu = a.get("cpu") != b.get("cpu")
    differences, float_only = [], []
    for key in sorted((set(a) | set(b)) - {"cpu"}):
        x, y = a.get(key), b.get(key)
        if x == y or _same(x, y, "rows", "files", "sha256"):
            continue  # a digest from before shapes were recorded compares on what it has
        same_shape = isinstance(x, dict) and "shape" in x and _same(x, y, "shape", "rows", "files")
        (float_only if other_cpu and same_shape else differences).append(f"{key}: {x} != {y}")
    return differences, float_only


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    demo = sub.add_parser("demo", help="build and run the demo corpus, write OUT/digest.json")
    demo.add_argument("out", type=Path)
    demo.add_argument("--against", type=Path, help="a digest to compare with (exit 1 when they differ)")
    cmp_ = sub.add_parser("compare", help="compare two digests")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.verb == "demo":
        work = run_demo(args.out)
        result = digest(work, args.out.resolve())
        (args.out / "digest.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"digest written to {args.out / 'digest.json'}")
        if args.against is None:
            return 0
        reference = json.loads(args.against.read_text())
    else:
        result, reference = json.loads(args.a.read_text()), json.loads(args.b.read_text())
    differences, float_only = compare(reference, result)
    for line in differences:
        print("differs  " + line)
    if float_only:
        print(f"reference made on: {reference.get('cpu', 'an unrecorded CPU kind')}")
        print(f"this run made on:  {result.get('cpu')}")
        for line in float_only:
            print(f"floats   {line.split(':')[0]}: same rows (files) and shape, other bytes (another CPU kind)")
    if differences:
        print(f"{len(differences)} difference(s)")
    else:
        print("identical" if not float_only else "identical but for the floats of another CPU kind")
    return 1 if differences else 0


if __name__ == "__main__":
    raise SystemExit(main())
