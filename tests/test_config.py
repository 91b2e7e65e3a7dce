"""Settings precedence (flags > env > defaults) and challenge TOML validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import (
    AlignSettings,
    ClusterSettings,
    ConfigError,
    FaceSettings,
    ManualBreak,
    ManualMerge,
    Settings,
    bundled_challenges,
    device,
    environment,
    load_challenge,
    normalize_db_url,
    parse_challenge,
    resolve_device,
)


def test_demo_is_bundled_and_valid() -> None:
    assert "demo" in bundled_challenges()
    ch = load_challenge("demo")
    assert ch.name == "demo" and ch.path is None
    assert [p.name for p in ch.prompts] == ["opening", "verse"]
    assert all(p.end > p.start for p in ch.prompts)


def test_bundled_baseline_is_found_in_videos_folder(shared_videos: Path) -> None:
    uri = load_challenge("demo").baseline_uri(shared_videos)
    assert Path(uri) == (shared_videos / "short_hamilton_clip.mp4").resolve()


def test_challenge_file_relative_baseline_and_extra_keys(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        'name = "face_challenge"\nbaseline = "base.mp4"\n[[prompts]]\nname = "happy"\nstart = 4.0\n'
        "end = 8.5\n[clustering]\nthreshold = 0.9\n"
    )
    (tmp_path / "base.mp4").write_bytes(b"x")
    ch = load_challenge(f)
    assert ch.prompts[0].duration == pytest.approx(4.5)
    assert ch.baseline_uri() == str((tmp_path / "base.mp4").resolve())
    assert ch.cluster.threshold == 0.9  # the optional tables are parsed with the challenge


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('baseline = "b.mp4"', "'name'"),
        # A baseline is needed only for prompts (a challenge without any runs faces only: test_faces_only.py).
        ('name = "x"\n[[prompts]]\nname = "p"\nstart = 0\nend = 2', "'baseline' is missing"),
        ('name = "x"\nbaseline = 3', "'baseline'"),
        ('name = "x"\nbaseline = "b"\n[[prompts]]\nname = "p"\nstart = 5\nend = 2', "start < end"),
        ('name = "x"\nbaseline = "b"\n[[prompts]]\nname = "p"\nstart = 1', "lacks 'end'"),
        (
            'name = "x"\nbaseline = "b"\n[[prompts]]\nname = "p"\nstart = 1\nend = 2\n[[prompts]]\nname = "p"\n'
            "start = 3\nend = 4",
            "unique",
        ),
        ('name = "../evil"\nbaseline = "b"', "path separators"),
        ("name = ", "not valid TOML"),
    ],
)
def test_bad_challenges_say_what_is_wrong(tmp_path: Path, text: str, fragment: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        load_challenge(f)


def test_unknown_challenge_lists_bundled() -> None:
    with pytest.raises(ConfigError, match="demo"):
        load_challenge("no_such_challenge")


def test_precedence_flags_env_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ENGINE_DB_URL", "ENGINE_STORE_URL", "ENGINE_RUNTYPE", "ENGINE_DEVICE", "ENGINE_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    s = Settings.load("demo")
    assert s.db_url == "sqlite:///runs/demo/engine.db"
    assert s.store_url == str(Path("runs/demo/objects"))
    assert (s.runtype, s.device, s.max_videos) == ("test", "cpu", 4)

    monkeypatch.setenv("ENGINE_DB_URL", "sqlite:///env.db")
    monkeypatch.setenv("ENGINE_RUNTYPE", "prod")
    monkeypatch.setenv("ENGINE_DEVICE", "cpu")
    s = Settings.load("demo")
    assert (s.db_url, s.runtype, s.max_videos) == ("sqlite:///env.db", "prod", None)

    s = Settings.load("demo", db_url="sqlite:///flag.db", runtype="test", store_url=str(tmp_path))
    assert (s.db_url, s.runtype, s.store_url) == ("sqlite:///flag.db", "test", str(tmp_path))


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="runtype"):
        Settings.load("demo", runtype="fast")
    with pytest.raises(ConfigError, match="device"):
        Settings.load("demo", device="tpu")


def test_postgres_urls_use_the_installed_driver() -> None:
    assert normalize_db_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert normalize_db_url("postgres://u@h/db").startswith("postgresql+psycopg://")
    assert normalize_db_url("sqlite:///x.db") == "sqlite:///x.db"


# ------------------------------------------------------------------------ typed sections, parsed with the challenge


BASE = 'name = "c"\nbaseline = "b.mp4"\n'


def test_sections_default_when_absent() -> None:
    ch = parse_challenge(BASE)
    assert (ch.faces, ch.align, ch.logo, ch.cluster, ch.videos) == (
        FaceSettings(),
        AlignSettings(),
        None,
        ClusterSettings(),
        None,
    )
    assert parse_challenge(BASE + 'videos = "clips/"\n').videos == "clips/"
    with pytest.raises(ConfigError, match="'videos' must be"):
        parse_challenge(BASE + "videos = 3\n")


def test_faces_table() -> None:
    faces = parse_challenge(BASE + "[faces]\nlong_side = 0\nthreshold = 0.7\nrotate = false\njpeg_quality = 80\n").faces
    assert faces == FaceSettings(long_side=0, threshold=0.7, rotate=False, jpeg_quality=80)
    for bad, fragment in (
        ('faces = "big"\n', "challenge 'c' \\[faces\\] must be a table"),
        ("[faces]\nsize = 3\n", "unknown key\\(s\\) size"),
        ("[faces]\nlong_side = 16\n", "long_side must be 0"),
        ("[faces]\nthreshold = 1\n", "threshold must be a number between 0 and 1"),
        ("[faces]\njpeg_quality = 101\n", "jpeg_quality must be an integer 1..100"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            parse_challenge(BASE + bad)


def test_clustering_table_manual_breaks_and_merges() -> None:
    cluster = parse_challenge(
        BASE + "[clustering]\nthreshold = 0.8\npair_threshold = 0.6\n"
        "confident_magnitude = 9\nunreadable_magnitude = 4.5\n"
        'manual_breaks = [{ video = "a.mp4", track = 2, at_s = 1.5 },'
        ' { video = "ABCDEF01", track = 0, at_s = 3 }]\n'
        'manual_merges = [{ video_a = "a.mp4", track_a = 1, video_b = "b.mp4", track_b = 0 }]\n'
        'keep_apart = [{ video_a = "a.mp4", track_a = 2, video_b = "a.mp4", track_b = 3 }]\n'
    ).cluster
    assert (cluster.threshold, cluster.pair_threshold, cluster.floor, cluster.min_quality) == (0.8, 0.6, None, None)
    assert cluster.threshold_for(0.5) == 0.8 and cluster.pair_threshold_for(0.4) == 0.6
    assert cluster.confident_magnitude == 9.0 and ClusterSettings().confident_magnitude is None
    assert cluster.unreadable_magnitude == 4.5
    assert cluster.floor_for(0.6) == pytest.approx(0.52)  # the pair threshold minus the margin
    assert ClusterSettings().threshold_for(0.5) == 0.5  # absent: the embedder's own threshold
    assert ClusterSettings().pair_threshold_for(0.4) == 0.4
    assert cluster.manual_merges == (ManualMerge("a.mp4", 1, "b.mp4", 0),)
    assert cluster.keep_apart == (ManualMerge("a.mp4", 2, "a.mp4", 3),)
    assert cluster.manual_breaks[0] == ManualBreak("a.mp4", 2, 1.5)
    assert cluster.breaks_for("a.mp4", "ff" * 32) == [(2, 1.5)]
    assert cluster.breaks_for("b.mp4", "abcdef01" + "0" * 56) == [(0, 3.0)]  # sha256 prefix, any case
    for bad, fragment in (
        ("clustering = 1\n", "\\[clustering\\] must be a table"),
        ("[clustering]\nfloors = 1\n", "unknown key\\(s\\) floors"),
        ("[clustering]\nthreshold = 2\n", "threshold must be a number between -1 and 1"),
        ("[clustering]\nmin_quality = 1.5\n", "min_quality must be a number between 0 and 1"),
        ("[clustering]\nconfident_magnitude = -1\n", "confident_magnitude must be a number between 0 and 1e"),
        ('[clustering]\nmanual_merges = [{ video_a = "a.mp4" }]\n', "manual_merges\\[0\\] must be"),
        ("[clustering]\npair_threshold = 0.9\nfloor = 0.95\n", "must not exceed pair_threshold"),
        ("[clustering]\npair_threshold = 1.5\n", "pair_threshold must be a number between -1 and 1"),
        ('[clustering]\nmanual_breaks = [{ video = "a.mp4" }]\n', "manual_breaks\\[0\\] must be"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            parse_challenge(BASE + bad)


def test_align_errors_name_the_file_or_the_challenge(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^challenge 'c': \\[align\\] threshold"):
        parse_challenge(BASE + "[align]\nthreshold = 2\n")
    f = tmp_path / "c.toml"
    f.write_text(BASE + "[align]\nrate = 10\n")
    with pytest.raises(ConfigError, match=f"^{f.resolve()}: \\[align\\] rate"):
        load_challenge(f)


# ------------------------------------------------------------------------------------- the device, the environment


def test_device_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    gpu = torch.cuda.is_available()
    visible = "cuda" if gpu else "cpu"
    assert resolve_device("auto") == visible and resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not gpu:
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")
    # Outside an executor worker, "worker" keeps what was asked (auto resolved); "process" falls back to the CPU.
    assert (resolve_device("cuda", "worker"), resolve_device("auto", "worker")) == ("cuda", visible)
    assert (resolve_device("cuda", "process"), resolve_device("cpu", "process")) == (visible, "cpu")
    # Inside a worker, the executor's answer wins over what the driver asked.
    monkeypatch.setattr(device, "_worker_gpu", False)
    assert resolve_device("cuda", "worker") == "cpu" == resolve_device("auto", "process")
    monkeypatch.setattr(device, "_worker_gpu", True)
    assert resolve_device("cpu", "worker") == "cuda"
    assert resolve_device("cpu", "process") == visible


def test_environment_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENGINE_WEIGHTS_MIRROR", "")
    assert environment.weights_mirror() is None and environment.read("ENGINE_WEIGHTS_MIRROR") is None
    monkeypatch.setenv("ENGINE_WEIGHTS_MIRROR", str(tmp_path))
    assert environment.weights_mirror() == tmp_path
    assert Settings.load("demo", resolve=False).weights_mirror == tmp_path
    assert Settings.load("demo", weights_mirror="elsewhere", resolve=False).weights_mirror == Path("elsewhere")
    monkeypatch.setenv("ENGINE_COMPILE", "1")
    monkeypatch.setenv("ENGINE_MALLOC_TUNE", "0")
    assert environment.compile_enabled() and not environment.malloc_tune_enabled()
    monkeypatch.delenv("ENGINE_COMPILE")
    monkeypatch.delenv("ENGINE_MALLOC_TUNE")
    assert not environment.compile_enabled() and environment.malloc_tune_enabled()
