"""Configuration, read once at the edge: the challenge, the run settings, the environment and the device.

* :mod:`engine.config.challenge`: :class:`Challenge` (and its :class:`Prompt`), parsed from a TOML file by
  :func:`load_challenge` / :func:`parse_challenge` with every optional table validated into a typed section of
  :mod:`engine.config.sections` (``challenge.faces``, ``.align``, ``.logo``, ``.cluster``) at the same time.
* :mod:`engine.config.settings`: :class:`Settings`, from flags, then ``ENGINE_*`` variables, then defaults.
* :mod:`engine.config.environment`: the only module that reads (or writes) the process environment.
* :mod:`engine.config.device`: :func:`resolve_device`, the one answer to what ``auto`` and ``cuda`` mean.

Nothing here imports a stage (``engine.faces``, ``engine.pipeline``...): stages import their settings from here.
Every problem is a :class:`ConfigError` whose message says what to fix.
"""

from engine.config.challenge import Challenge, Prompt, bundled_challenges, faces_only, load_challenge, parse_challenge
from engine.config.device import DEVICES, resolve_device
from engine.config.errors import ConfigError
from engine.config.sections import (
    AlignSettings,
    ClusterSettings,
    FaceSettings,
    LogoSettings,
    ManualBreak,
    ManualMerge,
)
from engine.config.settings import EXECUTORS, RUNTYPES, Settings, normalize_db_url

__all__ = [
    "DEVICES",
    "EXECUTORS",
    "RUNTYPES",
    "AlignSettings",
    "Challenge",
    "ClusterSettings",
    "ConfigError",
    "FaceSettings",
    "LogoSettings",
    "ManualBreak",
    "ManualMerge",
    "Prompt",
    "Settings",
    "bundled_challenges",
    "faces_only",
    "load_challenge",
    "normalize_db_url",
    "parse_challenge",
    "resolve_device",
]
