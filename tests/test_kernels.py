"""kernels/: each Triton kernel against its plain-torch reference, on real media and synthetic edge cases.

Where there is no GPU the kernels run in Triton's interpreter. Triton decides interpreted vs compiled when a kernel
module is imported (``TRITON_INTERPRET`` read by ``triton.jit``), and interpreted kernels in the pytest process would
also change every other Triton user there, so the interpreter checks run in a fresh process: this file executed as a
script (``python tests/test_kernels.py preprocess|phash SHARED_DATA``) with ``TRITON_INTERPRET=1``, printing one JSON
report that the tests below read. The CUDA tests run the compiled kernels in this process and print timings.

Exactness: the fused preprocessing must equal ``engine.faces.preprocess.preprocess_torch`` bit for bit (on a CPU
torch build without FMA kernels — capability DEFAULT — only within one float32 rounding, see kernels/preprocess.py);
the PHash kernel must give the very hashes of ``engine.dedup.phash``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
HAVE_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="Triton is not installed (pip install '.[gpu]')")
needs_cuda = pytest.mark.skipif(
    not (HAVE_TRITON and torch.cuda.is_available()), reason="needs a CUDA device and Triton"
)

#: Without FMA-using CPU kernels, torch's CPU resize rounds differently from the kernel's fused arithmetic.
CPU_FMA_BUILD = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
NO_FMA_TOLERANCE = {torch.float32: 1e-4, torch.float16: 0.125}  # one float32 rounding, then the cast


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and strides (a size-1 dimension's stride is arbitrary and ignored)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride(), strict=True) if n > 1)


# ------------------------------------------------------------------------------------------- interpreter, subprocess


def _run_interpreted(check: str, shared_data: Path) -> dict:
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), check, str(shared_data)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=1800,
    )
    assert res.returncode == 0, res.stderr[-6000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"\n{check} (interpreted): {report['seconds']:.1f} s for {len(report['cases'])} cases")
    return report


@pytest.fixture(scope="module")
def preprocess_report(shared_data: Path) -> dict:
    return _run_interpreted("preprocess", shared_data)


@pytest.fixture(scope="module")
def phash_report(shared_data: Path) -> dict:
    return _run_interpreted("phash", shared_data)


@needs_triton
def test_preprocess_interpreted_equals_torch(preprocess_report: dict) -> None:
    cases = preprocess_report["cases"]
    assert preprocess_report["interpreted"] and len(cases) >= 40
    kinds = {c["source"] for c in cases}
    assert {"random", "hamilton", "photo"} <= kinds
    assert {c["mode"] for c in cases} >= {0, 2} and any(c["scale"] == 1.0 for c in cases)
    assert any(c["batch"] == 1 for c in cases) and any(c["batch"] > 1 for c in cases)

    def wrong(c: dict) -> bool:
        if not c["same_layout"]:
            return True
        if CPU_FMA_BUILD:
            return c["mismatches"] != 0
        return c["max_abs_diff"] > NO_FMA_TOLERANCE[getattr(torch, c["dtype"])]

    bad = [c for c in cases if wrong(c)]
    assert not bad, bad[:5]


@needs_triton
def test_preprocess_nhwc_mode_follows_its_formula_interpreted(preprocess_report: dict) -> None:
    """The CUDA channels-last arithmetic, run interpreted on the CPU, against an independent NumPy emulation of the
    sm_90 SASS it was read from (the GPU test checks it against torch itself). Not named for CUDA: the GPU check
    selects its tests with ``-k cuda``, and this one needs only the interpreter (21 s of a device's time there)."""
    checks = preprocess_report["nhwc_formula"]
    assert len(checks) >= 3 and all(c["mismatches"] == 0 for c in checks), checks


@needs_triton
def test_phash_interpreted_equals_engine(phash_report: dict) -> None:
    cases = phash_report["cases"]
    assert phash_report["interpreted"]
    names = {c["name"] for c in cases}
    assert {"hamilton chips", "photo chips", "random chips", "flat and mirrored"} <= names
    assert sum(c["count"] for c in cases if "chips" in c["name"]) >= 60
    assert any(c["transposed"] for c in cases)  # a tall size walked vertical pass first
    assert any(c["count"] == 1 for c in cases)
    assert all(c["mismatches"] == 0 for c in cases), [c for c in cases if c["mismatches"]]
    assert phash_report["imagededup_agrees"] > 0 and phash_report["imagededup_disagrees"] == 0


# --------------------------------------------------------------------------------------------------- in-process, CPU


def test_cpu_paths_never_touch_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU tensors take the plain-torch code whatever the switch says: same function, same bytes."""
    from engine import dedup
    from engine.faces import detect as faces
    from engine.phash import phash_torch

    frames = torch.randint(0, 256, (2, 3, 41, 67), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for switch in ("1", "0"):
        monkeypatch.setenv("ENGINE_KERNELS", switch)
        monkeypatch.setattr(faces, "_fused_preprocess_ok", lambda *a: pytest.fail("kernel consulted for CPU"))
        monkeypatch.setattr(dedup, "_phash_kernel_ok", lambda *a: pytest.fail("kernel consulted for CPU"))
        assert torch.equal(faces.preprocess(frames, 0.6), faces.preprocess_torch(frames, 0.6))
        assert torch.equal(dedup.phash(frames), phash_torch(frames))


def test_switch_and_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    import kernels

    for value, expected in (("0", False), ("off", False), ("false", False), ("1", True), ("", True)):
        monkeypatch.setenv("ENGINE_KERNELS", value)
        assert kernels.enabled() is expected
    monkeypatch.delenv("ENGINE_KERNELS")
    assert kernels.enabled()
    from kernels import phash, preprocess

    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    for mod in (preprocess, phash):
        assert mod.available("cpu") is (HAVE_TRITON and interpreting)
        assert mod.available("meta") is False


def test_padding_geometry() -> None:
    from kernels.preprocess import output_size, padded_size

    assert output_size(1080, 1920, 1 / 3) == (360, 640)
    assert output_size(5, 5, 0.01) == (1, 1)  # at least one pixel, as resize_like_cv2
    assert padded_size((360, 640), 32) == (384, 640)
    assert padded_size((97, 131), 1, (100, 140)) == (100, 140)
    assert padded_size((97, 131), 32, (100, 140)) == (128, 160)
    with pytest.raises(ValueError):
        padded_size((97, 131), 1, (96, 140))
    with pytest.raises(ValueError):
        padded_size((97, 131), 0)


# ------------------------------------------------------------------------------------------------ CUDA, compiled


def _cuda_ms(fn, repeat: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


@needs_cuda
def test_cuda_preprocess_equals_torch_and_timing(hamilton: Path) -> None:
    from engine import media
    from kernels import preprocess as kp

    frames = next(media.sample_frames(hamilton, 0.5, chunk=8)).frames.cuda()  # channels-last, as decoded
    gen = torch.Generator().manual_seed(0)
    odd = torch.randint(0, 256, (3, 3, 361, 643), generator=gen, dtype=torch.uint8).cuda()
    for x in (frames, frames[:1], frames.contiguous(), odd, odd.contiguous(memory_format=torch.channels_last)):
        for scale in (1.0, 0.5, 1 / 3, 0.731, 1.7, 0.999):
            for dtype in (torch.float32, torch.float16):
                got = kp.preprocess(x, scale, dtype)
                ref = kp.preprocess_reference(x, scale, dtype)
                diff = (got.float() - ref.float()).abs().max().item()
                assert same_layout(got, ref) and torch.equal(got, ref), (tuple(x.shape), scale, dtype, diff)
    got = kp.preprocess(odd, 0.5, pad_multiple=32)
    assert torch.equal(got, kp.preprocess_reference(odd, 0.5, pad_multiple=32)) and got.shape[-2:] == (192, 352)

    cuda_gen = torch.Generator(device="cuda").manual_seed(0)
    big = torch.randint(0, 256, (32, 1080, 1920, 3), dtype=torch.uint8, device="cuda", generator=cuda_gen)
    big = big.permute(0, 3, 1, 2)
    print("\npreprocess, 32 × 1080p channels-last uint8 → detector input (ms, kernel vs plain torch):")
    for scale, dtype in ((1 / 3, torch.float16), (0.5, torch.float32), (1.0, torch.float16)):
        k = _cuda_ms(lambda s=scale, d=dtype: kp.preprocess(big, s, d))
        t = _cuda_ms(lambda s=scale, d=dtype: kp.preprocess_reference(big, s, d))
        print(f"  scale {scale:.3f} {dtype}: kernel {k:.3f}  torch {t:.3f}  speed-up {t / k:.2f}×")


@needs_cuda
def test_cuda_phash_equals_engine_and_timing(shared_data: Path) -> None:
    from engine import media
    from engine.phash import phash_torch
    from kernels import phash as kph

    gen = torch.Generator().manual_seed(1)
    chips = torch.randint(0, 256, (300, 3, 150, 150), generator=gen, dtype=torch.uint8).cuda()
    assert torch.equal(kph.phash(chips), kph.phash_reference(chips))
    assert torch.equal(kph.phash(chips).cpu(), kph.phash_reference(chips.cpu()))
    assert torch.equal(kph.phash(chips[:, :1]), kph.phash_reference(chips[:, :1]))
    for path in sorted((shared_data / "faces").iterdir()):
        img = media.load_image(path).cuda()[None]
        assert torch.equal(kph.phash(img), phash_torch(img)), path.name

    cuda_gen = torch.Generator(device="cuda").manual_seed(1)
    many = torch.randint(0, 256, (8192, 3, 150, 150), dtype=torch.uint8, device="cuda", generator=cuda_gen)
    print("\nphash, 150×150 uint8 chips (ms, kernel vs plain torch at the engine's chunk of 1024):")
    for n in (1024, 8192):
        k = _cuda_ms(lambda n=n: kph.phash(many[:n]), repeat=5)
        t = _cuda_ms(lambda n=n: kph.phash_reference(many[:n]), repeat=5)
        print(f"  {n} chips: kernel {k:.3f}  torch {t:.3f}  speed-up {t / k:.2f}×")


@needs_cuda
def test_cuda_hooks_and_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import dedup
    from engine.faces import detect as faces

    frames = torch.randint(
        0, 256, (2, 3, 200, 300), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    ).cuda()
    called = []
    from kernels import phash as kph
    from kernels import preprocess as kp

    monkeypatch.setattr(kp, "preprocess", lambda *a, **k: called.append("pre") or kp.preprocess_reference(*a, **k))
    monkeypatch.setattr(kph, "phash", lambda x: called.append("phash") or kph.phash_reference(x))
    faces.preprocess(frames, 0.5)
    dedup.phash(frames)
    assert called == ["pre", "phash"]
    monkeypatch.setenv("ENGINE_KERNELS", "0")
    faces.preprocess(frames, 0.5)
    dedup.phash(frames)
    assert called == ["pre", "phash"]


# -------------------------------------------------------------------------------------- the interpreted checks


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add via float64 (exact products here; one rounding of the sum, then float32)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def _nhwc_formula(frames: torch.Tensor, scale: float) -> np.ndarray:
    """NumPy emulation of torch 2.11's ``upsample_bilinear2d_nhwc_out_frame<float>`` as its sm_90 SASS computes it,
    then BGR and the mean, written independently of the kernel."""
    f32 = np.float32
    x = frames.numpy().astype(f32)
    n, c, h, w = x.shape
    out = (max(1, round(h * scale)), max(1, round(w * scale)))
    r = f32(1.0 / scale)

    def axis(size_in: int, size_out: int) -> tuple[np.ndarray, ...]:
        d = np.arange(size_out).astype(f32) + f32(0.5)
        src = _fma32(d, np.full_like(d, r), np.full_like(d, f32(-0.5)))
        src = np.where(src < 0, f32(0), src).astype(f32)
        i0 = src.astype(np.int64)
        l1 = (src - i0.astype(f32)).astype(f32)
        return i0, np.where(i0 < size_in - 1, i0 + 1, i0), (f32(1) - l1).astype(f32), l1

    (h0, h1, hl0, hl1), (w0, w1, wl0, wl1) = axis(h, out[0]), axis(w, out[1])
    a, b = x[:, :, h0][:, :, :, w0], x[:, :, h0][:, :, :, w1]
    cc, d = x[:, :, h1][:, :, :, w0], x[:, :, h1][:, :, :, w1]
    W0, W1 = np.broadcast_to(wl0, a.shape), np.broadcast_to(wl1, a.shape)
    H0, H1 = np.broadcast_to(hl0[:, None], a.shape), np.broadcast_to(hl1[:, None], a.shape)
    top = _fma32(W1, b, (W0 * a).astype(f32))
    bottom = _fma32(W0, cc, (W1 * d).astype(f32))
    val = _fma32(top, H0, (H1 * bottom).astype(f32))
    mean = np.array([104, 117, 123], dtype=f32)[None, :, None, None]
    return (val[:, ::-1] - mean).astype(f32)


def _check_preprocess(shared_data: Path) -> dict:
    from engine import media
    from kernels import preprocess as kp

    cases = []

    def check(source: str, frames: torch.Tensor, scale: float, dtype: torch.dtype = torch.float32, **pad) -> None:
        start = time.perf_counter()
        got = kp.preprocess(frames, scale, dtype, **pad)
        seconds = time.perf_counter() - start
        ref = kp.preprocess_reference(frames, scale, dtype, **pad)
        layout_ok = same_layout(got, ref)
        diff = (got.float() - ref.float()).abs()
        cases.append(
            {
                "source": source,
                "shape": list(frames.shape),
                "batch": frames.shape[0],
                "scale": scale,
                "dtype": str(dtype).removeprefix("torch."),
                "pad": {k: list(v) if isinstance(v, tuple) else v for k, v in pad.items()},
                "mode": kp.arithmetic_mode(frames, kp.output_size(*frames.shape[-2:], scale)),
                "same_layout": layout_ok,
                "mismatches": int((got != ref).sum()) if layout_ok else -1,
                "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
                "seconds": seconds,
            }
        )

    gen = torch.Generator().manual_seed(0)

    def rand(n: int, h: int, w: int, channels_last: bool = True) -> torch.Tensor:
        x = torch.randint(0, 256, (n, 3, h, w), generator=gen, dtype=torch.uint8)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    for n, h, w in ((1, 37, 53), (3, 37, 53), (2, 275, 282), (1, 1, 1), (2, 361, 643)):
        for scale in (1.0, 0.5, 1 / 3, 0.37, 0.731, 1.7):
            check("random", rand(n, h, w), scale)
    check("random", rand(2, 100, 1000), 0.999)  # one axis keeps its size: copied on the CPU
    check("random", rand(1, 20, 30), 0.999)  # neither does: no resize at all
    check("random", rand(2, 12, 106, channels_last=False), 0.37)  # NCHW input, small output (channels-last kernel)
    check("random", rand(2, 301, 203, channels_last=False), 0.6)  # NCHW input, generic kernel
    check("random", rand(2, 301, 203)[:, :, 7:290, 3:200], 0.6)  # a strided view
    check("random", rand(2, 181, 247), 0.45, torch.float16)
    check("random", rand(1, 181, 247), 1.0, torch.float16)
    check("random", rand(2, 33, 45), 0.8, pad_multiple=32)
    check("random", rand(2, 33, 45), 1.0, torch.float16, pad_to=(40, 64), pad_value=0.0)
    check("random", rand(1, 33, 45), 0.5, pad_multiple=8, pad_value=-7.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: torch's CPU resize switches to its channels-last kernel
    check("random", rand(2, 275, 282), 0.37)
    torch.set_num_threads(threads)

    frames = next(media.sample_frames(shared_data / "videos" / "short_hamilton_clip.mp4", 0.5, chunk=4)).frames
    for scale in (1.0, 0.5, 0.75, 1 / 3):
        check("hamilton", frames, scale)
    check("hamilton", frames[:1], 0.5, torch.float16, pad_multiple=32)
    for name in ("obama_small.jpg", "alex-lacamoire.png", "two_people.jpg"):
        img = media.load_image(shared_data / "faces" / name)[None]
        check("photo", img, 1.0)
        check("photo", img, 640 / max(img.shape[-2:]))
        check("photo", img, 160 / max(img.shape[-2:]), torch.float16)

    nhwc = []
    for n, h, w, scale in ((2, 275, 282, 0.37), (1, 71, 241, 1.7), (2, 37, 53, 0.731)):
        x = rand(n, h, w)
        got = kp.preprocess(x, scale, mode=kp.MODE_CUDA_NHWC).numpy()
        nhwc.append({"shape": [n, h, w], "scale": scale, "mismatches": int((got != _nhwc_formula(x, scale)).sum())})
    return {"cases": cases, "nhwc_formula": nhwc}


def _check_phash(shared_data: Path) -> dict:
    import torch.nn.functional as F

    from engine import media
    from engine.dedup import hashes_to_hex, phash_reference
    from engine.faces.align import align_chips
    from engine.faces.detect import FaceDetector
    from kernels import phash as kph

    cases = []

    def check(name: str, images: torch.Tensor, **kwargs: int) -> torch.Tensor:
        start = time.perf_counter()
        got = kph.phash(images, **kwargs)
        seconds = time.perf_counter() - start
        ref = kph.phash_reference(images)
        cases.append(
            {
                "name": name,
                "shape": list(images.shape),
                "count": len(images),
                "transposed": kph._walk_transposed(*images.shape[-2:]),
                "mismatches": int((got != ref).sum()),
                "seconds": seconds,
            }
        )
        return got

    detector = FaceDetector(device="cpu")
    batch = next(media.sample_frames(shared_data / "videos" / "short_hamilton_clip.mp4", 0.5, chunk=12)).frames
    hamilton = align_chips(batch, detector.detect(batch)).to(torch.uint8)
    photo_chips = []
    photos = [media.load_image(p) for p in sorted((shared_data / "faces").iterdir())]
    for img in photos:
        det = detector.detect(img[None], min(1.0, 480 / max(img.shape[-2:])))
        photo_chips.append(align_chips(img[None], det).to(torch.uint8))
    photo_chips = torch.cat(photo_chips)
    hashes = check("hamilton chips", hamilton)
    check("photo chips", photo_chips)
    check("photo chips, grayscale", photo_chips[:, :1])
    check("one chip", hamilton[:1])
    check("hamilton chips, source tiles of 32 as compiled", hamilton[:6], tile=32)
    gen = torch.Generator().manual_seed(2)
    check("random chips", torch.randint(0, 256, (24, 3, 150, 150), generator=gen, dtype=torch.uint8))
    check(
        "random chips, channels-last",
        torch.randint(0, 256, (8, 150, 150, 3), generator=gen, dtype=torch.uint8).permute(0, 3, 1, 2),
    )

    chips = hamilton[:6]
    half = chips[..., :75]
    flat_mirrored = torch.stack(
        [
            torch.zeros(3, 150, 150, dtype=torch.uint8),
            torch.full((3, 150, 150), 77, dtype=torch.uint8),
            *torch.cat([half, half.flip(-1)], -1),
            *torch.cat([chips[..., :75, :], chips[..., :75, :].flip(-2)], -2),
            *chips[..., :1, :].expand(-1, -1, 150, -1),
        ]
    )
    check("flat and mirrored", flat_mirrored)
    # Other sizes: shrunk, enlarged, tall (walked transposed where Pillow goes vertical first), wide, odd, 32.
    for i, (h, w) in enumerate(((97, 301), (301, 97), (600, 120), (45, 40), (33, 31), (20, 28), (32, 32), (1, 1))):
        img = photos[i % len(photos)][None].float()
        resized = F.interpolate(img, size=(h, w), mode="bilinear", antialias=True).round().clamp(0, 255)
        check(
            f"photo at {h}x{w}",
            torch.cat([resized.to(torch.uint8), torch.randint(0, 256, (1, 3, h, w), generator=gen, dtype=torch.uint8)]),
        )

    # And the kernel's hex strings against imagededup itself on a few real chips.
    sample = torch.cat([hamilton[:8], photo_chips[:8]])
    ours = hashes_to_hex(kph.phash(sample))
    theirs = phash_reference([img.permute(1, 2, 0).numpy() for img in sample])
    agree = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert len(hashes) == len(hamilton)
    return {"cases": cases, "imagededup_agrees": agree, "imagededup_disagrees": len(ours) - agree}


def main(argv: list[str]) -> None:
    check, shared = argv[1], Path(argv[2])
    sys.path.insert(0, str(REPO))
    from kernels import phash, preprocess

    module = preprocess if check == "preprocess" else phash
    start = time.perf_counter()
    report = _check_preprocess(shared) if check == "preprocess" else _check_phash(shared)
    report["interpreted"] = module.is_interpreted(
        module._preprocess_kernel if check == "preprocess" else module._phash_kernel
    )
    report["seconds"] = time.perf_counter() - start
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv)
