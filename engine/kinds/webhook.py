"""`webhook` callbacks: POST the payload as JSON to an allow-listed URL, signed per Standard Webhooks; 2xx within
the timeout is success.

Where a delivery may go (docs/webhooks.md, "Where deliveries may go") is checked twice, on the same parse:
- the URL, with urllib3's parser (the one requests uses to make the request), refusing anything two parsers could
  read differently: backslashes, userinfo, whitespace, control or non-ASCII characters, other schemes;
- the address actually connected to, after DNS resolution, inside the connection itself (GuardedAdapter): a name
  that resolves to a loopback or private address is refused at delivery, whatever it resolved to at creation.
Redirects are never followed.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import socket
import threading
import time
from base64 import b64decode, b64encode
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Union

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NameResolutionError, NewConnectionError
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

from config import Settings
from engine.kinds.base import Attempt, AttemptFailed

log = logging.getLogger("punctual.webhook")

_local = threading.local()
MAX_BODY_KEPT = 10_000  # characters of a non-JSON (or cut) answer stored as the result
MAX_BODY_READ = 64 * 1024  # bytes of an answer read at most: a huge answer must not fill memory or the row

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# -- signing secrets ---------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64 random bytes
REDACTED = "***"


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks format: whsec_ + base64 of 32 random bytes."""
    return SECRET_PREFIX + b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_problem(secret: str) -> str | None:
    """Why a client-supplied signing secret is unusable, or None. Never echoes the secret."""
    if not secret.startswith(SECRET_PREFIX):
        return f"signing_secret must start with {SECRET_PREFIX!r} followed by base64 (24 to 64 bytes)"
    try:
        key = b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except ValueError:
        return f"signing_secret must be {SECRET_PREFIX!r} followed by valid base64"
    if not 24 <= len(key) <= 64:
        return f"signing_secret must encode 24 to 64 bytes (it encodes {len(key)})"
    return None


def webhook_id(event_id: int, attempt: int) -> str:
    """The Standard Webhooks message id of one attempt: stable for that attempt, so a receiver that saw it once
    can drop a redelivery; a later attempt (the earlier one failed, or may have) gets a new one."""
    return f"evt_{event_id}_{attempt}"


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, timezone.utc), body)


# -- the URL -------------------------------------------------------------------------------------

class TargetRefused(Exception):
    """The destination is not allowed. Not an OSError on purpose: urllib3 and requests let it through untouched
    (no retry, no wrapping), so the attempt fails with this message."""


@dataclass(frozen=True)
class Target:
    """A webhook URL as urllib3 reads it; `url` is what the request is made to."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 literal without its brackets
    port: int | None


_PRINTABLE = re.compile(r"[!-~]+")  # printable ASCII without space: anything else must be percent-encoded
_SCHEME = re.compile(r"https?://", re.IGNORECASE)


def parse_target(url: str) -> Target:
    """Read a webhook URL with urllib3's parser, the one requests makes the request with.

    Refused: whatever two URL parsers could read differently, the cause of the allow-list bypass of issue 10
    (`http://127.0.0.2:5099\\@127.0.0.1/` was checked as 127.0.0.1 by urlsplit and called at 127.0.0.2).
    :raise TargetRefused: with the reason.
    """
    if not isinstance(url, str) or not _PRINTABLE.fullmatch(url):
        raise TargetRefused("a webhook URL must be printable ASCII without spaces or control characters "
                            "(percent-encode the rest; international host names in their xn-- form)")
    if "\\" in url:
        raise TargetRefused("a webhook URL must not contain a backslash")
    if not _SCHEME.match(url):
        raise TargetRefused("a webhook callback needs an http(s) URL as its target")
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.fragment is not None:
        raise TargetRefused("a webhook URL must not have a fragment (#...): it is never sent")
    if parts.auth is not None:
        raise TargetRefused("a webhook URL must not contain user information (user:password@)")
    host = (parts.host or "").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise TargetRefused("a webhook callback needs an http(s) URL with a host")
    if "%" in host:
        raise TargetRefused("a webhook URL's host must not carry a zone id or percent-encoding")
    if parts.port == 0:
        raise TargetRefused("a webhook URL's port must be between 1 and 65535")
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise TargetRefused("a webhook callback needs an http(s) URL as its target")
    return Target(url=parts.url, scheme=scheme, host=host, port=parts.port)


# -- the address policy ------------------------------------------------------------------------

def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unmapped(address: IPAddress) -> IPAddress:
    """::ffff:127.0.0.1 is 127.0.0.1 on the wire: judge it as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def routable(address: IPAddress) -> bool:
    """Globally routable: not loopback, private, link-local, shared (CGNAT), reserved, documentation,
    unspecified or multicast."""
    address = _unmapped(address)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class Policy:
    """WEBHOOK_ALLOWED_HOSTS, read once. See docs/webhooks.md for the rules in words."""

    any_name: bool
    names: frozenset[str]
    suffixes: tuple[str, ...]  # from "*.example.com" entries, as ".example.com"
    networks: tuple[IPNetwork, ...]

    def listed_address(self, address: IPAddress) -> bool:
        address = _unmapped(address)
        return any(address.version == net.version and address in net for net in self.networks)

    def host_allowed(self, host: str) -> bool:
        """The URL's host (a name or an IP literal) may be called."""
        host = host.lower().strip("[]")
        address = _ip(host)
        if address is not None:
            return self.listed_address(address) or (self.any_name and routable(address))
        return self.any_name or host in self.names or any(host.endswith(s) for s in self.suffixes)

    def address_allowed(self, address: IPAddress) -> bool:
        """An address a connection may be made to: listed (as an address or network), or globally routable."""
        return self.listed_address(address) or routable(address)


