"""Prompt alignment: where each audio prompt of a challenge's baseline plays in each participant's video.

Participants reuse the baseline's sound: they trim it (early prompts missing), start it at any time, talk over it
and re-encode it (AAC at 44.1 or 48 kHz). So we cut every prompt out of the baseline as a *template* and slide it
along each video's audio, scoring every lag with the normalised cross-correlation (NCC): the Pearson correlation
between the template and the window of the track under it. NCC ignores loudness (a participant's volume does not
matter) and has a fixed scale: 1 for an exact copy, about ``1 / sqrt(1 + 10 ** (-snr / 10))`` for a copy under
uncorrelated voice-over at ``snr`` dB (0.71 at 0 dB), and near 0 for unrelated sound. That fixed scale is what lets
one threshold decide "present" for every video.

All lags are scored at once: the numerator with ``torch.fft`` (the template is made zero-mean and unit-norm, so the
numerator is a plain correlation), the window energy with cumulative sums of the signal and its square. Everything is
batched over prompts and videos (zero-padded to a common length) and runs on the tensors' device, CPU or CUDA alike.
Audio is decoded at one common rate (16 kHz by default: waveform detail above 8 kHz adds little and costs time) and
the peak lag is refined to a fraction of a sample by a parabola through its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.config import Challenge, ConfigError, Prompt
from engine.config.sections import ALIGN_RATE as DEFAULT_RATE
from engine.config.sections import ALIGN_THRESHOLD as DEFAULT_THRESHOLD
from engine.media import AudioTrack, DecodeError, decode_audio

# The ``[align]`` defaults imported above: DEFAULT_RATE, the rate every track is decoded at (both 44.1 and 48 kHz
# uploads resample to it, so templates and tracks agree), and DEFAULT_THRESHOLD, the NCC at which a prompt is
# present (how it was measured on the shared real media is told beside it, in ``engine.config.sections``).

#: Batches are cut so that one ``[videos, prompts, lags]`` tensor holds at most this many elements, whatever the
#: number and length of the videos: the float64 window sums then take about 64 MiB each, a few hundred MiB in all.
DEFAULT_MAX_ELEMENTS = 1 << 23

#: A window whose mean power is below this is silence (-100 dBFS): its score is 0, never a division by zero.
SILENCE_POWER = 1e-10
#: ...and so is a window 80 dB below its track's mean power: there the float32 FFT's rounding, which scales
#: with the whole track's energy, would be as large as the window's own correlation.
RELATIVE_SILENCE = 1e-8


@dataclass(frozen=True)
class PromptMatch:
    """Where one prompt plays in a video: seconds on the video's own clock (the same as its frames' pts)."""

    prompt: str
    start_s: float
    end_s: float
    score: float


@dataclass
class Alignment:
    """One video's result: the prompts found, and the best score of each prompt that was not found.

    ``absent`` lets callers log *why* a prompt is missing (a score just under the threshold is worth a look; 0.0
    means the audio is shorter than the prompt, silent, or missing). ``error`` is set when the file could not be
    read at all; a video without an audio stream is not an error: it simply holds no prompt (``has_audio`` False).
    """

    video: str = ""
    matches: list[PromptMatch] = field(default_factory=list)
    absent: dict[str, float] = field(default_factory=dict)
    has_audio: bool = True
    error: str | None = None


@dataclass(frozen=True)
class PromptTemplates:
    """The prompts cut from the baseline: zero-padded ``samples [P, M]``, their true ``lengths [P]`` and the baseline
    time of each template's first sample (a prompt's start rounded to the sample grid; kept so the match times can
    be corrected back to the prompt's exact start)."""

    prompts: tuple[Prompt, ...]
    samples: torch.Tensor
    lengths: torch.Tensor
    first_s: tuple[float, ...]
    sample_rate: int

    def to(self, device: str | torch.device) -> PromptTemplates:
        return PromptTemplates(
            self.prompts, self.samples.to(device), self.lengths.to(device), self.first_s, self.sample_rate
        )


