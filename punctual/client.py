"""A small client for Punctual's HTTP API, as an application would use it.

    from punctual.client import Client

    with Client("http://127.0.0.1:5000", token="...") as punctual:
        event = punctual.create("Addition", {"x": 1, "y": 2})
        ids = punctual.create_batch([{"callback": "noop", "payload": {}} for _ in range(1000)])
        run = punctual.start_workflow("trip", {"trip": "t1", "city": "Lisbon"}, id="trip-t1")

Why it exists: what every caller otherwise writes again. Keep-alive connections (a new TCP connection per
request costs more than the request); batches answered with ids only (`Prefer: return=minimal`); and retries
where they are safe: a 503 (the database or the server is away for a moment) is retried after its Retry-After,
a bounded number of times, since Punctual answers 503 only for work it did not do; a request whose answer was
lost on the way (the connection dropped) is retried only when repeating it cannot make a second event: a read,
or a creation with an idempotency_key or a workflow id. Such a loss, once retries are spent or not allowed,
raises PunctualUnreachable (a ConnectionError).

Why urllib3 and not requests (which is built on it): a request through a requests.Session cost 1.1 ms more than
the same request through urllib3's pool on the benchmark machine (bench/RESULTS.md, W3), for what this client does
not use (cookies, redirects, hooks, proxies from the environment). orjson writes and reads the bodies.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Optional

import orjson
import urllib3
from urllib3.exceptions import HTTPError as TransportError

__all__ = ["Client", "PunctualError", "PunctualUnreachable"]

RETRYABLE_STATUS = 503
MAX_RETRY_AFTER = 30.0  # a longer Retry-After than this is capped: the caller's own deadline matters more


class PunctualError(Exception):
    """An answer other than success: the API's JSON error body, as `code`, `message` and `details`."""

    def __init__(self, status: int, code: str, message: str, details: Optional[dict[str, Any]] = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class PunctualUnreachable(ConnectionError):
    """No answer came: the connection could not be made, dropped, or timed out (after the retries allowed)."""


class Client:
    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.2, pool: Optional[urllib3.PoolManager] = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        # urllib3's own retries and redirects are off: what may be repeated is decided in _call, per request.
        self.pool = pool or urllib3.PoolManager(maxsize=4, retries=False)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.pool.clear()

    # -- events -------------------------------------------------------------------------------

    def create(self, callback: str | int, payload: Optional[Mapping[str, Any]] = None,
               scheduled_for: Optional[datetime] = None, **fields: Any) -> dict[str, Any]:
        """Schedule one event (now unless `scheduled_for`, an aware datetime); its row."""
        body = _event(callback, payload, scheduled_for, fields)
        return self._call("POST", "/events", body, safe=bool(body.get("idempotency_key")))

    def create_batch(self, events: Iterable[Mapping[str, Any]], minimal: bool = True) -> list[Any]:
        """Schedule many events in one transaction, all or none: their ids (`minimal`) or their rows.
        Each item is a dict as POST /events takes it (callback, payload, scheduled_for, ...)."""
        items = [dict(item) for item in events]
        for item in items:
            if isinstance(item.get("scheduled_for"), datetime):
                item["scheduled_for"] = _instant(item["scheduled_for"])
        safe = bool(items) and all(item.get("idempotency_key") for item in items)
        headers = {"Prefer": "return=minimal"} if minimal else None
        answer = self._call("POST", "/events/batch", {"events": items}, safe=safe, headers=headers)
        return answer["ids"] if minimal else answer["events"]

    def get(self, event_id: int) -> dict[str, Any]:
        """An event with its history."""
        return self._call("GET", f"/events/{event_id}", safe=True)

    def cancel(self, event_id: int) -> dict[str, Any]:
        return self._call("POST", f"/events/{event_id}/cancel", safe=True)

    # -- workflows ------------------------------------------------------------------------------

    def start_workflow(self, name: str, input: Any = None, id: Optional[str] = None) -> dict[str, Any]:
        """Start a workflow; with `id`, a repeat answers the same workflow (and so is retried safely)."""
        body: dict[str, Any] = {"workflow": name, "input": input}
        if id is not None:
            body["id"] = id
        return self._call("POST", "/workflows", body, safe=id is not None)

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        return self._call("GET", f"/workflows/{workflow_id}", safe=True)

    def signal(self, workflow_id: str, name: str, value: Any = None) -> dict[str, Any]:
        """Send a signal. Not retried after a lost answer: a second one would be a second signal."""
        return self._call("POST", f"/workflows/{workflow_id}/signals/{name}", {"value": value}, safe=False)

    # -- the one request path ---------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, safe: bool = False,
              headers: Optional[dict[str, str]] = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        sent = {**self.headers, **headers} if headers else self.headers
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.pool.request(method, self.url + path, body=data, headers=sent, redirect=False,
                                             retries=False, timeout=self.timeout)
            except TransportError as exc:
                # The request may have been done and only its answer lost: repeat only what cannot double.
                if not safe or attempt > self.retries:
                    raise PunctualUnreachable(f"{method} {path}: no answer from {self.url} ({exc})") from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            if response.status == RETRYABLE_STATUS and attempt <= self.retries:
                time.sleep(_retry_after(response, self.backoff * 2 ** (attempt - 1)))
                continue
            if response.status >= 400:
                raise _error(response)
            return orjson.loads(response.data) if response.data else None


def _event(callback: str | int, payload: Optional[Mapping[str, Any]], scheduled_for: Optional[datetime],
           fields: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"callback": callback, "payload": dict(payload or {}), **fields}
    if scheduled_for is not None:
        body["scheduled_for"] = _instant(scheduled_for)
    return body


def _instant(when: datetime) -> str:
    if when.tzinfo is None:
        raise ValueError("scheduled_for must be an aware datetime (a naive one is ambiguous; Punctual refuses it)")
    return when.isoformat()


def _retry_after(response: urllib3.BaseHTTPResponse, default: float) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "")), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return default


def _error(response: urllib3.BaseHTTPResponse) -> PunctualError:
    try:
        error = orjson.loads(response.data)["error"]
        return PunctualError(response.status, error["code"], error["message"], error.get("details"))
    except (ValueError, KeyError, TypeError):
        return PunctualError(response.status, "http_error", response.data[:500].decode("utf-8", "replace"))
