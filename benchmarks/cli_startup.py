"""How fast the command line answers when it has nothing heavy to do: help, a misspelled option, a wrong choice.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 5] [--command "faceengine"]

Each case runs as a user types it (a fresh process each time) and the median wall time is printed with the exit
code; the goal is under 1 s (issue 15): choices are checked when the command line is parsed and torch is imported
only by a verb that needs it. Timings are printed, never asserted (they depend on the machine's load).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = (
    ("--help", ["--help"]),
    ("--version", ["--version"]),
    ("run --help", ["run", "--help"]),
    ("misspelled option", ["run", "--challnge", "demo"]),
    ("wrong choice", ["export", "-c", "demo", "--out", "x", "--format", "parket"]),
    ("wrong device", ["search", "--reference", "p.jpg", "v.mp4", "--device", "gpu"]),
)
GOAL_S = 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--command", default=f"{sys.executable} {REPO / 'cli.py'}", help="how the CLI is started")
    a = ap.parse_args()
    base = shlex.split(a.command)
    print(f"{'case':20} {'median s':>9} {'max s':>7} {'exit':>5}  under {GOAL_S:g} s")
    for name, args in CASES:
        times, code = [], 0
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            code = subprocess.run([*base, *args], capture_output=True, cwd=REPO).returncode
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        print(f"{name:20} {median:9.3f} {max(times):7.3f} {code:5d}  {'yes' if median < GOAL_S else 'NO'}")


if __name__ == "__main__":
    main()
