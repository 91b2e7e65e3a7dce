"""The executor (local and Ray) on a pure function, a challenge run through `--executor local` and `--executor ray`
giving the same tables, and a run killed with SIGKILL half-way that a re-run completes to the same tables."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, db_tables, run_cli, synthetic_corpus

from engine.config import ConfigError, Settings, resolve_device
from engine.pipeline.executor import Executor, ExecutorUnavailable, LocalExecutor, get_executor
from engine.store import open_object_store

#: Short runs: a frame every 2 s, on the CPU. One torch thread everywhere, as in each Ray actor: with other thread
#: counts CPU kernels sum in another order and floats differ in their last bits (embeddings by ~1e-4, so landmarks
#: rounded to 3 decimals can flip), while every discrete result (tracks, individuals, unique faces) stays the same.
RUN_ENV = {
    "ENGINE_SAMPLE_INTERVAL": "2",
    "ENGINE_DEVICE": "cpu",
    "ENGINE_EXECUTOR": "",
    "ENGINE_RAY_ADDRESS": "",
    "OMP_NUM_THREADS": "1",
}
PARTICIPANTS = 3

# --- the executor on a pure function ----------------------------------------------------------------------------

_SETUPS = 0


def _setup(base: int) -> dict[str, Any]:
    """Counts its calls in each process: a worker that ran it twice would say so."""
    global _SETUPS
    _SETUPS += 1
    return {"pid": os.getpid(), "base": base, "setups": _SETUPS, "device": resolve_device("cuda", "worker")}


def _work(state: dict[str, Any], item: int) -> tuple[int, int, int, str, int]:
    if item == 13:
        raise ValueError(f"bad item {item}")
    return state["pid"], os.getpid(), state["setups"], state["device"], state["base"] + item * item


def _broken_setup() -> None:
    raise RuntimeError("no weights in this worker")


def _check_executor(executor: Any, items: list[int]) -> list[tuple]:
    global _SETUPS
    _SETUPS = 0  # this process's count, for the local executor
    results = list(executor.map(partial(_setup, 100), _work, items, gpu=True))
    assert sorted(r[4] for r in results) == sorted(100 + i * i for i in items)
    assert all(setup_pid == work_pid for setup_pid, work_pid, *_ in results)  # state built where the work runs
    assert {r[2] for r in results} == {1}  # setup ran once per worker
    with pytest.raises(ValueError, match="bad item 13"):  # the original type and message, from any worker
        list(executor.map(partial(_setup, 0), _work, [13]))
    with pytest.raises(RuntimeError, match="no weights in this worker"):
        list(executor.map(_broken_setup, _work, [1]))
    assert list(executor.map(_broken_setup, _work, [])) == []  # nothing to do: setup never runs
    return results


def test_unknown_executor_and_missing_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown executor 'spark': use one of local, ray"):
        get_executor("spark")
    with pytest.raises(ConfigError, match="executor must be one of local, ray"):
        Settings.load("demo", executor="spark")
    monkeypatch.setenv("ENGINE_EXECUTOR", "ray")
    monkeypatch.setenv("ENGINE_RAY_ADDRESS", "auto")
    settings = Settings.load("demo", device="cuda")  # the Ray workers, not this driver, need the GPU
    assert (settings.executor, settings.ray_address, settings.device) == ("ray", "auto", "cuda")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ExecutorUnavailable, match=r"pip install '\.\[distributed\]'"):
        get_executor("ray")


# --- a challenge through both executors, and a killed run resumed ---------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Three participants and a file that is not a video (so video_errors is compared too)."""
    out = tmp_path_factory.mktemp("corpus")
    toml = synthetic_corpus(out, n_videos=PARTICIPANTS, seed=3, n_decoys=0, shared=shared_data)
    (out / "videos" / "broken.mp4").write_text("not a video at all\n")
    return toml


