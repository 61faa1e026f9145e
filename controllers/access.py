"""Who is asking, and what they may do: API tokens and their scopes (DESIGN.md, "Access").

A request carries `Authorization: Bearer <secret>`. The secret is either API_TOKEN (from the
environment, scope admin) or a named token made with `python app.py tokens add`, of which only the
SHA-256 is stored. Once any token exists, every route but /health and the page needs one; with none
configured the API is open, as a fresh install on loopback expects.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import psycopg2.errors

from db import Database
from errors import Conflict, Forbidden, Invalid, Unauthorized

SCOPES = ("read", "write", "desk", "admin")
# What each scope may do: write and desk both include read; admin includes everything.
COVERS = {"read": {"read"}, "write": {"read", "write"}, "desk": {"read", "desk"}, "admin": set(SCOPES)}
ADMIN_NAME = "admin"  # the name API_TOKEN acts under (the worker, when it claims manual events)
TOKEN_PREFIX = "pct_"  # makes a leaked token recognisable to secret scanners and people


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    name: str
    scope: str
    authenticated: bool  # False only while no token is configured at all (the open API)

    def may(self, needed: str) -> bool:
        return needed in COVERS[self.scope]


ANONYMOUS = Principal("anonymous", "admin", authenticated=False)


def hash_secret(secret: str) -> str:
    """SHA-256, hex. A token is 32 random bytes, so there is nothing to brute-force: a slow password hash
    (bcrypt, argon2) would only add milliseconds to every request."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Access:
    """Turns an Authorization header into a Principal.

    Named tokens are looked up in the database on every request that presents one, so a revoked token
    is refused at once, on every instance, without a restart. Whether tokens are required at all is
    cached briefly while the answer is "no" (it is asked on every open request otherwise); once any
    token has existed, tokens stay required: revoking the last token does not reopen the API.
    """

    def __init__(self, db: Database, api_token: str = "", check_seconds: float = 1.0) -> None:
        self._db = db
        self._api_token = api_token.encode("utf-8")
        self._check_seconds = check_seconds
        self._required = bool(api_token)
        self._open_until = 0.0
        self._lock = threading.Lock()

    def tokens_required(self) -> bool:
        if self._required:
            return True
        now = time.monotonic()
        if now < self._open_until:
            return False
        with self._lock:
            if not self._required and now >= self._open_until:
                rows = self._db.query("SELECT EXISTS (SELECT 1 FROM api_tokens) AS any")
                self._required = bool(rows[0]["any"])
                self._open_until = now + self._check_seconds
        return self._required

    def authenticate(self, authorization: Optional[str]) -> Principal:
        """:raise Unauthorized: when tokens are required and this header carries no valid one."""
        if not self.tokens_required():
            return ANONYMOUS
        scheme, _, given = (authorization or "").strip().partition(" ")
        given = given.strip()
        # The scheme is case-insensitive (RFC 9110 11.1).
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("this route needs 'Authorization: Bearer <token>'")
        if self._api_token and hmac.compare_digest(given.encode("utf-8"), self._api_token):
            return Principal(ADMIN_NAME, "admin", authenticated=True)
        rows = self._db.query("SELECT name, scope FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
                              (hash_secret(given),))
        if not rows:
            raise Unauthorized("the token is not valid (unknown or revoked)")
        return Principal(rows[0]["name"], rows[0]["scope"], authenticated=True)

    @staticmethod
    def require(principal: Principal, needed: str) -> None:
        """:raise Forbidden: when the principal's scope does not cover `needed`."""
        if not principal.may(needed):
            raise Forbidden(f"the token {principal.name!r} has scope {principal.scope!r}; this needs {needed!r}",
                            {"scope": principal.scope, "needed": needed})


def worker_for(principal: Principal, asked: Optional[str]) -> str:
    """The worker a desk request acts as. A desk token's name is the worker, so the body cannot claim to be
    someone else; an admin may act as anyone; an open API (no tokens) takes the name from the body.

    :raise Invalid: no worker named on an open API. :raise Forbidden: a desk token naming another worker.
    """
    if not principal.authenticated:
        if not asked:
            raise Invalid("worker is required while no API tokens are configured", {"field": "worker"})
        return asked
    if principal.scope == "admin":
        return asked or principal.name
    if asked and asked != principal.name:
        raise Forbidden(f"this token acts as worker {principal.name!r}, not {asked!r}",
                        {"worker": principal.name})
    return principal.name


# -- the token store, used by `python app.py tokens ...` ------------------------------------------

def add_token(db: Database, name: str, scope: str) -> str:
    """Store a new token and return its secret, which exists nowhere else afterwards.

    :raise Invalid: unknown scope or bad name. :raise Conflict: an active token has this name.
    """
    if scope not in SCOPES:
        raise Invalid(f"scope must be one of {', '.join(SCOPES)}", {"field": "scope"})
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise Invalid("a token name is 1 to 200 printable characters", {"field": "name"})
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        db.query("INSERT INTO api_tokens (name, scope, token_hash) VALUES (%s, %s, %s)",
                 (name, scope, hash_secret(secret)))
    except psycopg2.errors.UniqueViolation:
        raise Conflict(f"an active token named {name!r} exists; revoke it first", {"field": "name"}) from None
    return secret


def list_tokens(db: Database) -> list[dict[str, Any]]:
    """Every token, active and revoked, without secrets (only hashes are stored anyway)."""
    return db.query("SELECT name, scope, created_at, revoked_at FROM api_tokens ORDER BY id")


def revoke_token(db: Database, name: str) -> int:
    """Revoke the active token with this name; refused on the next request. Returns how many were revoked."""
    rows = db.query("""UPDATE api_tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL
                       RETURNING id""", (name,))
    return len(rows)
