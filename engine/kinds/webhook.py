"""`webhook` callbacks: POST the payload as JSON, signed per Standard Webhooks; 2xx within the timeout is success.

What a webhook may be (its URL, its host, its headers, its secret) is decided in controllers/targets.py, where a
callback is checked when it is written; delivery checks the same rules again with the same parser (the
allow-list may have shrunk, a row may predate the rules), and adds the one check only delivery can make: the
address actually connected to, after DNS resolution, inside the connection itself (GuardedAdapter). A name
that resolves to a loopback or private address is refused at delivery, whatever it resolved to at creation.
Redirects are never followed.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from config import Settings
from controllers.targets import Policy, TargetRefused, ip_or_none, parse_target, policy, webhook_config_problem
from engine.kinds.base import Attempt, AttemptFailed

_local = threading.local()
MAX_BODY_KEPT = 10_000  # characters of a non-JSON (or cut) answer stored as the result
MAX_BODY_READ = 64 * 1024  # bytes of an answer read at most: a huge answer must not fill memory or the row

# -- signing -----------------------------------------------------------------------------------

def webhook_id(event_id: int, attempt: int) -> str:
    """The Standard Webhooks message id of one attempt: stable for that attempt, so a receiver that saw it once
    can drop a redelivery; a later attempt (the earlier one failed, or may have) gets a new one."""
    return f"evt_{event_id}_{attempt}"


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, timezone.utc), body)


# -- connections that check where they connect ---------------------------------------------------

class _Guarded:
    """Mixed into urllib3's connections: resolve the host, and connect only to an address the policy allows.

    This is where the request really goes, so this is where it is checked: the host urllib3 is about to
    connect to must be allowed, and each address DNS gives for it is checked before the connect, so the
    socket's peer is always a checked address (no second lookup an attacker's DNS could answer differently).
    """

    rules: Policy
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        host = self._dns_host.strip("[]")  # type: ignore[attr-defined]
        if not self.rules.host_allowed(host):
            raise TargetRefused(f"host {host!r} is not in WEBHOOK_ALLOWED_HOSTS")
        try:
            found = socket.getaddrinfo(host, self.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        refused: list[str] = []
        error: OSError | None = None
        for family, kind, proto, _canonical, sockaddr in found:
            address = ip_or_none(str(sockaddr[0]).split("%", 1)[0])
            if address is None or not self.rules.address_allowed(address):
                refused.append(str(sockaddr[0]))
                continue
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if self.timeout is None or isinstance(self.timeout, (int, float)):  # else urllib3's "default"
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
            except socket.timeout as exc:
                sock.close()
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                sock.close()
                error = exc
                continue
            peer = ip_or_none(str(sock.getpeername()[0]).split("%", 1)[0])
            if peer is None or not self.rules.address_allowed(peer):  # cannot happen; cheap to be sure
                sock.close()
                raise TargetRefused(f"connected to {peer}, which WEBHOOK_ALLOWED_HOSTS does not allow")
            return sock
        if error is not None:
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}")  # type: ignore[arg-type]
        if refused:
            raise TargetRefused(f"host {host!r} resolved to {', '.join(sorted(set(refused)))}, which "
                                "WEBHOOK_ALLOWED_HOSTS does not allow (only listed addresses, or public ones)")
        raise NewConnectionError(self, "getaddrinfo returned no address")  # type: ignore[arg-type]


def _pool_classes(rules: Policy) -> dict[str, type]:
    http_conn = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), {"rules": rules})
    https_conn = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), {"rules": rules})
    return {"http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn})}


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections check the address they connect to (see _Guarded); no proxies."""

    def __init__(self, rules: Policy) -> None:
        self._rules = rules  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._rules)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        raise TargetRefused("webhooks are not sent through proxies")  # a proxy would connect, not us


def _session(rules: Policy) -> requests.Session:
    """One session per worker thread and policy: keep-alive connections without sharing a session across
    threads; a connection kept alive was checked when it was made."""
    sessions: dict[Policy, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(rules)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # no proxies or .netrc from the environment
        adapter = GuardedAdapter(rules)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        sessions[rules] = session
    return session


# -- delivery --------------------------------------------------------------------------------------

def run(settings: Settings, attempt: Attempt) -> Any:
    rules = policy(settings)
    # Checked again at run time: the allow-list may have shrunk, and a row may predate these checks.
    try:
        target = parse_target(attempt.target)
    except TargetRefused as exc:
        raise AttemptFailed(f"webhook target refused: {exc}") from None
    if not rules.host_allowed(target.host):
        raise AttemptFailed(f"host {target.host!r} is not in WEBHOOK_ALLOWED_HOSTS")
    configured = attempt.config.get("headers") or {}
    problem = webhook_config_problem({"headers": configured})
    if problem:
        raise AttemptFailed(problem)
    if not attempt.secret:
        raise AttemptFailed("this webhook has no signing secret; rotate it (POST /callbacks/<id>/rotate-secret)")
    body = json.dumps(attempt.payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    msg_id, timestamp = webhook_id(attempt.event_id, attempt.attempt), int(time.time())
    headers = dict(configured)
    headers.update({
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(attempt.secret, msg_id, timestamp, body),
        "X-Punctual-Event-Id": str(attempt.event_id),
        "X-Punctual-Attempt": str(attempt.attempt),
        "X-Punctual-Callback": attempt.callback,
    })
    try:
        # Redirects are not followed: a 3xx could lead off the allow-list, so it is a failure.
        with _session(rules).post(target.url, data=body.encode("utf-8"), headers=headers,
                                  timeout=attempt.timeout, allow_redirects=False, stream=True) as response:
            raw, cut = _read_some(response)
    except TargetRefused as exc:
        raise AttemptFailed(f"webhook refused: {exc}") from None
    except requests.Timeout:
        raise AttemptFailed(f"webhook timed out after {attempt.timeout:g} s") from None
    except requests.exceptions.InvalidHeader:
        raise AttemptFailed("webhook request failed: a configured header is not valid") from None
    except requests.RequestException as exc:
        raise AttemptFailed(f"webhook request failed: {type(exc).__name__}: {exc}") from None
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    if not 200 <= response.status_code < 300:
        raise AttemptFailed(f"webhook answered HTTP {response.status_code}: {text[:500]}")
    if cut:
        return {"status": response.status_code, "body": text[:MAX_BODY_KEPT], "truncated": True}
    try:
        answer: Any = json.loads(text) if text else None
    except ValueError:
        answer = text[:MAX_BODY_KEPT]
    return {"status": response.status_code, "body": answer}


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
