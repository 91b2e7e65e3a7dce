"""The GPU check (issue 17), run by ``benchmarks/gpu_check.sh``: every figure a lent GPU should give, in one command.

Steps, each guarded (a failure is recorded and the next step runs) and each skipped when the time budget left is
too short for it, so one command ends well inside the device tool's 10 minutes:

1. ``facts``: the card (``nvidia-smi``), torch, CUDA, cuDNN, Triton, CuPy, ONNX Runtime, torchcodec and FFmpeg;
2. ``cuda_tests``: the tests that skip without CUDA (``-k cuda`` in the four files that have them), as JUnit counts;
3. ``models``: the detector per frame (720x1280 frames, long side 640; batches 64 and 256 on CUDA) and both
   embedders per face (HSE, dlib: alignment + network), on CUDA in fp32 and fp16 and on the CPU in fp32, in this run;
4. ``kernels``: each Triton kernel (detector preprocessing, PHash) against its plain-torch reference: time, equality;
5. ``compile``: the detector eager against ``torch.compile(mode="reduce-overhead")`` (``ENGINE_COMPILE=1``'s path);
6. ``end_to_end``: ``bench --end-to-end`` (``engine.tools.bench``) on the run's device, on a corpus of distinct
   videos made from the carried clips (each copy gets its own MP4 ``free`` box, so its hash differs and nothing is
   skipped as already stored): decode-only bound, detector passes, the naive peer and the whole run's figures.

Every figure goes to ``OUT/gpu_check.json`` (rewritten after each step, so a run cut short keeps what it measured)
and a readable ``OUT/gpu_check.txt``, also printed last. ``--dry-run`` runs the same steps on the CPU with tiny
sizes (what CI checks); the CUDA-only steps then say why they did not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

CUDA_TEST_FILES = ("tests/test_kernels.py", "tests/test_dedup.py", "tests/test_quality.py", "tests/test_shots.py")
#: Sizes: (detector batches on CUDA, on the CPU; faces per embedder call; timed repeats; end-to-end videos).
FULL = {"gpu_batches": (64, 256), "cpu_batch": 16, "faces": 256, "cpu_faces": 32, "reps": 10, "videos": 200,
        "interval": 0.5}  # fmt: skip
DRY = {"gpu_batches": (), "cpu_batch": 2, "faces": 8, "cpu_faces": 8, "reps": 2, "videos": 2, "interval": 1.0}


class Check:
    """The steps' results and failures, the budget, and the files they are written to."""

    def __init__(self, out: Path, budget: float, dry: bool, carry: Path) -> None:
        self.out, self.budget, self.dry, self.carry = out, budget, dry, carry
        self.t0 = time.perf_counter()
        self.results: dict[str, Any] = {"dry_run": dry}
        self.failures: dict[str, str] = {}
        self.size = DRY if dry else FULL
        self.cuda = torch.cuda.is_available() and not dry
        self.device = "cuda" if self.cuda else "cpu"

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def step(self, name: str, fn: Callable[[Check], dict[str, Any]], needs_s: float) -> None:
        """Run one step unless less than ``needs_s`` seconds are left; never raises."""
        if self.left() < needs_s:
            self.results[name] = {"skipped": f"{self.left():.0f}s of the budget left, the step needs ~{needs_s:.0f}s"}
            return
        t = time.perf_counter()
        print(f"== {name} ({self.left():.0f}s left)", flush=True)
        try:
            self.results[name] = fn(self)
        except Exception as exc:  # noqa: BLE001 - a failed step is a figure too; the next steps still run
            self.failures[name] = f"{type(exc).__name__}: {exc}"
            self.results[name] = {"failed": self.failures[name]}
            traceback.print_exc()
        self.results[name]["step_s"] = round(time.perf_counter() - t, 1)
        self.save()

    def save(self) -> None:
        self.results["failures"] = self.failures
        self.results["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1, default=str) + "\n")


def timed_ms(fn: Callable[[], object], device: str, reps: int, warmup: int = 2) -> float:
    """Median milliseconds of ``fn()`` over ``reps`` calls after ``warmup`` untimed ones (synchronised on CUDA, so
    queued kernels are counted)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(1000.0 * (time.perf_counter() - t))
    return statistics.median(times)


def version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def facts(check: Check) -> dict[str, Any]:
    out: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "cpu_count": os.cpu_count()}
    out["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out |= {"device_name": p.name, "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                "memory_gib": round(p.total_memory / 2**30, 1), "torch_cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    if shutil.which("nvidia-smi"):
        query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,temperature.gpu"
        cmd = ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"]
        out["nvidia_smi"] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    for pkg in ("triton", "cupy-cuda13x", "onnxruntime", "torchvision", "torchaudio", "torchcodec", "sqlalchemy"):
        out[pkg] = version(pkg)
    out["ffmpeg_program"] = shutil.which("ffmpeg")
    try:
        from engine.media.streams import codecs_load

        out["torchcodec_problem"] = codecs_load()  # None: torchcodec and FFmpeg's libraries load
        import torchcodec._core.ops as ops

        out["ffmpeg_libraries"] = ops.get_ffmpeg_library_versions()
    except Exception as exc:  # noqa: BLE001 - the later steps say what this costs
        out["torchcodec_error"] = f"{type(exc).__name__}: {exc}"
    return out


def cuda_tests(check: Check) -> dict[str, Any]:
    """The tests that need CUDA, by JUnit XML: counts and the failures' names (on a CPU they all skip)."""
    xml = check.out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-k", "cuda", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", f"--junitxml={xml}", *CUDA_TEST_FILES]  # fmt: skip
    limit = max(30.0, min(180.0, check.left() - 200))
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=limit)
        log, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        log, code = f"{exc.stdout or ''}\nstopped after {limit:.0f}s", "timeout"
    (check.out / "cuda_tests.log").write_text(str(log))
    counts: dict[str, Any] = {"exit": code}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts |= {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors")}
        counts["skips"] = int(suite.get("skipped", 0))
        counts["not_passed"] = [
            f"{case.get('classname')}::{case.get('name')}: {child.tag}"
            for case in suite.iter("testcase")
            for child in case
            if child.tag in ("failure", "error")
        ]
    return counts


def sample_frames(check: Check, n: int) -> tuple[torch.Tensor, str]:
    """Up to ``n`` decoded 720x1280 frames of the carried clips (engine.media), else seeded noise (said so)."""
    clips = carried_clips(check) or shared_clips()
    try:
        from engine import media

        got: list[torch.Tensor] = []
        for clip in clips:
            for batch in media.sample_frames(clip, 0.5):
                got.append(batch.frames)
                if sum(len(f) for f in got) >= n:
                    break
            if sum(len(f) for f in got) >= n or got[0].shape[-2:] != batch.frames.shape[-2:]:
                break
        frames = torch.cat([f for f in got if f.shape[-2:] == got[0].shape[-2:]])[:n]
        return frames, f"decoded from {len(clips)} clips, {tuple(frames.shape[-2:])}"
    except Exception as exc:  # noqa: BLE001 - timing the networks does not need real pictures
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, 3, 1280, 720), dtype=torch.uint8, generator=g), f"seeded noise ({exc})"


