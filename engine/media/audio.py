"""Sound: a file's first audio stream as mono float samples at the rate the caller asks for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchcodec.decoders import AudioDecoder

from engine.media.streams import DecodeError, _clean


@dataclass
class AudioTrack:
    """Mono float32 samples in [-1, 1] at ``sample_rate``; sample 0 plays at ``start_s``."""

    samples: torch.Tensor
    sample_rate: int
    start_s: float

    @property
    def duration_s(self) -> float:
        return self.samples.numel() / self.sample_rate


def decode_audio(path: str | Path, sample_rate: int = 16_000) -> AudioTrack:
    """The first audio stream, down-mixed to mono float32 and resampled to ``sample_rate`` by FFmpeg."""
    try:
        decoder = AudioDecoder(path, sample_rate=sample_rate, num_channels=1)
        samples = decoder.get_all_samples()
    except ValueError as exc:
        raise DecodeError("no_audio", f"{Path(path).name} has no audio stream") from exc
    except RuntimeError as exc:
        raise DecodeError("audio_decode_failed", f"{Path(path).name}: {_clean(exc)}") from exc
    return AudioTrack(samples.data.reshape(-1).to(torch.float32), int(samples.sample_rate), float(samples.pts_seconds))
