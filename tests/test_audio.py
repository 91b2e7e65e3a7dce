"""Prompt alignment: NCC against a direct computation, sub-sample peaks, edge cases, and a real-media corpus.

The corpus (benchmarks/make_corpus.py) is built from the shared clips and speech with FFmpeg: the baseline's sound
trimmed, placed at random times under voice-over at 10, 5 and 0 dB SNR and re-encoded as AAC at 44.1 or 48 kHz.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

from engine.config import ConfigError, Prompt, load_challenge, parse_challenge
from engine.media import AudioTrack, probe
from engine.prompts import (
    DEFAULT_THRESHOLD,
    Alignment,
    align_files,
    find_prompts,
    normalized_xcorr,
    peak_lags,
    prompt_templates,
    score_prompts,
)

TOL_S = 0.010  # the acceptance bound on start_s and end_s


def _load_builder():  # noqa: ANN202 - the benchmarks folder is no package: load the builder by path
    if "make_corpus" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_corpus", REPO / "benchmarks" / "make_corpus.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_corpus"] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["make_corpus"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Six participants (every SNR, both rates, trimmed sounds) and one voice-only decoy."""
    root = tmp_path_factory.mktemp("corpus")
    _load_builder().build_corpus(root, n_videos=6, seed=0, n_decoys=1, shared=shared_data)
    return root


@pytest.fixture(scope="module")
def truth(corpus: Path) -> dict:
    return json.loads((corpus / "ground_truth.json").read_text())


@pytest.fixture(scope="module")
def aligned(corpus: Path, truth: dict) -> dict[str, Alignment]:
    names = sorted(truth["videos"])
    results = align_files(load_challenge(corpus / "challenge.toml"), [corpus / n for n in names])
    return dict(zip(names, results, strict=True))


def _errors(found: dict[str, tuple[float, float]], expected: dict) -> list[float]:
    """Alignment errors (s) of every present prompt; fails on a missing present or a reported absent prompt."""
    errors = []
    for name, t in expected.items():
        if t["status"] == "present":
            assert name in found, f"present prompt {name!r} not found"
            start, end = found[name]
            errors += [abs(start - t["start_s"]), abs(end - t["end_s"])]
        elif t["status"] == "absent":
            assert name not in found, f"absent prompt {name!r} reported at {found[name]}"
        # "partial" (cut by the trim): found or not, neither is required.
    return errors


# --- the corpus itself -------------------------------------------------------------------------------------------


def test_corpus_layout_and_variety(corpus: Path, truth: dict) -> None:
    ch = load_challenge(corpus / "challenge.toml")
    assert ch.baseline == "baseline.mp4" and Path(ch.baseline_uri()).is_file()
    assert [(p.name, p.start, p.end) for p in ch.prompts] == [
        (p["name"], p["start"], p["end"]) for p in truth["prompts"]
    ]
    videos = truth["videos"]
    assert len(videos) == 7
    real = [v for v in videos.values() if not v["decoy"]]
    assert {v["snr_db"] for v in real} == {0.0, 5.0, 10.0}
    statuses = [p["status"] for v in real for p in v["prompts"].values()]
    assert "present" in statuses and ("absent" in statuses or "partial" in statuses)
    for name, v in videos.items():
        info = probe(corpus / name)
        assert (info.video.width, info.video.height, info.video.codec) == (720, 1280, "h264")
        assert info.audio is not None and info.audio.sample_rate == v["sample_rate"]
        assert abs(info.audio.start_s) < 1e-3 and v["duration_s"] <= 15.5


def test_corpus_is_deterministic(tmp_path: Path, shared_data: Path, truth: dict) -> None:
    """Same seed, same choices (the encoded bytes may differ across FFmpeg builds; the ground truth may not)."""
    _load_builder().build_corpus(tmp_path, 1, seed=0, n_decoys=0, shared=shared_data)
    again = json.loads((tmp_path / "ground_truth.json").read_text())
    first = "videos/participant_00.mp4"
    assert again["videos"][first]["prompts"] == truth["videos"][first]["prompts"]


# --- end to end on the corpus ------------------------------------------------------------------------------------


def test_corpus_prompts_found_within_10ms(truth: dict, aligned: dict[str, Alignment]) -> None:
    errors = []
    for name, expected in truth["videos"].items():
        result = aligned[name]
        assert result.error is None and result.has_audio
        found = {m.prompt: (m.start_s, m.end_s) for m in result.matches}
        errors += _errors(found, expected["prompts"])
        for m in result.matches:
            assert DEFAULT_THRESHOLD <= m.score <= 1.0
        for score in result.absent.values():
            assert 0.0 <= score < DEFAULT_THRESHOLD or math.isclose(score, 0.0)
    assert len(errors) >= 20
    assert max(errors) <= TOL_S, f"worst alignment error {max(errors) * 1000:.3f} ms"