def _run(corpus: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    db, store = f"sqlite:///{work / 'engine.db'}", str(work / "objects")
    return run_cli(
        "run", "-c", str(corpus), "--runtype", "prod", "--db", db, "--store", store, "-q", *extra, env=RUN_ENV
    )


@pytest.fixture(scope="module")
def uninterrupted(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one local run from start to end."""
    work = tmp_path_factory.mktemp("uninterrupted")
    res = _run(corpus, work)
    assert res.returncode == 0, res.stderr
    return work


def _tables(work: Path) -> dict[str, list[tuple]]:
    return db_tables(work)[0]


def _objects(work: Path) -> dict[str, bytes]:
    store = open_object_store(str(work / "objects"))
    return {key: store.get_bytes(key) for key in store.list()}


def _assert_same_results(got: Path, want: Path) -> None:
    a, b = _tables(got), _tables(want)
    assert a.keys() == b.keys()
    for name in b:
        assert all(len(set(rows)) == len(rows) for rows in (a[name], b[name])), f"{name}: duplicate rows"
        missing = [r for r in b[name] if r not in a[name]][:2]
        extra = [r for r in a[name] if r not in b[name]][:2]
        assert a[name] == b[name], f"{name}: {len(a[name])} rows vs {len(b[name])}; missing {missing}; extra {extra}"
    assert b["videos"] and b["faces"] and b["unique_faces"] and b["video_errors"]  # the comparison compared something
    assert _objects(got) == _objects(want)  # same keys, same bytes: nothing half-written, nothing orphaned


def _runs(work: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(work / "engine.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT id, status, settings, videos_ok FROM runs ORDER BY id")]


def _committed_videos(db_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM videos").fetchone()[0]
    except sqlite3.Error:  # not created yet, or busy
        return 0


def test_run_killed_midway_resumes_to_the_same_tables(corpus: Path, uninterrupted: Path, tmp_path: Path) -> None:
    db, store = f"sqlite:///{tmp_path / 'engine.db'}", str(tmp_path / "objects")
    args = ["run", "-c", str(corpus), "--runtype", "prod", "--db", db, "--store", store, "-q"]
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "cli.py"), *args],
            env={**os.environ, **RUN_ENV},
            cwd=REPO,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and _committed_videos(tmp_path / "engine.db") < 1:
            time.sleep(0.05)
        alive = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert alive, f"the run ended before a video was committed: {(tmp_path / 'killed.log').read_text()}"
    done = _committed_videos(tmp_path / "engine.db")
    assert 1 <= done < PARTICIPANTS, f"{done} videos committed when killed: the kill came too late to test anything"
    assert [r["status"] for r in _runs(tmp_path)] == ["running"]  # kill -9: nobody wrote its end

    res = run_cli(*args, env=RUN_ENV)
    assert res.returncode == 0, res.stderr
    assert f"{done} already stored" in res.stdout and "marked interrupted" in res.stderr, (res.stdout, res.stderr)
    runs = _runs(tmp_path)
    assert [r["status"] for r in runs] == ["interrupted", "ok"]
    assert runs[1]["videos_ok"] == PARTICIPANTS - done
    _assert_same_results(tmp_path, uninterrupted)


@pytest.fixture(scope="module")
def ray_pool() -> Iterator[Executor]:
    """A private local Ray instance with 2 CPUs, started by the executor (used last in this module)."""
    import ray

    with get_executor("ray", num_cpus=2) as pool:
        yield pool
    assert not ray.is_initialized()  # the instance the executor started is shut down by close()


def test_local_and_ray_executors_agree_on_a_pure_function(ray_pool: Executor) -> None:
    import ray

    items = list(range(10))
    local = _check_executor(LocalExecutor(), items)
    assert [r[4] for r in local] == [100 + i * i for i in items]  # in order, in this process
    assert {r[0] for r in local} == {os.getpid()} and {r[3] for r in local} == {"cuda"}  # device as requested

    remote = _check_executor(ray_pool, items)
    assert sorted(r[4] for r in remote) == sorted(r[4] for r in local)
    pids = {r[1] for r in remote}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # one actor per CPU
    assert {r[3] for r in remote} == {"cpu"}  # gpu=True on a cluster without GPUs: CPU actors, told so
    joined = get_executor("ray")  # Ray already up in this process: used, not owned
    joined.close()
    assert ray.is_initialized()


def test_ray_run_equals_local_run(corpus: Path, uninterrupted: Path, tmp_path: Path, ray_pool: Executor) -> None:
    """Through the CLI, on the running instance (--ray-address): the same tables and objects as a local run."""
    import ray

    address = ray.get_runtime_context().gcs_address
    res = _run(corpus, tmp_path, "--executor", "ray", "--ray-address", address)
    assert res.returncode == 0, res.stderr
    assert f"{PARTICIPANTS} processed" in res.stdout and "1 failed" in res.stdout, res.stdout
    assert "broken.mp4" in res.stderr  # a worker's log line reaches the driver's terminal
    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2  # the CLI left the cluster running
    (run,) = _runs(tmp_path)
    assert run["status"] == "ok" and '"executor": "ray"' in run["settings"]
    _assert_same_results(tmp_path, uninterrupted)


def test_label_and_search_on_ray_equal_local(ray_pool: Executor, ryan: Path, media_dir: Path, shared_data: Path,
                                             tmp_path: Path) -> None:  # fmt: skip
    """`label` (shards as Ray tasks) and `search` (videos as Ray tasks) give what the local executor gives."""
    import json

    from engine.apps.film import LabelSettings, label_film
    from engine.apps.search import SearchSettings, search

    quiet = lambda _m: None  # noqa: E731
    film = LabelSettings(interval=2.0)
    for name, pool in (("local", LocalExecutor()), ("ray", ray_pool)):
        label_film(ryan, tmp_path / name / "film", settings=film, shards=2, executor=pool, log=quiet)
        search(shared_data / "faces" / "lin-manuel-miranda.png", [media_dir / "plain2s.mp4", ryan],
               tmp_path / name / "search", settings=SearchSettings(interval=0.5, clips=False), executor=pool,
               log=quiet)  # fmt: skip

    def discrete(root: Path) -> dict[str, Any]:
        trajs = [json.loads(x) for x in (root / "film" / "trajectories.jsonl").read_text().splitlines()]
        metas = [json.loads((root / "search" / f).read_text()) for f in ("plain2s.json", "ryan-reynolds.json")]
        return {
            "trajectories": [[d["frame"] for d in t["detections"]] for t in trajs],
            "clusters": json.loads((root / "film" / "clusters.json").read_text())["clusters"],
            "cuts": json.loads((root / "film" / "scene_changes.json").read_text())["cuts"],
            "search": [[(c["timestamp_start"], [f["frame"] for f in c["face_clips"]]) for c in m["clips"]]
                       for m in metas],
        }  # fmt: skip

    local, ray_ = discrete(tmp_path / "local"), discrete(tmp_path / "ray")
    assert local == ray_
    assert len(local["trajectories"]) > 3 and local["search"][0]  # both found something to compare
