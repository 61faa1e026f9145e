"""`python` callbacks: handlers registered in code, four built in, more from the user's modules.

A user module registers handlers at import time and is named in PYTHON_HANDLER_MODULES:

    from engine.kinds.python import handler

    @handler("greet")
    def greet(payload):            # or greet(payload, attempt) to see the event id and attempt number
        return {"hello": payload["name"]}

The return value (JSON-able) is stored as the event's result; an exception is a failed attempt.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import numbers
from typing import Any, Callable

from engine.kinds.base import Attempt, AttemptFailed

log = logging.getLogger("punctual.handlers")

HANDLERS: dict[str, Callable[..., Any]] = {}
_WANTS_ATTEMPT: dict[str, bool] = {}
_INLINE: set[str] = set()


def handler(name: str, *, inline: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function as the handler `name`: fn(payload) or fn(payload, attempt).

    inline=True says the handler is pure computation, quick and bounded (no I/O, no waiting): the
    engine then runs it in the thread that claimed it, right after the claim, instead of handing it
    to the worker pool; that hop costs more than the call itself. An inline handler is not timed out,
    so one that could block must not say so.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        positional = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        HANDLERS[name] = fn
        _WANTS_ATTEMPT[name] = len(positional) >= 2
        if inline:
            _INLINE.add(name)
        else:
            _INLINE.discard(name)
        return fn

    return register


def is_inline(target: str) -> bool:
    """Whether the handler registered as `target` may run in the claiming thread (see handler)."""
    return target in _INLINE


def load_modules(modules: tuple[str, ...]) -> None:
    """Import the user's handler modules; a missing one stops the start with a clear message."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SystemExit(f"cannot import handler module {module!r}: {exc}") from None
        log.info("loaded handler module %s", module)


def validate_target(target: str) -> str | None:
    if target not in HANDLERS:
        return f"no python handler named {target!r}; registered: {', '.join(sorted(HANDLERS))}"
    return None


def run(settings: Any, attempt: Attempt) -> Any:
    fn = HANDLERS.get(attempt.target)
    if fn is None:
        raise AttemptFailed(f"no python handler named {attempt.target!r} in this instance")
    if _WANTS_ATTEMPT[attempt.target]:
        return fn(attempt.payload, attempt)
    return fn(attempt.payload)


def _operands(payload: dict[str, Any]) -> tuple[float, float]:
    x, y = payload.get("x"), payload.get("y")
    for name, value in (("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise AttemptFailed(f"payload needs numbers x and y; {name} is {value!r}")
    return x, y


@handler("add", inline=True)
def add(payload: dict[str, Any]) -> float:
    x, y = _operands(payload)
    return x + y


@handler("subtract", inline=True)
def subtract(payload: dict[str, Any]) -> float:
    x, y = _operands(payload)
    return x - y


@handler("multiply", inline=True)
def multiply(payload: dict[str, Any]) -> float:
    x, y = _operands(payload)
    return x * y


@handler("divide", inline=True)
def divide(payload: dict[str, Any]) -> float:
    x, y = _operands(payload)
    if y == 0:
        raise AttemptFailed("division by zero: y must not be 0")
    return x / y


@handler("noop", inline=True)
def noop(payload: dict[str, Any]) -> None:
    """Does nothing: for benchmarks and smoke tests."""
    return None