def prompt_templates(baseline: AudioTrack, prompts: Sequence[Prompt]) -> PromptTemplates:
    """Cut each prompt ``[start, end]`` (baseline seconds, on the baseline's clock) out of the baseline's audio.

    A prompt that runs past the audio is clipped to it; one wholly outside it is a configuration error, since it can
    never be found.
    """
    rate = baseline.sample_rate
    n = baseline.samples.numel()
    cuts: list[torch.Tensor] = []
    first: list[float] = []
    for p in prompts:
        i0 = max(0, round((p.start - baseline.start_s) * rate))
        i1 = min(n, round((p.end - baseline.start_s) * rate))
        if i1 - i0 < 2:
            raise ConfigError(
                f"prompt {p.name!r} ({p.start:g}-{p.end:g} s) lies outside the baseline's audio "
                f"({baseline.start_s:.3f}-{baseline.start_s + baseline.duration_s:.3f} s)"
            )
        cuts.append(baseline.samples[i0:i1])
        first.append(baseline.start_s + i0 / rate)
    width = max((c.numel() for c in cuts), default=0)
    samples = baseline.samples.new_zeros((len(cuts), width))
    for i, c in enumerate(cuts):
        samples[i, : c.numel()] = c
    lengths = torch.tensor([c.numel() for c in cuts], dtype=torch.int64, device=baseline.samples.device)
    return PromptTemplates(tuple(prompts), samples, lengths, tuple(first), rate)


def fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: FFT libraries (pocketfft, cuFFT) are fast on these sizes, slow on large primes."""
    best = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def normalized_xcorr(
    signals: torch.Tensor,
    templates: torch.Tensor,
    signal_lengths: torch.Tensor | None = None,
    template_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """NCC of every template against every signal at every lag: float32 ``[V, P, N]`` on the inputs' device.

    ``signals [V, N]`` and ``templates [P, M]`` are zero-padded batches whose true lengths are given (default: all
    of it). Entry ``[v, p, k]`` is the Pearson correlation of template ``p`` with ``signals[v, k : k + M_p]``, in
    [-1, 1]; lags where the template does not fit wholly inside the signal are ``-inf``, and windows that are silent
    (see ``SILENCE_POWER``), like templates that are, score 0.
    """
    device = signals.device
    v_count, n = signals.shape
    p_count, m = templates.shape
    if signal_lengths is None:
        signal_lengths = torch.full((v_count,), n, dtype=torch.int64, device=device)
    if template_lengths is None:
        template_lengths = torch.full((p_count,), m, dtype=torch.int64, device=device)
    signal_lengths = signal_lengths.to(device=device, dtype=torch.int64)
    tl = template_lengths.to(device=device, dtype=torch.int64)
    if v_count == 0 or p_count == 0 or n == 0:
        return torch.full((v_count, p_count, n), -math.inf, device=device)

    # Templates: zero-mean and unit-norm over their own length (float64: cheap, and exact enough to trust).
    t = templates.to(torch.float64)
    tmask = torch.arange(m, device=device)[None, :] < tl[:, None]
    t = torch.where(tmask, t, 0.0)
    t = torch.where(tmask, t - t.sum(1, keepdim=True) / tl.clamp(min=1)[:, None], 0.0)
    norm = t.pow(2).sum(1, keepdim=True).sqrt()
    t = torch.where(norm > 0, t / norm.clamp(min=1e-30), 0.0)

    x = signals.to(torch.float64)
    smask = torch.arange(n, device=device)[None, :] < signal_lengths[:, None]
    x = torch.where(smask, x, 0.0)

    # Numerator: sum_j t[j] * x[k + j]. Circular correlation of length L >= N wraps only at lags that are invalid
    # anyway (k + M_p > N), so no padding to N + M is needed.
    size = fft_size(max(n, m))
    spec_x = torch.fft.rfft(x.to(torch.float32), n=size)
    spec_t = torch.fft.rfft(t.to(torch.float32), n=size)
    num = torch.fft.irfft(spec_x[:, None, :] * spec_t.conj()[None, :, :], n=size)[..., :n]

    # Denominator: sqrt(sum (x - mean)^2) over each window, from running sums. float64, because a window's energy
    # is the difference of two large running totals.
    zero = x.new_zeros((v_count, 1))
    c1 = torch.cat([zero, x.cumsum(1)], 1)
    c2 = torch.cat([zero, x.pow(2).cumsum(1)], 1)
    lags = torch.arange(n, device=device)
    hi = (lags[None, :] + tl[:, None]).clamp(max=n)  # [P, N]
    s1 = c1[:, hi] - c1[:, lags][:, None, :]  # [V, P, N]
    s2 = c2[:, hi] - c2[:, lags][:, None, :]
    mf = tl.to(torch.float64)[None, :, None]
    var = (s2 - s1.pow(2) / mf).clamp(min=0)
    mean_power = c2[:, -1] / signal_lengths.clamp(min=1).to(torch.float64)
    floor = mf * torch.maximum(torch.full_like(mean_power, SILENCE_POWER), RELATIVE_SILENCE * mean_power)[:, None, None]
    silent = var <= floor
    den = var.sqrt().to(torch.float32)
    score = torch.where(silent, 0.0, num / torch.where(silent, 1.0, den)).clamp(-1.0, 1.0)
    valid = (lags[None, None, :] + tl[None, :, None]) <= signal_lengths[:, None, None]
    return torch.where(valid, score, -math.inf)


def peak_lags(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best score and its lag refined to a fraction of a sample, per ``[..., lags]`` row.

    The parabola through the peak and its two neighbours puts the true maximum within a few hundredths of a sample
    for band-limited audio (one sample at 16 kHz is already 62.5 us, the bound is 10 ms: the refinement keeps the
    error far from it even at low rates). Rows with no valid lag give score 0 and lag NaN.
    """
    if scores.shape[-1] == 0:  # an empty signal: no lag at all
        shape = scores.shape[:-1]
        return scores.new_zeros(shape), torch.full(shape, math.nan, dtype=torch.float64, device=scores.device)
    best, k = scores.max(-1)
    last = scores.shape[-1] - 1
    y0 = scores.gather(-1, (k - 1).clamp(min=0)[..., None])[..., 0]
    y2 = scores.gather(-1, (k + 1).clamp(max=last)[..., None])[..., 0]
    curve = y0 - 2 * best + y2
    ok = (k > 0) & (k < last) & torch.isfinite(y0) & torch.isfinite(y2) & (curve < 0)
    delta = torch.where(ok, 0.5 * (y0 - y2) / torch.where(ok, curve, -1.0), 0.0).clamp(-0.5, 0.5)
    found = torch.isfinite(best)
    lag = torch.where(found, k.to(torch.float64) + delta.to(torch.float64), math.nan)
    return torch.where(found, best, 0.0), lag


