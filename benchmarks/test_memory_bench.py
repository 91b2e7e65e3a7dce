"""Peak memory of a streaming run does not grow with the number of videos (`make bench`; not part of `make test`).

The streaming pipeline bounds what it holds by queue depths (decode chunks ahead, videos waiting to be stored), not
by the number of videos, so a run over 40 videos should peak where a run over 4 does. This runs `cli.py run` (the
default: streaming, this process) in a fresh subprocess on synthetic corpora of 4 and 40 videos
(`benchmarks/make_corpus.py`), each into a fresh SQLite database and object store, and reads each child's own peak
RSS from the kernel (``os.wait4``). A memory bound, not a timing: the assert holds on any machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ENGINE_SHARED_DATA") or REPO.parent / "shared" / "data")
#: Largest allowed ratio of the 40-video peak to the 4-video peak.
MAX_RATIO = 1.10


def _peak_rss_mib(args: list[str], log: Path) -> tuple[float, float]:
    """Run ``python cli.py ARGS`` to its end; (its own peak RSS in MiB, wall seconds). Output goes to ``log``."""
    env = {**os.environ}
    if "ENGINE_WEIGHTS_MIRROR" not in env and (REPO.parent / "shared" / "weights").is_dir():
        env["ENGINE_WEIGHTS_MIRROR"] = str(REPO.parent / "shared" / "weights")
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        cmd = [sys.executable, str(REPO / "cli.py"), *args]
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage alone, not the maximum over all children
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, log.read_text()[-3000:]
    return usage.ru_maxrss / 1024, seconds  # Linux reports KiB


def _cpu() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.machine())


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_the_number_of_videos(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from make_corpus import build_corpus

    peaks: dict[int, float] = {}
    lines = []
    for n in (4, 40):
        toml = build_corpus(tmp_path / f"corpus{n}", n_videos=n, seed=0, n_decoys=0, shared=SHARED, name=f"mem{n}")
        work = tmp_path / f"run{n}"
        args = ["run", "-c", str(toml), "--runtype", "prod", "--device", "cpu", "-q"]
        args += ["--db", f"sqlite:///{work / 'engine.db'}", "--store", str(work / "objects")]
        peaks[n], seconds = _peak_rss_mib(args, tmp_path / f"run{n}.log")
        said = [ln for ln in (tmp_path / f"run{n}.log").read_text().splitlines() if ln.startswith("videos:")]
        lines.append(f"{n:>2} videos: peak RSS {peaks[n]:.0f} MiB, {seconds:.0f} s wall; {said[0] if said else ''}")
    ratio = peaks[40] / peaks[4]
    print(f"\n[memory] {_cpu()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
    for line in lines:
        print(f"[memory] {line}")
    print(f"[memory] peak RSS 40 / 4 videos = {ratio:.3f} (bound {MAX_RATIO})")
    assert ratio <= MAX_RATIO, f"peak RSS grows with the number of videos: {peaks[4]:.0f} → {peaks[40]:.0f} MiB"
