"""The logo cover's x264 preset: speed, and the picture kept outside the covered box, for each preset tried.

Why: the cover re-encodes every frame of a video while the models see two frames a second, so on a CPU it was the
run's critical path (11.8 of 17.0 s of `make run`, issue 17). A faster preset must still keep the picture: each
encode is compared with the source by FFmpeg's ``psnr`` and ``ssim`` filters on the largest band of the picture
that does not touch the covered box (above, below, left or right of it), and with today's encode (``veryfast``) on
the same band. Encode time is the wall time and the CPU seconds FFmpeg used (its children's rusage), the second
being the steadier figure on a shared machine.

Usage: ``python benchmarks/cover_quality.py [--videos DIR] [--presets veryfast,superfast,ultrafast@20] [--json OUT]``
(``NAME@CRF`` tries a preset at another CRF than the cover's 18)
(default: the demo corpus's videos, ``runs/demo-corpus/videos``; the box of each is found as the pipeline finds it,
``[logo] auto``; videos where none is found are skipped).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine import media  # noqa: E402
from engine.config.sections import LogoSettings  # noqa: E402
from engine.logo import LogoBox, locate_logo  # noqa: E402

TODAY = "veryfast"


def outside_band(box: LogoBox, width: int, height: int) -> tuple[int, int, int, int]:
    """The largest axis-aligned band of the picture that does not touch ``box`` (nor the 16-pixel macroblock row
    or column around it, where the encoder's blocks straddle the box), as x, y, w, h with even sizes."""
    m = 16
    x0, y0 = max(0, box.x - m), max(0, box.y - m)
    x1, y1 = min(width, box.x + box.w + m), min(height, box.y + box.h + m)
    bands = [(0, 0, width, y0), (0, y1, width, height - y1), (0, 0, x0, height), (x1, 0, width - x1, height)]
    x, y, w, h = max(bands, key=lambda b: b[2] * b[3])
    return x, y, w - w % 2, h - h % 2


def psnr_ssim(a: Path, b: Path, band: tuple[int, int, int, int]) -> tuple[float, float]:
    """Average PSNR (dB, luma and chroma together as FFmpeg reports it) and SSIM (All) of ``a`` against ``b`` on
    ``band``, frame by frame."""
    x, y, w, h = band
    crop = f"crop={w}:{h}:{x}:{y}"
    graph = f"[0:v]{crop},split[a1][a2];[1:v]{crop},split[b1][b2];[a1][b1]psnr;[a2][b2]ssim"
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-i", str(a), "-i", str(b), "-lavfi", graph, "-f", "null", "-"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    psnr = re.search(r"PSNR .*? average:([\d.]+|inf)", text)
    ssim = re.search(r"SSIM .*? All:([\d.]+)", text)
    if psnr is None or ssim is None:
        raise RuntimeError(f"no PSNR/SSIM in FFmpeg's output for {a.name}")
    return float(psnr.group(1)), float(ssim.group(1))


def timed_cover(src: Path, dst: Path, box: LogoBox, preset: str) -> tuple[float, float]:
    """Cover ``box`` of ``src`` into ``dst`` with ``preset`` (``NAME`` or ``NAME@CRF``, CRF 18 by default, the
    cover's): (wall seconds, FFmpeg's CPU seconds)."""
    name, _, crf = preset.partition("@")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    media.encode_with_region_covered(src, dst, box.x, box.y, box.w, box.h, "blur", 3, int(crf or 18), preset=name)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(videos: list[Path], presets: list[str], work: Path) -> dict:
    """Every preset on every video with a logo: times, PSNR/SSIM outside the box against the source and against
    today's encode, and sizes; with totals per preset."""
    rows = []
    for src in videos:
        box = locate_logo(LogoSettings(auto=True), src)
        if box is None:
            continue
        info = media.probe(src).video
        band = outside_band(box, info.width, info.height)
        out = {p: work / f"{src.stem}.{p}.mp4" for p in presets}
        for preset in presets:
            wall, cpu = timed_cover(src, out[preset], box, preset)
            psnr, ssim = psnr_ssim(out[preset], src, band)
            vs_today = psnr_ssim(out[preset], out[TODAY], band) if TODAY in out else (float("nan"),) * 2
            rows.append(
                {
                    "video": src.name,
                    "preset": preset,
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "psnr_db": psnr,
                    "ssim": ssim,
                    "psnr_vs_today_db": vs_today[0],
                    "ssim_vs_today": vs_today[1],
                    "bytes": out[preset].stat().st_size,
                    "box": list(box.as_tuple()),
                    "band": list(band),
                }  # fmt: skip
            )
    totals = {}
    for preset in presets:
        mine = [r for r in rows if r["preset"] == preset]
        if mine:
            totals[preset] = {
                "videos": len(mine),
                "wall_s": round(sum(r["wall_s"] for r in mine), 2),
                "cpu_s": round(sum(r["cpu_s"] for r in mine), 2),
                "psnr_db_min": min(r["psnr_db"] for r in mine),
                "psnr_db_mean": round(sum(r["psnr_db"] for r in mine) / len(mine), 2),
                "ssim_min": min(r["ssim"] for r in mine),
                "psnr_vs_today_db_min": min(r["psnr_vs_today_db"] for r in mine),
                "ssim_vs_today_min": min(r["ssim_vs_today"] for r in mine),
                "bytes": sum(r["bytes"] for r in mine),
            }
    return {"rows": rows, "totals": totals}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=REPO / "runs" / "demo-corpus" / "videos")
    parser.add_argument("--presets", default=f"{TODAY},superfast,ultrafast")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    videos = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in {".mp4", ".mov", ".mkv", ".webm"})
    with tempfile.TemporaryDirectory(prefix="cover-quality-") as tmp:
        result = measure(videos, presets, Path(tmp))
    print("| preset | videos | wall s | FFmpeg CPU s | PSNR vs source (min / mean, dB) | SSIM vs source (min) | "
          f"PSNR vs {TODAY} (min, dB) | SSIM vs {TODAY} (min) | bytes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, t in result["totals"].items():
        print(
            f"| {preset} | {t['videos']} | {t['wall_s']:.2f} | {t['cpu_s']:.2f} | {t['psnr_db_min']:.2f} / "
            f"{t['psnr_db_mean']:.2f} | {t['ssim_min']:.4f} | {t['psnr_vs_today_db_min']:.2f} | "
            f"{t['ssim_vs_today_min']:.4f} | {t['bytes']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
