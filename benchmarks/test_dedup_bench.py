"""PHash throughput: engine.dedup's batched hash vs imagededup's per-image ``PHash.encode_image`` (`make bench`).

Same ~500 real face crops (every face the engine aligns in the shared videos at 0.5 s, cycled), one run, hashes
checked equal. Also times the duplicate search on those hashes against imagededup's ``find_duplicates_to_remove``.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("ENGINE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# As tests/conftest.py and `make bench` do: weights from the shared mirror when it is beside the repo.
if (SHARED.parent / "weights").is_dir():
    os.environ.setdefault("ENGINE_WEIGHTS_MIRROR", str(SHARED.parent / "weights"))

N_CROPS = 512


def _best_of(fn: Callable[[], object], repeat: int = 3, sync: bool = False) -> float:
    """Best wall time of ``repeat`` runs after one warm-up (CUDA synchronised around each when ``sync``)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _crops() -> torch.Tensor:
    from engine import media
    from engine.faces.align import align_chips
    from engine.faces.detect import FaceDetector

    detector = FaceDetector(device="cpu")
    chips = []
    for video in sorted((SHARED / "videos").glob("*.mp4")):
        for batch in media.sample_frames(video, 0.5):
            chips.append(align_chips(batch.frames, detector.detect(batch.frames)).to(torch.uint8))
    found = torch.cat(chips)
    return found[torch.arange(N_CROPS) % len(found)].contiguous()


@pytest.mark.slow
def test_phash_throughput_vs_imagededup() -> None:
    from imagededup.methods import PHash

    from engine.dedup import duplicates_to_remove, duplicates_to_remove_reference, hashes_to_hex, phash

    crops = _crops()
    arrays = [c.permute(1, 2, 0).contiguous().numpy() for c in crops]
    hasher = PHash(verbose=False)
    print(
        f"\n[dedup] {platform.node()} · {os.cpu_count()} cores · torch threads {torch.get_num_threads()} · "
        f"{len(crops)} face crops 150x150 (cycled from the shared videos)"
    )

    peer_s = _best_of(lambda: [hasher.encode_image(image_array=a) for a in arrays])
    ref = [hasher.encode_image(image_array=a) for a in arrays]
    print(f"  imagededup PHash.encode_image, one by one:  {len(crops) / peer_s:9.0f} images/s")

    ours_s = _best_of(lambda: phash(crops))
    hashes = phash(crops)
    assert hashes_to_hex(hashes) == ref
    print(f"  engine.dedup.phash, CPU batch {len(crops)}:        {len(crops) / ours_s:9.0f} images/s")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # imagededup hashes on one core: the per-core comparison
    try:
        one_s = _best_of(lambda: phash(crops))
    finally:
        torch.set_num_threads(threads)
    print(f"  engine.dedup.phash, CPU batch {len(crops)}, 1 thread: {len(crops) / one_s:9.0f} images/s")
    print(f"  ratio CPU batch / imagededup: {peer_s / ours_s:.2f}x ({peer_s / one_s:.2f}x on one thread)")

    if torch.cuda.is_available():
        on_gpu = crops.cuda()
        gpu_s = _best_of(lambda: phash(on_gpu), sync=True)
        assert torch.equal(phash(on_gpu).cpu(), hashes)
        print(
            f"  engine.dedup.phash, CUDA batch {len(crops)} ({torch.cuda.get_device_name()}): "
            f"{len(crops) / gpu_s:9.0f} images/s = {peer_s / gpu_s:.1f}x imagededup"
        )

    hex_hashes = hashes_to_hex(hashes)
    peer_dedup_s = _best_of(lambda: duplicates_to_remove_reference(hex_hashes))
    ours_dedup_s = _best_of(lambda: duplicates_to_remove(hashes))
    mask = duplicates_to_remove(hashes)
    assert mask.tolist() == duplicates_to_remove_reference(hex_hashes)
    print(
        f"  find_duplicates_to_remove on {len(crops)} hashes: imagededup {peer_dedup_s * 1e3:.1f} ms, "
        f"engine.dedup {ours_dedup_s * 1e3:.1f} ms ({int(mask.sum())} dropped)"
    )