def carried_clips(check: Check) -> list[Path]:
    """The vertical 720x1280 clips ``benchmarks/gpu_pack.py`` carries (none on a machine that has no carry)."""
    return sorted((check.carry / "corpus" / "videos").glob("*.mp4"))


def shared_clips() -> list[Path]:
    """The shared test clips, shortest first (the dry run's corpus where nothing is carried)."""
    folder = Path(os.environ.get("ENGINE_SHARED_DATA") or REPO.parent / "shared" / "data") / "videos"
    return sorted(folder.glob("*.mp4"), key=lambda p: p.stat().st_size)


def load_embedder(name: str, device: str, precision: str, check: Check) -> Any:
    """The engine's embedder; dlib from the carried fp16 module where its own file is not there (device machine)."""
    from engine.faces.embedders import load_embedder as load
    from engine.inference.weights import WeightError

    try:
        return load(name, device, precision)
    except WeightError:
        if name != "dlib" or not (check.carry / "weights" / "dlib_resnet_fp16.pt").is_file():
            raise
    from engine.faces.embed import FaceEmbedder
    from engine.inference.precision import resolve_precision

    emb = object.__new__(FaceEmbedder)  # FaceEmbedder.__init__ without dlib's file: the same fields
    emb.device = torch.device(device)
    emb.dtype = resolve_precision(precision, emb.device)
    model = torch.load(check.carry / "weights" / "dlib_resnet_fp16.pt", weights_only=False, map_location=device)
    mean = model.mean.float()
    emb.model = model.to(emb.dtype)
    emb.model.mean = mean
    emb.backend, emb._net = "torch (weights carried in fp16)", emb.model
    return emb


