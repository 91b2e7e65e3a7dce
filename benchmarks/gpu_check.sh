#!/usr/bin/env bash
# The GPU check of issue 17, one prepared command for a lent GPU machine (docs/performance.md, "The GPU check"):
# the card and versions, the CUDA-only tests, the detector and both embedders on CUDA fp32/fp16 against the CPU,
# each Triton kernel against plain torch, torch.compile on/off, and `bench --end-to-end` on CUDA; every figure to
# $OUT/gpu_check.json and $OUT/gpu_check.txt (printed last). Steps are guarded: one that fails is reported and the
# next runs; the whole check keeps inside its budget (450 s by default, --budget S).
#
#   here, once, with network:  .venv/bin/python benchmarks/gpu_pack.py        (builds runs/gpu-carry, ~59 MiB)
#   on the device (run tool):  bash benchmarks/gpu_check.sh                   (carry: ["runs/gpu-carry"])
#   on any CPU (CI):           bash benchmarks/gpu_check.sh --dry-run         (the same steps, tiny, CUDA ones skipped)
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
CARRY=${GPU_CARRY:-$REPO/runs/gpu-carry}
OUT=${OUT:-$REPO/runs/gpu-check}
mkdir -p "$OUT"
DRY=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && DRY=1; done
if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=${PYTHON:-python3}; fi

# What the device image lacks, from the carried folder (no network there); nothing is installed on a dry run.
if [ "$DRY" = 0 ] && compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site \
      "$CARRY"/wheels/*.whl >"$OUT/install.log" 2>&1; then
    export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "installing the carried wheels failed (see install.log); going on without them"
  fi
fi
if [ "$DRY" = 0 ] && [ -f "$CARRY/ffmpeg-libs.tar.xz" ]; then
  mkdir -p /tmp/gpu-check-ffmpeg && tar -xJf "$CARRY/ffmpeg-libs.tar.xz" -C /tmp/gpu-check-ffmpeg \
    && export LD_LIBRARY_PATH=/tmp/gpu-check-ffmpeg${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
[ -d "$CARRY/weights" ] && export ENGINE_WEIGHTS_MIRROR=$CARRY/weights
[ -d "$CARRY/data" ] && export ENGINE_SHARED_DATA=$CARRY/data
if [ -z "${ENGINE_WEIGHTS_MIRROR:-}" ] && [ -d "$REPO/../shared/weights" ]; then
  export ENGINE_WEIGHTS_MIRROR=$REPO/../shared/weights
fi
if [ -z "${ENGINE_SHARED_DATA:-}" ] && [ -d "$REPO/../shared/data" ]; then
  export ENGINE_SHARED_DATA=$REPO/../shared/data
fi
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py --out "$OUT" --carry "$CARRY" "$@"
