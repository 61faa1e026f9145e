"""The registry of `python` callback handlers: the four built in, and those users register from their modules.

A leaf module (it imports nothing of Punctual's), so the controllers can check that a callback's target names
a registered handler without importing the engine, and the engine can run it. Users write against the public
names re-exported where DESIGN.md promises them:

    from engine.kinds.python import handler
    from engine.kinds.base import AttemptFailed

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
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["HANDLERS", "AttemptFailed", "handler", "is_inline", "load_modules", "wants_attempt"]

log = logging.getLogger("punctual.handlers")

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)

HANDLERS: dict[str, Handler] = {}  # name -> function, as registered (a later registration replaces)
_WANTS_ATTEMPT: dict[str, bool] = {}  # name -> whether it takes (payload, attempt) rather than (payload)
_INLINE: set[str] = set()


class AttemptFailed(Exception):
    """The attempt failed; the message is stored as the event's last_error.

    Defined here, beside the registry, because handlers raise it; engine.kinds.base re-exports it, the
    import path users know, and the engine's own kinds raise the same class.
    """


def handler(name: str, *, inline: bool = False) -> Callable[[H], H]:
    """Register a function as the handler `name`: fn(payload) or fn(payload, attempt).

    inline=True says the handler is pure computation, quick and bounded (no I/O, no waiting): the
    engine then runs it in the thread that claimed it, right after the claim, instead of handing it
    to the worker pool; that hop costs more than the call itself. An inline handler is not timed out,
    so one that could block must not say so.
    """

    def register(fn: H) -> H:
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


def wants_attempt(target: str) -> bool:
    """Whether the handler registered as `target` takes the attempt as its second argument."""
    return _WANTS_ATTEMPT.get(target, False)


def load_modules(modules: tuple[str, ...]) -> None:
    """Import the user's handler modules; a missing one stops the start with a clear message."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SystemExit(f"cannot import handler module {module!r}: {exc}") from None
        log.info("loaded handler module %s", module)


# -- built in ----------------------------------------------------------------------------------
# Registered here, with the registry, so that every process that can check a target knows them.

def _operands(payload: dict[str, Any]) -> tuple[float, float]:
    x, y = payload.get("x"), payload.get("y")
    for name, value in (("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise AttemptFailed(f"payload needs numbers x and y; {name} is {value!r}")
    return x, y  # type: ignore[return-value]  # checked just above: both are real numbers


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
