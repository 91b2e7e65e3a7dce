"""Webhook delivery: an alert POSTed as JSON, transient failures retried with exponential back-off.

Redirects are not followed: urllib would follow a 302 as a GET without the body, the receiver would answer 200 to
that, and the alert would count as delivered though nobody received it. A 3xx is an undelivered alert whose error
says where the webhook points to, so the operator can configure the final URL.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.redact import redact_text

#: Webhook requests per alert and poll, and the first back-off delay (doubled after each failure, capped).
WEBHOOK_ATTEMPTS = 5
WEBHOOK_BASE_DELAY_S = 1.0
WEBHOOK_MAX_DELAY_S = 60.0
WEBHOOK_TIMEOUT_S = 10.0
#: HTTP statuses worth retrying besides 5xx: the receiver timed out or asked us to slow down.
RETRY_STATUSES = frozenset({408, 429})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every redirect into an ``HTTPError`` (urllib raises one when no handler takes the 3xx)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass(frozen=True)
class Delivery:
    """How one alert's webhook delivery ended: ``ok`` after ``attempts`` requests, else the last ``error``."""

    ok: bool
    attempts: int
    error: str | None = None


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = WEBHOOK_ATTEMPTS,
    base_delay_s: float = WEBHOOK_BASE_DELAY_S,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
    sleep: Callable[[float], Any] = time.sleep,
) -> Delivery:
    """POST ``payload`` as JSON; retry transient failures with exponential back-off (``base``, 2×, 4×...).

    Transient: no connection, a timeout, a broken response, 5xx, 408 or 429: the receiver may be restarting or
    overloaded, and waiting longer each time lets it recover without being hammered. Any other 4xx means the
    receiver refuses this request as it is, so it is not repeated now (the monitor tries again at its next poll);
    so is a redirect (3xx), which is not followed (see the module's docstring).
    """
    body = json.dumps(payload).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "faceengine-monitor/0.1"}
    error = "no attempt made"
    for n in range(1, max(1, attempts) + 1):
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with _OPENER.open(request, timeout=timeout_s) as response:
                response.read()
            return Delivery(True, n)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code} {exc.reason}"
            if 300 <= exc.code < 400:
                where = redact_text(exc.headers.get("Location") or "nowhere") if exc.headers else "nowhere"
                return Delivery(
                    False, n, f"{error}: the webhook redirects to {where}; redirects are not followed (give that URL)"
                )
            if exc.code < 500 and exc.code not in RETRY_STATUSES:
                return Delivery(False, n, f"{error} (a client error: not repeated)")
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            error = f"{type(exc).__name__}: {reason}"
        if n < attempts:
            sleep(min(base_delay_s * 2 ** (n - 1), WEBHOOK_MAX_DELAY_S))
    return Delivery(False, attempts, error)