def test_decoy_reports_no_prompt_but_scores(truth: dict, aligned: dict[str, Alignment]) -> None:
    decoys = [n for n, v in truth["videos"].items() if v["decoy"]]
    assert decoys
    for name in decoys:
        assert aligned[name].matches == []
        assert set(aligned[name].absent) == {p["name"] for p in truth["prompts"]}
        assert all(0 < s < DEFAULT_THRESHOLD for s in aligned[name].absent.values())


def test_cli_align_json(corpus: Path, truth: dict, tmp_path: Path) -> None:
    bad = tmp_path / "not_a_video.mp4"
    bad.write_text("this is text\n")
    names = sorted(truth["videos"])
    res = run_cli(
        "align", "--challenge", str(corpus / "challenge.toml"), *[str(corpus / n) for n in names], str(bad),
        "--json", "--device", "cpu",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert rows and all(set(r) == {"video", "prompt", "start_s", "end_s", "score"} for r in rows)
    for name in names:
        found = {r["prompt"]: (r["start_s"], r["end_s"]) for r in rows if r["video"] == str(corpus / name)}
        errors = _errors(found, truth["videos"][name]["prompts"])
        assert max(errors, default=0.0) <= TOL_S
    assert f"error  {bad}" in res.stderr
    assert "absent" in res.stderr and "best NCC" in res.stderr


def test_cli_align_table_in_process(corpus: Path) -> None:
    """The readable table, through typer's runner (a second subprocess would re-import torch: seconds for nothing)."""
    from typer.testing import CliRunner

    spec = importlib.util.spec_from_file_location("engine_cli", REPO / "cli.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    video = corpus / "videos" / "participant_00.mp4"
    res = CliRunner().invoke(cli.app, ["align", "-c", str(corpus / "challenge.toml"), str(video), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["video", "prompt", "start_s", "end_s", "score"]
    assert [line.split()[1] for line in lines[1:]] == ["opening", "middle", "closing"]


# --- the maths ---------------------------------------------------------------------------------------------------


def _direct_ncc(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``t`` with every full window of ``x``, one window at a time (float64)."""
    m = len(t)
    return np.array([np.corrcoef(x[k : k + m], t)[0, 1] for k in range(len(x) - m + 1)])


def test_ncc_equals_direct_pearson_correlation() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 400, generator=gen) * torch.tensor([[1.0], [30.0]]) + torch.tensor([[0.5], [-2.0]])
    t = torch.randn(3, 50, generator=gen)
    x_len, t_len = torch.tensor([400, 333]), torch.tensor([50, 17, 41])
    got = normalized_xcorr(x, t, x_len, t_len)
    assert got.shape == (2, 3, 400)
    for v in range(2):
        for p in range(3):
            n, m = int(x_len[v]), int(t_len[p])
            ref = _direct_ncc(x[v, :n].double().numpy(), t[p, :m].double().numpy())
            np.testing.assert_allclose(got[v, p, : n - m + 1].numpy(), ref, atol=2e-6)
            assert torch.isneginf(got[v, p, n - m + 1 :]).all()


def test_ncc_finds_a_scaled_noisy_copy() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5000, generator=gen)
    t = x[1234:1834].clone()
    noisy = 0.01 * x + 0.01 * torch.randn(5000, generator=gen)  # quiet copy at 0 dB SNR
    score, lag = peak_lags(normalized_xcorr(noisy[None], t[None]))
    assert round(float(lag)) == 1234
    assert abs(float(score) - 1 / math.sqrt(2)) < 0.05


def test_subsample_refinement() -> None:
    """A band-limited signal shifted by a fractional number of samples: the parabola recovers the fraction."""
    gen = torch.Generator().manual_seed(3)
    freqs = torch.rand(60, generator=gen, dtype=torch.float64) * 0.15  # cycles per sample, well under Nyquist
    phases = torch.rand(60, generator=gen, dtype=torch.float64) * 2 * math.pi

    def signal(times: torch.Tensor) -> torch.Tensor:
        return torch.sin(2 * math.pi * freqs[:, None] * times[None, :] + phases[:, None]).sum(0).float()

    for shift in (700.0, 700.25, 700.5, 700.73):
        x = signal(torch.arange(4000, dtype=torch.float64))
        t = signal(torch.arange(800, dtype=torch.float64) + shift)
        _, lag = peak_lags(normalized_xcorr(x[None], t[None]))
        assert abs(float(lag) - shift) < 0.05, (shift, float(lag))


def test_match_times_follow_the_track_and_baseline_clocks() -> None:
    """start_s is on the video's clock: the track's start_s and the baseline's both count."""
    rate = 8000
    gen = torch.Generator().manual_seed(4)
    sound = torch.randn(3 * rate, generator=gen)
    baseline = AudioTrack(sound, rate, start_s=0.25)
    prompts = [Prompt("a", 0.5, 1.0), Prompt("b", 1.50003, 2.6)]  # b starts between two samples
    track = torch.zeros(5 * rate)
    track[10_000 : 10_000 + 3 * rate] = sound  # baseline sample 0 at track sample 10000
    video = AudioTrack(track, rate, start_s=0.7)
    [result] = find_prompts(prompt_templates(baseline, prompts), [video])
    got = {m.prompt: m for m in result.matches}
    for p in prompts:
        expected = 0.7 + 10_000 / rate + (p.start - 0.25)
        assert abs(got[p.name].start_s - expected) < 1e-6
        assert abs(got[p.name].end_s - (expected + p.duration)) < 1e-6
        assert got[p.name].score > 0.999


# --- edge cases --------------------------------------------------------------------------------------------------


def test_silence_short_tracks_and_silent_templates_give_zero_not_nan() -> None:
    rate = 8000
    gen = torch.Generator().manual_seed(5)
    sound = torch.randn(2 * rate, generator=gen)
    sound[rate : rate + 4000] = 0.0  # a silent stretch in the baseline
    baseline = AudioTrack(sound, rate, 0.0)
    templates = prompt_templates(baseline, [Prompt("loud", 0.1, 0.6), Prompt("quiet", 1.0, 1.4)])
    silent = AudioTrack(torch.zeros(3 * rate), rate, 0.0)
    short = AudioTrack(sound[:1000], rate, 0.0)
    empty = AudioTrack(torch.zeros(0), rate, 0.0)
    scores = score_prompts(templates, [silent, short, empty])
    for per_track in scores:
        for score, _ in per_track:
            assert score == 0.0 and not math.isnan(score)
    assert scores[1][0][1] is None  # the track is shorter than the template: no lag at all
    found = find_prompts(templates, [silent, short, empty, baseline])
    assert [r.matches for r in found[:3]] == [[], [], []]
    assert found[0].absent == {"loud": 0.0, "quiet": 0.0}
    # The silent template matches nothing, even its own place; the loud one is found where it is.
    assert [m.prompt for m in found[3].matches] == ["loud"] and found[3].absent == {"quiet": 0.0}
    assert not torch.isnan(normalized_xcorr(silent.samples[None], templates.samples, None, templates.lengths)).any()
    score, lag = peak_lags(normalized_xcorr(torch.zeros(1, 0), templates.samples))
    assert score.tolist() == [[0.0, 0.0]] and torch.isnan(lag).all()


def test_align_files_without_audio_and_unreadable(corpus: Path, media_dir: Path, bad_inputs: dict[str, Path]) -> None:
    ch = load_challenge(corpus / "challenge.toml")
    good = corpus / "videos" / "participant_00.mp4"
    lines: list[str] = []
    results = align_files(
        ch, [media_dir / "no_audio.mp4", bad_inputs["text_file"], bad_inputs["zero_byte"], good], log=lines.append
    )
    no_audio, text, zero, ok = results
    assert no_audio.error is None and not no_audio.has_audio and no_audio.matches == []
    assert set(no_audio.absent) == {p.name for p in ch.prompts}
    assert text.error and zero.error and text.matches == [] and zero.matches == []
    assert len(ok.matches) == 3 and ok.error is None
    assert any("no audio stream" in line for line in lines)


def test_prompt_outside_baseline_is_a_config_error() -> None:
    baseline = AudioTrack(torch.randn(8000, generator=torch.Generator().manual_seed(0)), 8000, 0.0)
    with pytest.raises(ConfigError, match="outside the baseline"):
        prompt_templates(baseline, [Prompt("late", 2.0, 3.0)])


def test_align_files_rejects_a_bad_align_table(corpus: Path, tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(f'name = "x"\nbaseline = "{corpus / "baseline.mp4"}"\n[align]\nthreshold = 2\n')
    with pytest.raises(ConfigError, match="threshold"):
        align_files(load_challenge(toml), [corpus / "videos" / "participant_00.mp4"])


def test_align_config_validation() -> None:
    base = 'name = "x"\nbaseline = "b.mp4"\n'
    assert parse_challenge(base).align.threshold == DEFAULT_THRESHOLD
    cfg = parse_challenge(base + "[align]\nthreshold = 0.4\nrate = 8000\n").align
    assert (cfg.threshold, cfg.rate) == (0.4, 8000)
    for bad, word in (
        ("[align]\nthreshold = 1.5\n", "threshold"),
        ('[align]\nthreshold = "high"\n', "threshold"),
        ("[align]\nrate = 16000.5\n", "rate"),
        ("[align]\nthreshhold = 0.3\n", "unknown"),
        ('align = "yes"\n', "table"),
    ):
        with pytest.raises(ConfigError, match=word):
            parse_challenge(base + bad)
