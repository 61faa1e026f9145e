"""What a kind's runner is given, and how it says an attempt failed.

AttemptFailed lives in handlers.py, beside the registry of the handlers that raise it; it is re-exported here
because `from engine.kinds.base import AttemptFailed` is public API (DESIGN.md, "Callback kinds").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from handlers import AttemptFailed

__all__ = ["Attempt", "AttemptFailed"]


@dataclass(frozen=True)
class Attempt:
    """One attempt of one event, with its callback's definition."""

    event_id: int
    attempt: int
    callback: str
    kind: str
    target: str
    config: dict[str, Any] = field(repr=False)  # header values may be secrets
    payload: dict[str, Any]
    timeout: float
    # A webhook's Standard Webhooks signing secret (whsec_...), None for the other kinds. Kept out of repr():
    # an Attempt in a log line or a traceback must not carry it.
    secret: str | None = field(default=None, repr=False)