def models(check: Check) -> dict[str, Any]:
    """Detector ms per frame and embedders ms per face, CUDA fp32/fp16 and CPU fp32, the same frames."""
    from engine.faces.detect import FaceDetector
    from engine.inference.weights import resolve

    size = check.size
    frames, source = sample_frames(check, max(size["gpu_batches"] or (size["cpu_batch"],)))
    scale = min(1.0, 640 / max(frames.shape[-2:]))
    cpu_detector = FaceDetector(resolve("retinaface_mnet025"), "cpu", "fp32")
    det = cpu_detector.detect(frames[: size["cpu_batch"]], scale)
    out: dict[str, Any] = {"frames": source, "faces_in_sample": len(det), "rows": []}
    if len(det) == 0:
        raise RuntimeError("no face in the sample frames: nothing to embed")
    reps = size["faces"] // len(det) + 1
    idx = torch.arange(len(det)).repeat(reps)[: size["faces"]]
    faces = det.select(idx)
    runs = [("cuda", "fp32"), ("cuda", "fp16"), ("cpu", "fp32")] if check.cuda else [("cpu", "fp32")]
    for device, precision in runs:
        detector = cpu_detector if device == "cpu" else FaceDetector(resolve("retinaface_mnet025"), device, precision)
        out["rows"] += _one_device(check, detector, device, precision, frames, faces, scale)
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def _one_device(check: Check, detector: Any, device: str, precision: str, frames: torch.Tensor, faces: Any,
                scale: float) -> list[dict[str, Any]]:  # fmt: skip
    """The detector per frame at each batch, then each embedder per face, on one device in one precision."""
    size, rows = check.size, []
    for batch in size["gpu_batches"] if device == "cuda" else (size["cpu_batch"],):
        x = frames[torch.arange(batch) % len(frames)].to(device)
        ms = timed_ms(lambda x=x: detector.detect(x, scale), device, size["reps"])
        rows.append({"what": "detector", "device": device, "precision": precision, "batch": batch,
                     "backend": detector.backend, "ms_per_frame": round(ms / batch, 4)})  # fmt: skip
    fr, fa = frames[: size["cpu_batch"]].to(device), faces.to(device)
    if device == "cpu":  # fewer faces on the CPU: its ms per face does not depend on the batch beyond a few
        fa = fa.select(torch.arange(min(len(fa), size["cpu_faces"]), device=device))
    for name in ("hse", "dlib"):
        try:
            emb = load_embedder(name, device, precision, check)
        except Exception as exc:  # noqa: BLE001 - one embedder missing leaves the other's figures
            rows.append({"what": f"embedder {name}", "device": device, "failed": str(exc)})
            continue
        ms = timed_ms(lambda emb=emb: emb.embed(fr, fa), device, size["reps"])
        rows.append({"what": f"embedder {name}", "device": device, "precision": precision, "batch": len(fa),
                     "backend": emb.backend, "ms_per_face": round(ms / len(fa), 4)})  # fmt: skip
    return rows


def kernels(check: Check) -> dict[str, Any]:
    """Each Triton kernel against its plain-torch reference on CUDA: median ms and whether outputs are equal."""
    if not check.cuda:
        return {"skipped": "no CUDA device (or --dry-run)"}
    from engine.faces.preprocess import preprocess_torch
    from engine.phash import phash_torch
    from kernels import phash as kphash
    from kernels import preprocess as kpre

    frames, _ = sample_frames(check, 64)
    x = frames[torch.arange(64) % len(frames)].cuda()
    g = torch.Generator().manual_seed(0)
    chips = torch.randint(0, 256, (256, 3, 150, 150), dtype=torch.uint8, generator=g).cuda()
    rows = []
    for name, ours, ref in (
        ("preprocess 64x720x1280 -> fp16", lambda: kpre.preprocess(x, 0.5, torch.float16),
         lambda: preprocess_torch(x, 0.5, torch.float16)),
        ("phash 256 chips 150x150", lambda: kphash.phash(chips), lambda: phash_torch(chips)),
    ):  # fmt: skip
        a, b = ours(), ref()
        equal = bool(torch.equal(a.float().contiguous(), b.float().contiguous()))
        t_ours, t_ref = timed_ms(ours, "cuda", 20), timed_ms(ref, "cuda", 20)
        rows.append({"kernel": name, "triton_ms": round(t_ours, 4), "torch_ms": round(t_ref, 4),
                     "speedup": round(t_ref / t_ours, 3), "equal": equal})  # fmt: skip
    return {"rows": rows}


def compiled(check: Check) -> dict[str, Any]:
    """The detector network eager against ``CompiledForward`` (what ``ENGINE_COMPILE=1`` runs), fp16, batch 64."""
    if not check.cuda:
        return {"skipped": "no CUDA device (or --dry-run)"}
    from engine.faces.detect import FaceDetector, preprocess
    from engine.inference.backends import CompiledForward
    from engine.inference.weights import resolve

    detector = FaceDetector(resolve("retinaface_mnet025"), "cuda", "fp16", backend="torch")
    frames, _ = sample_frames(check, 64)
    x = preprocess(frames[torch.arange(64) % len(frames)].cuda(), 0.5, torch.float16)
    eager = timed_ms(lambda: detector.model(x), "cuda", 20)
    fwd = CompiledForward(detector.model)
    t = time.perf_counter()
    with torch.inference_mode():
        fwd(x)
    torch.cuda.synchronize()
    first = time.perf_counter() - t
    with torch.inference_mode():
        comp = timed_ms(lambda: fwd(x), "cuda", 20, warmup=3)
    return {"eager_ms": round(eager, 4), "compiled_ms": round(comp, 4), "first_call_s": round(first, 1),
            "speedup": round(eager / comp, 3), "fell_back_to_eager": fwd.compiled is None}  # fmt: skip


