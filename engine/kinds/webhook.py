"""`webhook` callbacks: POST the payload as JSON to an allow-listed URL; 2xx within the timeout is success."""
from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import urlsplit

import requests

from config import Settings
from engine.kinds.base import Attempt, AttemptFailed

_local = threading.local()
MAX_BODY_KEPT = 10_000  # characters of a non-JSON (or cut) answer stored as the result
MAX_BODY_READ = 64 * 1024  # bytes of an answer read at most: a huge answer must not fill memory or the row


def _session() -> requests.Session:
    """One session per worker thread: keep-alive connections without sharing a session across threads."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # no proxies from the environment: the allow-list names real hosts
        _local.session = session
    return session


def host_allowed(settings: Settings, url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    allowed = {h.lower() for h in settings.webhook_allowed_hosts}
    return "*" in allowed or host in allowed


def validate_target(settings: Settings, target: str, config: dict[str, Any]) -> str | None:
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "a webhook callback needs an http(s) URL as its target"
    if not host_allowed(settings, target):
        return f"host {parts.hostname!r} is not in WEBHOOK_ALLOWED_HOSTS"
    headers = config.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return "config.headers must be an object of strings"
    return None


def run(settings: Settings, attempt: Attempt) -> Any:
    # Checked again at run time: the allow-list may have shrunk since the callback was made.
    if not host_allowed(settings, attempt.target):
        raise AttemptFailed(f"host of {attempt.target!r} is not in WEBHOOK_ALLOWED_HOSTS")
    headers = {str(k): str(v) for k, v in (attempt.config.get("headers") or {}).items()}
    headers.update({
        "X-Punctual-Event-Id": str(attempt.event_id),
        "X-Punctual-Attempt": str(attempt.attempt),
        "X-Punctual-Callback": attempt.callback,
    })
    try:
        # Redirects are not followed: a 3xx could lead off the allow-list, so it is a failure.
        with _session().post(attempt.target, json=attempt.payload, headers=headers, timeout=attempt.timeout,
                             allow_redirects=False, stream=True) as response:
            raw, cut = _read_some(response)
    except requests.Timeout:
        raise AttemptFailed(f"webhook timed out after {attempt.timeout:g} s") from None
    except requests.RequestException as exc:
        raise AttemptFailed(f"webhook request failed: {type(exc).__name__}: {exc}") from None
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    if not 200 <= response.status_code < 300:
        raise AttemptFailed(f"webhook answered HTTP {response.status_code}: {text[:500]}")
    if cut:
        return {"status": response.status_code, "body": text[:MAX_BODY_KEPT], "truncated": True}
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = text[:MAX_BODY_KEPT]
    return {"status": response.status_code, "body": body}


def _read_some(response: requests.Response) -> tuple[bytes, bool]:
    """At most MAX_BODY_READ bytes of the answer, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(8192):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_READ:
            return b"".join(chunks)[:MAX_BODY_READ], True
    return b"".join(chunks), False
