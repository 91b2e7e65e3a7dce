"""Where the prompt threshold (``engine.prompts.DEFAULT_THRESHOLD``) sits, measured on the shared real media only.

2.5 s templates are cut every 0.5 s from the Hamilton song. *Unrelated*: their best NCC anywhere in the shared
speech recordings (looped to 10 s). *Real*: their NCC at the true place in the song mixed with that speech at 0 dB
SNR. `make bench` prints both and checks the default lies between them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("ENGINE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
RATE, TEMPLATE_S = 16_000, 2.5


@pytest.mark.slow
def test_threshold_between_unrelated_and_real_scores() -> None:
    from engine.media import decode_audio
    from engine.prompts import DEFAULT_THRESHOLD, normalized_xcorr

    song = decode_audio(SHARED / "videos" / "short_hamilton_clip.mp4", RATE).samples
    m = int(TEMPLATE_S * RATE)
    starts = list(range(0, len(song) - m, RATE // 2))
    templates = torch.stack([song[s : s + m] for s in starts])
    speech = [decode_audio(p, RATE).samples for p in sorted((SHARED / "audio").iterdir())]
    unrelated = 0.0
    for voice in speech:
        looped = voice.repeat(-(-len(song) // len(voice)))[: len(song)]
        unrelated = max(unrelated, float(normalized_xcorr(looped[None], templates).amax()))
        gain = song.pow(2).mean().sqrt() / looped.pow(2).mean().sqrt()  # 0 dB SNR over the whole song
        scores = normalized_xcorr((song + gain * looped)[None], templates)[0]
        real = float(scores[torch.arange(len(starts)), torch.tensor(starts)].min())
        print(f"\n[align] {len(starts)} templates of {TEMPLATE_S} s; voice {len(voice) / RATE:.1f} s looped:")
        print(f"  best NCC of any template anywhere in the speech alone: {unrelated:.3f} (running max)")
        print(f"  weakest NCC at the true place under that speech at 0 dB: {real:.3f}")
        assert unrelated < DEFAULT_THRESHOLD < real
