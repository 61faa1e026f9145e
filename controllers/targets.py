"""What each callback kind accepts as target and config, and which webhook destinations and secrets are allowed.

The rules live here, on the controllers' side, because a callback is checked against them when it is written
(controllers/callbacks.py); the engine imports them to check each delivery again (engine/kinds/webhook.py), the
allowed direction. Nothing here opens a connection.

Where a webhook delivery may go (docs/webhooks.md, "Where deliveries may go") is checked on one parse:
- the URL, with urllib3's parser (the one requests uses to make the request), refusing anything two parsers
  could read differently: backslashes, userinfo, whitespace, control or non-ASCII characters, other schemes;
- the host against WEBHOOK_ALLOWED_HOSTS (Policy.host_allowed), here and again at delivery;
- the address actually connected to, after DNS (Policy.address_allowed), which only delivery can know.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from base64 import b64decode, b64encode
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from config import Settings
from handlers import HANDLERS

__all__ = [
    "REDACTED", "RESERVED_HEADERS", "SECRET_BYTES", "SECRET_PREFIX", "IPAddress", "IPNetwork", "Policy", "Target",
    "TargetRefused", "header_problem", "host_allowed", "ip_or_none", "new_secret", "parse_target", "policy",
    "policy_of", "python_target_problem", "routable", "secret_problem", "validate_config", "validate_target",
    "webhook_config_problem", "webhook_target_problem",
]

log = logging.getLogger("punctual.targets")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REDACTED = "***"  # how a secret is answered, logged and shown; sent back, it keeps the stored value


# -- per kind ----------------------------------------------------------------------------------

def validate_target(settings: Settings, kind: str, target: str) -> str | None:
    """Why this target does not suit the kind, or None when it does. `manual` callbacks have no target."""
    if kind == "python":
        return python_target_problem(target)
    if kind == "webhook":
        return webhook_target_problem(settings, target)
    if kind == "kafka":
        return None if target.strip() else "a kafka callback needs a topic as its target"
    return None


def validate_config(kind: str, config: dict[str, Any]) -> str | None:
    """Why this config does not suit the kind (e.g. a webhook header that would inject a line), or None."""
    if kind == "webhook":
        return webhook_config_problem(config)
    return None


def python_target_problem(target: str) -> str | None:
    """Why `target` names no handler registered in this process (handlers.py), or None."""
    if target not in HANDLERS:
        return f"no python handler named {target!r}; registered: {', '.join(sorted(HANDLERS))}"
    return None


def webhook_target_problem(settings: Settings, url: str) -> str | None:
    """Why this URL cannot be a webhook's target, or None. The address is checked at delivery, after DNS."""
    try:
        parsed = parse_target(url)
    except TargetRefused as exc:
        return str(exc)
    if not policy(settings).host_allowed(parsed.host):
        return f"host {parsed.host!r} is not in WEBHOOK_ALLOWED_HOSTS"
    return None


def host_allowed(settings: Settings, url: str) -> bool:
    """Whether the URL parses (see parse_target) and its host is allowed; the address is checked at delivery."""
    try:
        return policy(settings).host_allowed(parse_target(url).host)
    except TargetRefused:
        return False


# -- the webhook URL ---------------------------------------------------------------------------

class TargetRefused(Exception):
    """The destination is not allowed. Not an OSError on purpose: when delivery raises it from inside a
    connection, urllib3 and requests let it through untouched (no retry, no wrapping), so the attempt fails
    with this message."""


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

def ip_or_none(text: str) -> IPAddress | None:
    """`text` as an IP address, or None when it is a name (or nothing valid)."""
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
        """The address is listed, alone or inside a listed network."""
        address = _unmapped(address)
        return any(address.version == net.version and address in net for net in self.networks)

    def host_allowed(self, host: str) -> bool:
        """The URL's host (a name or an IP literal) may be called."""
        host = host.lower().strip("[]")
        address = ip_or_none(host)
        if address is not None:
            return self.listed_address(address) or (self.any_name and routable(address))
        return self.any_name or host in self.names or any(host.endswith(s) for s in self.suffixes)

    def address_allowed(self, address: IPAddress) -> bool:
        """An address a connection may be made to: listed (as an address or network), or globally routable."""
        return self.listed_address(address) or routable(address)


@lru_cache(maxsize=16)
def policy_of(entries: tuple[str, ...]) -> Policy:
    """The policy of these WEBHOOK_ALLOWED_HOSTS entries (cached: it is read on every delivery)."""
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
    """The policy of the configured WEBHOOK_ALLOWED_HOSTS."""
    return policy_of(tuple(settings.webhook_allowed_hosts))


# -- webhook headers ---------------------------------------------------------------------------

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


def webhook_config_problem(config: dict[str, Any]) -> str | None:
    """Why a webhook's config cannot be used (its headers could not be sent as they are), or None."""
    headers = config.get("headers", {})
    if not isinstance(headers, dict):
        return "config.headers must be an object of strings"
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem:
            return problem
    return None


# -- signing secrets ---------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64 random bytes


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
