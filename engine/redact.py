"""Secrets out of everything the engine shows or stores: the userinfo of URLs and the values of secret-named keys.

A URL list may name ``http://user:password@host/x.mp4``, a database URL carries its password, an S3 endpoint may
carry keys: the engine needs them to fetch and connect, but its log lines, ``video_errors`` rows, ``runs.settings``
and monitor rows are read by people who must not learn them. Every place that prints or stores a URL, or a message
that may quote one (an exception's text), passes it through :func:`redact_text` here, one rule for the whole engine.
This module imports nothing from the engine, so every room may use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: What replaces a password (and a bare userinfo, often a token): SQLAlchemy's ``hide_password`` writes the same.
MASK = "***"

# scheme://userinfo@ where userinfo runs to the authority's last "@" (the authority ends at / ? # or white space,
# so the "@" of a path such as tiktok.com/@someone is never taken for one).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*)@")

#: Keys whose values are secrets wherever they appear in a stored mapping (S3 keys, tokens, passwords).
_SECRET_KEY = re.compile(r"secret|password|passwd|token|access_key|credential|api_key", re.IGNORECASE)


def _mask(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    kept = f"{user}:{MASK}" if colon else MASK  # user:password keeps the user; a lone userinfo may be a token
    return f"{match['scheme']}{kept}@"


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it masked (``http://user:***@host/...``); other text unchanged.

    Works on one URL or on a whole message that quotes URLs (``cannot download http://u:p@h/x.mp4: ...``).
    """
    if "://" not in text or "@" not in text:
        return text
    return _USERINFO.sub(_mask, text)


def redact_value(value: Any) -> Any:
    """``value`` with secrets masked: strings as :func:`redact_text`, mappings and lists walked (see
    :func:`redact_mapping`), anything else as it is."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` safe to store or print: a secret-named key's value (``aws_secret_access_key``,
    ``password``, ``token``...) becomes ``***`` whole, every other string has its URLs' passwords masked."""
    return {
        key: (MASK if value not in (None, "") and _SECRET_KEY.search(str(key)) else redact_value(value))
        for key, value in values.items()
    }