def corpus(check: Check, n: int, work: Path) -> Path:
    """``n`` distinct videos from the carried clips (or the shared ones): copy ``i`` gets an MP4 ``free`` box of
    its own at the end (ignored by every demuxer), so each has its own hash."""
    clips = carried_clips(check) or shared_clips()[:1]
    folder = work / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        clip = clips[i % len(clips)]
        tail = f"gpu-check copy {i}".encode()
        data = clip.read_bytes() + (8 + len(tail)).to_bytes(4, "big") + b"free" + tail
        (folder / f"{i:04d}_{clip.name}").write_bytes(data)
    return folder


def _videos_that_fit(check: Check, small: dict[str, Any], seconds: float) -> int:
    """As many videos (up to the full size) as the budget left allows, from the small run's own figures: its
    per-video costs (decode three times, the models alone, the peers, the run; 30 % for what is not timed) and its
    fixed cost (models loaded, warm-ups: the rest of its wall time). A fifth of what is left stays spare."""
    eng, k, n = small["engine"], small["engine"]["videos"], small["frames"]
    peers = sum(p["ms_per_sampled_frame"] for p in small["peers"].values())
    models = (eng["stages"]["detect_ms_per_frame"] + eng["stages"]["embed_ms_per_frame"] + peers) * n / 1000.0
    per_video = 1.3 * (3 * eng["decode_seconds"] + models + eng["pipeline_seconds"]) / k
    fixed = max(0.0, seconds - per_video * k)
    fit = int(0.8 * (check.left() - fixed - 20) / per_video)
    print(f"small run: {per_video:.2f}s per video, {fixed:.1f}s fixed; {fit} videos fit the budget", flush=True)
    return min(check.size["videos"], fit)


def end_to_end(check: Check) -> dict[str, Any]:
    """``bench --end-to-end`` on the run's device (the engine's own code: ``engine.tools.bench.run_bench``): first
    on a few videos, which sizes the second run on as many as the budget allows (up to 200)."""
    import tempfile

    from engine.tools.bench import run_bench

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        challenge = check.carry / "corpus" / "challenge.toml"
        if not challenge.is_file():
            challenge = Path(tmp) / "challenge.toml"
            challenge.write_text('name = "gpu-check"\n[faces]\nembedder = "hse"\n')
        peers = ["naive"] + (["face_recognition"] if version("face_recognition") and version("dlib-bin") else [])
        n = check.size["videos"] if check.dry else 8
        for label in ("small", "large"):
            t = time.perf_counter()
            result = run_bench(corpus(check, n, Path(tmp) / label), peers=peers, device=check.device,
                               interval=check.size["interval"], log=lambda m: print(m, flush=True), end_to_end=True,
                               challenge=challenge)  # fmt: skip
            out |= {"videos": n, "result": result}
            (check.out / "bench_end_to_end.json").write_text(json.dumps(result, indent=1) + "\n")
            if label == "small":
                out["small"] = {"videos": n, "lines": result["end_to_end"]["lines"]}
                n = 0 if check.dry else _videos_that_fit(check, result, time.perf_counter() - t)
                if n <= out["small"]["videos"]:
                    break
                check.results["end_to_end"] = out
                check.save()  # the small run's figures are kept even if the large one is cut short
    return out


def text_report(results: dict[str, Any]) -> list[str]:
    """The figures as a readable text table (the JSON holds everything)."""
    from gpu_check_report import report_lines  # beside this file

    return report_lines(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "runs" / "gpu-check"))
    parser.add_argument("--carry", type=Path, default=REPO / "runs" / "gpu-carry")
    parser.add_argument("--budget", type=float, default=None, help="seconds for every step [450; dry run 600]")
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU, tiny sizes")
    parser.add_argument("--only", default=None, help="comma-separated steps to run [all]")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.budget or (600.0 if args.dry_run else 450.0), args.dry_run, args.carry)
    steps: list[tuple[str, Callable[[Check], dict[str, Any]], float]] = [
        ("facts", facts, 0), ("cuda_tests", cuda_tests, 60), ("models", models, 45), ("kernels", kernels, 20),
        ("end_to_end", end_to_end, 90), ("compile", compiled, 60),
    ]  # fmt: skip
    only = set(args.only.split(",")) if args.only else None
    for name, fn, needs in steps:
        if only is None or name in only:
            check.step(name, fn, 0 if check.dry else needs)
    check.save()
    sys.path.insert(0, str(Path(__file__).parent))
    lines = text_report(check.results)
    (args.out / "gpu_check.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 1 if check.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
