"""Whether PostgreSQL can store a value as jsonb: the one check the API, the Kafka bridge and the engine share.

`json.dumps` succeeding is not enough. PostgreSQL refuses, inside jsonb and text alike, the NUL character
(\\u0000) and lone UTF-16 surrogates (\\ud800 without its pair), and jsonb has no NaN or Infinity. Any one
such value fails the whole transaction it is written in (an API request, a polled Kafka batch, a batch of
outcomes), so each is refused before the write, with the place where it was found.

A leaf module: it imports nothing of Punctual's, so every layer may use it.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import orjson

__all__ = ["MAX_DEPTH", "dumps", "loads", "problem"]

# Levels of nesting accepted (objects and arrays). Deep enough for any real document; shallow enough that
# walking it, and PostgreSQL parsing it, never comes near a recursion limit.
MAX_DEPTH = 64


def problem(value: object, path: str = "$", *, max_depth: int = MAX_DEPTH, surrogates: bool = True) -> str | None:
    """Why PostgreSQL could not store `value` as jsonb, or None when it can.

    The answer starts with the JSON path of the first offending value (`$.payload.items[3]: ...`); a bad
    object key is reported at the object's path. Refused: NUL in a string or key, lone surrogates, NaN and
    Infinity, nesting deeper than `max_depth`, integers too long to write, and anything `json.dumps` could
    not write (sets, bytes, datetimes, ...; tuples are written as arrays, so they pass).

    `surrogates=False` leaves lone surrogates to the caller: the engine lets such a result reach the
    database and records the attempt's outcome as not recorded there (tests/test_engine.py pins that path).
    """
    return _walk(value, path, 0, max_depth, surrogates)


def _walk(value: object, path: str, depth: int, max_depth: int, surrogates: bool) -> str | None:
    if depth > max_depth:
        return f"{path}: nested deeper than {max_depth} levels"
    if isinstance(value, str):
        return _text(value, path, surrogates)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _integer(value, path)
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: numbers must be finite"
    if isinstance(value, dict):
        for key, item in value.items():
            found = (_key(key, path, surrogates)
                     or _walk(item, f"{path}.{str(key)[:40]}", depth + 1, max_depth, surrogates))
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _walk(item, f"{path}[{index}]", depth + 1, max_depth, surrogates)
            if found:
                return found
        return None
    return f"{path}: not a JSON value ({type(value).__name__})"


def _text(value: str, path: str, surrogates: bool) -> str | None:
    if "\x00" in value:
        return f"{path}: strings cannot contain \\u0000"
    if surrogates:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path}: strings cannot contain lone surrogates"
    return None


def _key(key: object, path: str, surrogates: bool) -> str | None:
    """An object key as json.dumps writes it: strings as they are; numbers, booleans and null as text."""
    if isinstance(key, str):
        return _text(key, path, surrogates)
    if key is None or isinstance(key, (bool, int)):
        return None
    if isinstance(key, float):
        return None if math.isfinite(key) else f"{path}: numbers must be finite"
    return f"{path}: an object key must be a string, not {type(key).__name__}"


def _integer(value: int, path: str) -> str | None:
    """Python refuses to write an integer of more than sys.get_int_max_str_digits() digits (4300 by default)."""
    if value.bit_length() <= 64:  # the common case, and far below that limit
        return None
    try:
        str(value)
    except ValueError:
        return f"{path}: integer too long to write as JSON"
    return None


# orjson reads an integer past 64 bits as a float (10**30 becomes 1e+30): text holding a run of 19 digits or more
# (such an integer, or only a long digit string) is read by the standard library, which keeps it exact.
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{19}")


def loads(text: str | bytes, **fallback: Any) -> Any:
    """JSON read by orjson, five to ten times faster than the standard library, where it reads exactly what
    json.loads reads: request bodies (routes/http.py) and every json and jsonb value PostgreSQL answers (payloads,
    results, notifications; bench/RESULTS.md, W1). The standard library, given `fallback` (e.g. parse_constant),
    takes what orjson would read differently (a long integer) or refuses (a lone surrogate, nesting deeper than
    orjson's 1,024 levels, which a stored result may have), with its own handling and error messages."""
    long_digits = _LONG_DIGITS.search(text) if isinstance(text, str) else _LONG_DIGITS_BYTES.search(text)
    if long_digits is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text, **fallback)


def dumps(value: Any) -> str:
    """JSON text of `value` for a json or jsonb parameter, by orjson; the standard library writes what orjson will
    not (an integer past 64 bits, a lone surrogate: PostgreSQL then refuses the latter, as before). Datetimes are
    written in ISO 8601 by both, so a document that holds one and a long integer is written the same way."""
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, default=_isoformat)


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