def _batches(lengths: Sequence[int], per_item: int, max_elements: int) -> list[range]:
    """Consecutive index ranges whose padded ``count * max_len * per_item`` stays under ``max_elements``."""
    out: list[range] = []
    start = 0
    while start < len(lengths):
        stop, longest = start, 0
        while stop < len(lengths):
            longest2 = max(longest, lengths[stop], 1)
            if stop > start and (stop - start + 1) * longest2 * per_item > max_elements:
                break
            longest = longest2
            stop += 1
        out.append(range(start, stop))
        start = stop
    return out


def score_prompts(
    templates: PromptTemplates, tracks: Sequence[AudioTrack], max_elements: int = DEFAULT_MAX_ELEMENTS
) -> list[list[tuple[float, float | None]]]:
    """Every prompt's best ``(score, start_s)`` in every track, found or not (``start_s`` None: no lag fits).

    Tracks must be at ``templates.sample_rate``. Computation happens on the templates' device; tracks are moved
    there batch by batch.
    """
    rate = templates.sample_rate
    for tr in tracks:
        if tr.sample_rate != rate:
            raise ValueError(f"track at {tr.sample_rate} Hz, templates at {rate} Hz: decode both at one rate")
    device = templates.samples.device
    p_count = len(templates.prompts)
    results: list[list[tuple[float, float | None]]] = [[] for _ in tracks]
    if p_count == 0:
        return results
    lengths = [tr.samples.numel() for tr in tracks]
    for batch in _batches(lengths, p_count, max_elements):
        n = max(max(lengths[i] for i in batch), 1)
        x = torch.zeros((len(batch), n), dtype=torch.float32, device=device)
        for row, i in enumerate(batch):
            x[row, : lengths[i]] = tracks[i].samples.reshape(-1).to(device=device, dtype=torch.float32)
        sl = torch.tensor([lengths[i] for i in batch], dtype=torch.int64, device=device)
        best, lag = peak_lags(normalized_xcorr(x, templates.samples, sl, templates.lengths))
        best, lag = best.cpu().tolist(), lag.cpu().tolist()
        for row, i in enumerate(batch):
            for p in range(p_count):
                k = lag[row][p]
                if math.isnan(k):
                    results[i].append((0.0, None))
                    continue
                # Template sample 0 sits at track sample k; the prompt starts (prompt.start - first_s) after it.
                start = tracks[i].start_s + k / rate + (templates.prompts[p].start - templates.first_s[p])
                results[i].append((float(best[row][p]), start))
    return results


