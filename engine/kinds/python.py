"""`python` callbacks: run the handler registered under the callback's target (the registry is handlers.py).

A user module registers handlers at import time and is named in PYTHON_HANDLER_MODULES:

    from engine.kinds.python import handler

    @handler("greet")
    def greet(payload):            # or greet(payload, attempt) to see the event id and attempt number
        return {"hello": payload["name"]}

`handler`, `is_inline` and `load_modules` are re-exported from handlers.py: `from engine.kinds.python import
handler` is public API (DESIGN.md, "Callback kinds"), and importing this module registers the built-in
handlers, as it always did.
"""
from __future__ import annotations

from typing import Any

from engine.kinds.base import Attempt, AttemptFailed
from handlers import HANDLERS, handler, is_inline, load_modules, wants_attempt

__all__ = ["HANDLERS", "handler", "is_inline", "load_modules", "run"]


def run(settings: Any, attempt: Attempt) -> Any:
    """Call the handler with the payload (and the attempt, if it takes two arguments); return its result.

    :raise AttemptFailed: if no handler has that name in this instance (it was registered where the callback
        was made, but this instance did not load that module); whatever the handler raises goes through.
    """
    fn = HANDLERS.get(attempt.target)
    if fn is None:
        raise AttemptFailed(f"no python handler named {attempt.target!r} in this instance")
    if wants_attempt(attempt.target):
        return fn(attempt.payload, attempt)
    return fn(attempt.payload)
