"""Settings precedence (flags > env > defaults) and challenge TOML validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.settings import ConfigError, Settings, bundled_challenges, load_challenge, normalize_db_url


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
    assert ch.raw["clustering"]["threshold"] == 0.9  # later stages read their own tables


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('baseline = "b.mp4"', "'name'"),
        ('name = "x"', "'baseline'"),
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
