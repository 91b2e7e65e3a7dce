"""The one error every configuration problem raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting or a challenge file is wrong; the message says which and how to fix it."""