@lru_cache(maxsize=16)
def policy_of(entries: tuple[str, ...]) -> Policy:
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[IPNetwork] = []
    any_name = False
    for raw in entries:
        entry = raw.strip().lower()
        if entry == "*":
            any_name = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if entry.startswith("*.") and re.fullmatch(r"[a-z0-9.-]+", entry[2:]):
            suffixes.append(entry[1:])
        elif re.fullmatch(r"[a-z0-9._-]+", entry):
            names.add(entry)
        else:
            # Ignored, not fatal: an entry we cannot read allows nothing, which is the safe reading.
            log.warning("WEBHOOK_ALLOWED_HOSTS entry %r is not a host name, IP address or network; ignored", raw)
    return Policy(any_name, frozenset(names), tuple(suffixes), tuple(networks))


def policy(settings: Settings) -> Policy:
    return policy_of(tuple(settings.webhook_allowed_hosts))


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
            address = _ip(str(sockaddr[0]).split("%", 1)[0])
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
            peer = _ip(str(sock.getpeername()[0]).split("%", 1)[0])
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


# -- configuration checks ------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type",
                              "webhook-id", "webhook-timestamp", "webhook-signature"})


def header_problem(name: Any, value: Any) -> str | None:
    """Why a configured header cannot be sent, or None. Names the header, never its value (it may be secret)."""
    shown = repr(name)[:60]
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        return f"config.headers: {shown} is not a valid header name"
    if name.lower() in RESERVED_HEADERS or name.lower().startswith("x-punctual-"):
        return f"config.headers: {shown} is set by Punctual and cannot be configured"
    if not isinstance(value, str):
        return f"config.headers: the value of {shown} must be a string"
    if "\r" in value or "\n" in value or "\x00" in value:
        return f"config.headers: the value of {shown} contains CR, LF or NUL (header injection)"
    if value[:1].isspace() or value[-1:].isspace():
        return f"config.headers: the value of {shown} must not start or end with whitespace"
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        return f"config.headers: the value of {shown} contains a control character"
    return None


def config_problem(config: dict[str, Any]) -> str | None:
    """Why a webhook's config cannot be used, or None."""
    headers = config.get("headers", {})
    if not isinstance(headers, dict):
        return "config.headers must be an object of strings"
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            return problem
    return None


def host_allowed(settings: Settings, url: str) -> bool:
    """Whether the URL parses (see parse_target) and its host is allowed; the address is checked at delivery."""
    try:
        return policy(settings).host_allowed(parse_target(url).host)
    except TargetRefused:
        return False


def validate_target(settings: Settings, target: str, config: dict[str, Any]) -> str | None:
    """Why this URL cannot be a webhook's target, or None (config is checked by config_problem)."""
    try:
        parsed = parse_target(target)
    except TargetRefused as exc:
        return str(exc)
    if not policy(settings).host_allowed(parsed.host):
        return f"host {parsed.host!r} is not in WEBHOOK_ALLOWED_HOSTS"
    return None


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
    problem = config_problem({"headers": configured})
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
