"""Build the folder that ``benchmarks/gpu_check.sh`` carries to a lent GPU machine (``runs/gpu-carry``, ignored).

Why: the device machine reaches no network, and its image lacks what the engine needs beside torch: torchcodec and
the FFmpeg libraries it decodes with, SQLAlchemy, the weights and some media. Everything must fit the tool's 64 MiB
(the working tree included), so this takes only what the check uses and says how much it is:

- ``wheels/``: torchcodec (PyPI's CPU build: no wheel with NVDEC can be downloaded here) and SQLAlchemy, for
  Python 3.12 on manylinux x86-64, as the image's ``python3``;
- ``ffmpeg-libs.tar.xz``: FFmpeg 7.1's shared libraries as PyAV 15.1's wheel bundles them (and what they load),
  with the sonames torchcodec asks for (``libavcodec.so.61`` ...) as links;
- ``weights/``: RetinaFace and HSE as the weight manifest names them (the mirror's layout), and dlib's ResNet as a
  pickled fp16 torch module (``dlib_resnet_fp16.pt``: dlib's own file does not fit; timing does not depend on the
  last bits of the weights);
- ``data/``: the shared test media the CUDA tests read (``videos/``, ``faces/``);
- ``corpus/``: the first 4 s of three vertical 720x1280 clips of the demo corpus (``make_corpus.py``), its baseline
  and a challenge with its prompts and no logo (the image has no ``ffmpeg`` program to cover one); the check copies
  the clips into as many distinct videos as it needs.

Usage (here, with network): ``python benchmarks/gpu_pack.py [--out runs/gpu-carry] [--demo runs/demo-corpus]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
FFMPEG_WHEEL = "av==15.1.0"  # bundles FFmpeg 7.1: libavcodec.so.61, which torchcodec 0.11 loads (core7)
SONAMES = re.compile(r"lib(avutil|avcodec|avformat|avdevice|avfilter|swscale|swresample)-[0-9a-f]+\.so\.(\d+)\.")
LIMIT_MIB = 64


def download(spec: str, dest: Path) -> Path:
    """One binary wheel for CPython 3.12 on manylinux x86-64 (the device image's Python), without dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(dest), spec]  # fmt: skip
    for platform in PLATFORMS:
        cmd[5:5] = ["--platform", platform]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    new = sorted(set(dest.iterdir()) - before) or sorted(dest.glob(re.split("[=<>]", spec)[0].lower() + "-*.whl"))
    return new[0]


def _needed(lib: Path) -> list[str]:
    text = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"Shared library: \[(.+?)\]", text)


def ffmpeg_libs(out: Path) -> Path:
    """FFmpeg's libraries from PyAV's wheel: the seven torchcodec links against, what they load from the wheel,
    and links named by the sonames torchcodec asks for; packed as one xz tarball."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download(FFMPEG_WHEEL, Path(tmp))
        libs = Path(tmp) / "libs"
        libs.mkdir()
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith("av.libs/") and not name.endswith("/"):
                    (libs / Path(name).name).write_bytes(z.read(name))
        present = {p.name for p in libs.iterdir()}
        roots = [n for n in present if SONAMES.match(n)]
        keep, stack = set(), list(roots)
        while stack:
            name = stack.pop()
            if name not in keep:
                keep.add(name)
                stack += [n for n in _needed(libs / name) if n in present]
        archive = out / "ffmpeg-libs.tar.xz"
        with tarfile.open(archive, "w:xz") as tar:
            for name in sorted(keep):
                tar.add(libs / name, arcname=name)
            for name in roots:
                m = SONAMES.match(name)
                assert m is not None
                link = libs / f"lib{m.group(1)}.so.{m.group(2)}"
                link.symlink_to(name)
                tar.add(link, arcname=link.name)
    return archive


def weights(out: Path) -> None:
    """The detector's and HSE's files under their manifest names; dlib's network as a pickled fp16 module."""
    import torch

    from engine.inference.weights import load_manifest, resolve
    from engine.models.dlib_resnet import load_dlib_resnet

    dest = out / "weights"
    dest.mkdir(parents=True, exist_ok=True)
    specs = load_manifest()
    for name in ("retinaface_mnet025", "hse_faceres_json", "hse_faceres_bin"):
        shutil.copy(resolve(name), dest / specs[name].file)
    model = load_dlib_resnet(resolve("dlib_resnet_v1")).half()
    model.mean = model.mean.float()
    torch.save(model, dest / "dlib_resnet_fp16.pt")


def media_and_corpus(out: Path, shared: Path, demo: Path, clips: int, seconds: float) -> None:
    """The CUDA tests' shared media, and the first ``seconds`` of ``clips`` clips of the demo corpus with its
    baseline and prompts (short clips: a corpus of hundreds of videos decodes within the check's budget)."""
    for sub in ("videos", "faces"):
        shutil.copytree(shared / sub, out / "data" / sub, dirs_exist_ok=True, copy_function=shutil.copyfile)
        for path in (out / "data" / sub, *(out / "data" / sub).iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
    if not (demo / "challenge.toml").is_file():
        make = [sys.executable, str(REPO / "benchmarks" / "make_corpus.py"), str(demo), "--name", "demo", "--logo-auto"]
        subprocess.run(make, check=True)
    corpus = out / "corpus"
    (corpus / "videos").mkdir(parents=True, exist_ok=True)
    for clip in sorted((demo / "videos").glob("*.mp4"))[:clips]:  # their first seconds: every frame is decoded
        cut = [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(clip),
            "-t",
            str(seconds),
            "-c",
            "copy",
            str(corpus / "videos" / clip.name),
        ]
        subprocess.run(cut, check=True)
    shutil.copy(demo / "baseline.mp4", corpus / "baseline.mp4")
    text = (demo / "challenge.toml").read_text()
    text = re.sub(r"(?ms)^\[logo\].*?(?=^\[|\Z)", "", text)  # no ffmpeg program there to cover a logo
    text = re.sub(r"(?m)^videos = .*$", "", text).replace('name = "demo"', 'name = "gpu-check"')
    (corpus / "challenge.toml").write_text(text)


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu-carry")
    parser.add_argument("--demo", type=Path, default=REPO / "runs" / "demo-corpus")
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("ENGINE_SHARED_DATA", REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each carried clip")
    args = parser.parse_args(argv)
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    import importlib.metadata as md

    codec = md.version("torchcodec").split("+")[0]
    for spec in (f"torchcodec=={codec}", f"sqlalchemy=={md.version('sqlalchemy')}"):
        download(spec, out / "wheels")
    ffmpeg_libs(out)
    weights(out)
    media_and_corpus(out, args.shared, args.demo, args.clips, args.seconds)
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    )
    tree = sum((REPO / f).stat().st_size for f in tracked.stdout.decode().split("\0") if f and (REPO / f).is_file())
    total = size_mib(out) + tree / 2**20
    for part in sorted(out.iterdir()):
        print(f"{part.name:24} {size_mib(part) if part.is_dir() else part.stat().st_size / 2**20:7.1f} MiB")
    print(f"{'with the working tree':24} {total:7.1f} MiB of the {LIMIT_MIB} MiB a device call carries")
    if total > LIMIT_MIB - 2:
        raise SystemExit(f"too large to carry ({total:.1f} MiB): use fewer --clips")


if __name__ == "__main__":
    main()