def find_prompts(
    templates: PromptTemplates,
    tracks: Sequence[AudioTrack],
    threshold: float = DEFAULT_THRESHOLD,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> list[Alignment]:
    """Prompts whose best NCC reaches ``threshold`` in each track (one match per prompt: its best place), and the
    best score of the others in ``Alignment.absent``."""
    out = []
    for scored in score_prompts(templates, tracks, max_elements):
        result = Alignment()
        for prompt, (score, start) in zip(templates.prompts, scored, strict=True):
            if start is not None and score >= threshold:
                result.matches.append(PromptMatch(prompt.name, start, start + prompt.duration, score))
            else:
                result.absent[prompt.name] = score
        out.append(result)
    return out


def baseline_templates(
    challenge: Challenge, videos_dir: Path | None = None, rate: int = DEFAULT_RATE, device: str = "cpu"
) -> PromptTemplates:
    """Decode the challenge's baseline at ``rate`` and cut its prompts, on ``device``; ``ConfigError`` if the
    baseline's audio cannot be read (nothing can be aligned without it)."""
    uri = challenge.baseline_uri(videos_dir)
    try:
        baseline = decode_audio(uri, rate)
    except (DecodeError, OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"challenge {challenge.name!r}: cannot read the baseline's audio ({uri}): {exc}") from exc
    return prompt_templates(baseline, challenge.prompts).to(device)


def align_files(
    challenge: Challenge,
    videos: Sequence[Path | str],
    videos_dir: Path | None = None,
    device: str = "cpu",
    threshold: float | None = None,
    rate: int | None = None,
    batch_videos: int = 16,
    log: Callable[[str], None] | None = None,
) -> list[Alignment]:
    """Find the challenge's prompts in each video file; one ``Alignment`` per video, in order.

    ``threshold`` and ``rate`` default to the challenge's ``[align]`` table, then to the module defaults. Videos are
    decoded ``batch_videos`` at a time so memory stays bounded for long lists. A file that cannot be decoded gets
    ``error`` and the others go on; one without audio gets no match. A baseline that cannot be decoded raises
    ``ConfigError``, since nothing can be aligned without it. ``log`` receives one line per absent prompt with its
    best score.
    """
    threshold = challenge.align.threshold if threshold is None else threshold
    rate = challenge.align.rate if rate is None else rate
    if not 0 < threshold < 1:
        raise ConfigError(f"align threshold must be between 0 and 1 (got {threshold})")
    templates = baseline_templates(challenge, videos_dir, rate, device)

    results: list[Alignment] = []
    for lo in range(0, len(videos), max(1, batch_videos)):
        chunk = [str(v) for v in videos[lo : lo + max(1, batch_videos)]]
        tracks: list[AudioTrack] = []
        slots: list[Alignment] = []
        for path in chunk:
            result = Alignment(video=path)
            results.append(result)
            try:
                tracks.append(decode_audio(path, rate))
                slots.append(result)
            except DecodeError as exc:
                if exc.kind == "no_audio":
                    result.has_audio = False
                    result.absent = {p.name: 0.0 for p in challenge.prompts}
                else:
                    result.error = str(exc)
            except (OSError, RuntimeError, ValueError) as exc:  # unreadable path, odd container
                result.error = f"{Path(path).name}: {exc}"
        for slot, found in zip(slots, find_prompts(templates, tracks, threshold), strict=True):
            slot.matches, slot.absent = found.matches, found.absent
        if log is not None:
            for result in results[lo:]:
                if not result.has_audio:
                    log(f"absent {result.video}: no audio stream, so none of the {len(result.absent)} prompts")
                    continue
                for name, score in result.absent.items():
                    log(f"absent {result.video}: prompt {name!r} (best NCC {score:.3f} < {threshold:.2f})")
    return results
