"""Audit trail and logs: events.log (a JSON line per state change), punctual.log, errors.log, a short console."""
from __future__ import annotations

import functools
import json
import logging
import logging.handlers
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

# The fixed vocabulary of `action`: tests and log readers may rely on these words.
ACTIONS = frozenset({
    "event_created",       # -> scheduled (API, batch, Kafka)
    "event_rescheduled",   # scheduled_for/payload/priority changed while scheduled
    "event_cancelled",     # scheduled -> cancelled
    "event_deleted",       # row removed
    "event_retried",       # failed/cancelled -> scheduled through the API
    "attempt_started",     # scheduled -> running (claimed)
    "instance_dead",       # running -> scheduled/failed: the instance holding it stopped heartbeating
    "attempt_succeeded",   # running -> finished
    "attempt_failed",      # running -> scheduled, a retry is due after backoff
    "event_failed",        # running -> failed, no attempts left
    "lease_expired",       # running -> scheduled/failed, the holder vanished
    "attempt_released",    # running -> scheduled, given back (shutdown, worker release)
})

# A workflow's own lines (DESIGN.md "Workflows"); its steps' events have the lines above.
WORKFLOW_ACTIONS = frozenset({
    "workflow_started",    # made through the API or Kafka
    "workflow_signalled",  # a signal received (kept until a wait_for consumes it)
    "workflow_cancel_requested",
    "workflow_completed", "workflow_failed", "workflow_cancelled",
})



class AuditFile:
    """events.log: appends whole lines under a lock, rotates by size like RotatingFileHandler.

    Written directly rather than through logging: a batch of state changes (a claim of 200
    events, a batch of outcomes) becomes one write and one flush instead of 200 handler calls,
    each with its own rollover stat() calls.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")
        self._size = self._file.tell()

    def write(self, lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines)
        with self._lock:
            if self._file.closed:
                return
            if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._file.flush()
            self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        with self._lock:
            self._file.close()


_audit_file: Optional[AuditFile] = None
_local = threading.local()


def _one_line(data: Any) -> str:
    """JSON in pure ASCII: every character that any reader treats as a line end (\\n, \\r, but also
    NEL, U+2028/U+2029 for str.splitlines()) is escaped, so no input can split or forge a line.

    orjson first (a line in a quarter of a microsecond, against four with the standard library: three lines per
    event made this a quarter of the engine's work); a line it would write with any non-ASCII character, or
    cannot write, goes through json.dumps with ensure_ascii, which escapes it."""
    try:
        text = orjson.dumps(data, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME)
        if text.isascii():
            return text.decode()
    except (orjson.JSONEncodeError, TypeError):
        pass
    return json.dumps(data, default=str, ensure_ascii=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see _one_line): warnings and errors, with their traceback."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        extra = getattr(record, "fields", None)
        if extra:
            data.update(extra)
        return _one_line(data)


# Who speaks on the console at INFO whatever LOG_LEVEL says: the process itself (`punctual`: the database it
# uses, where it serves, a stop signal, stopped), its database (embedded server, schema, migrations), its HTTP
# server (listeners, the drain at a stop) and the Kafka bridge as a whole (on, off). The engine roles' start,
# stop and recovery lines and the libraries' notes (pgserver's initdb output) are INFO too, but go only to
# punctual.log unless LOG_LEVEL=INFO: a newcomer's terminal shows a handful of lines, then the banner.
CONSOLE_INFO_LOGGERS = frozenset({"punctual", "punctual.db", "punctual.http", "punctual.kafka"})


class ConsoleFilter(logging.Filter):
    """Records from `level` up, and INFO from the loggers that tell the process's own story."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or (record.levelno >= logging.INFO
                                                and record.name in CONSOLE_INFO_LOGGERS)


def log_level(name: str | int) -> int:
    """A level from its name (LOG_LEVEL); exits with a clear message for a name logging does not know."""
    if isinstance(name, int):
        return name
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise SystemExit(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {name!r}")
    return level


def setup_logging(log_dir: str, max_bytes: int, backups: int, level: int = logging.INFO,
                  console_level: str | int = logging.WARNING) -> None:
    """Route the audit trail to events.log, every record from `level` up to punctual.log, warnings and errors
    to errors.log, and to stderr what a person watching needs (see CONSOLE_INFO_LOGGERS and ConsoleFilter).

    Fails fast with a clear message if the folder cannot be written: silent audit loss is worse.
    """
    console_level = log_level(console_level)
    path = Path(log_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        events = AuditFile(path / "events.log", max_bytes, backups)
        everything = logging.handlers.RotatingFileHandler(path / "punctual.log", maxBytes=max_bytes,
                                                          backupCount=backups, encoding="utf-8")
        errors = logging.handlers.RotatingFileHandler(path / "errors.log", maxBytes=max_bytes,
                                                      backupCount=backups, encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"cannot write logs to {path.resolve()}: {exc}") from None

    global _audit_file
    previous, _audit_file = _audit_file, events
    if previous is not None:
        previous.close()

    everything.setLevel(level)
    everything.setFormatter(JsonFormatter())
    errors.setLevel(logging.WARNING)
    errors.setFormatter(JsonFormatter())
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(ConsoleFilter(console_level))
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(everything)
    root.addHandler(errors)
    root.addHandler(console)
    root.setLevel(min(level, console_level))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def record(action: str, event: Any, **fields: Any) -> None:
    """Write one audit line for a state change of `event`: a row with id, callback, attempts and state, as a
    dict (the API's rows) or as attributes (the engine's typed rows).

    Inside `batch()` the line waits for the end of the batch, and carries the batch's time (its lines are written
    together: three lines per event made the clock and the lookups a tenth of the engine's own work, W1);
    otherwise it is written at once.
    """
    assert action in ACTIONS, action
    if isinstance(event, dict):
        line: dict[str, Any] = {"time": _now(), "action": action, "event_id": event.get("id"),
                                "callback": event.get("callback"), "attempt": event.get("attempts"),
                                "state": event.get("state")}
    else:
        line = {"time": _now(), "action": action, "event_id": getattr(event, "id", None),
                "callback": getattr(event, "callback", None), "attempt": getattr(event, "attempts", None),
                "state": getattr(event, "state", None)}
    if fields:
        for key, value in fields.items():
            if isinstance(value, datetime):
                fields[key] = _instant(value) if value.tzinfo is timezone.utc else str(value)
        line.update(fields)
    _emit(line)


@functools.lru_cache(maxsize=4096)
def _instant(value: datetime) -> str:
    """A time as its line writes it, str(datetime), as `default=str` wrote it before. Here, not in orjson's fallback:
    that call back from orjson took 2 of the 2.3 µs a line with one time cost (three lines per event). Cached: the
    lines of a batch share their times (the creating statement's now(), an event's scheduled_for). Only for times in
    UTC (what PostgreSQL answers here): the same instant in another zone compares equal but is written otherwise."""
    return str(value)


def _now() -> str:
    """The time a line says: the batch's (taken at its first line) inside `batch()`, the present otherwise."""
    if getattr(_local, "buffer", None) is None:
        return datetime.now(timezone.utc).isoformat()
    now: Optional[str] = _local.time
    if now is None:
        now = _local.time = datetime.now(timezone.utc).isoformat()
    return now


def workflow(action: str, workflow_id: str, name: str, state: str, **fields: Any) -> None:
    """Write one audit line about a workflow (its steps' events have their own lines)."""
    assert action in WORKFLOW_ACTIONS, action
    line: dict[str, Any] = {"time": datetime.now(timezone.utc).isoformat(), "action": action,
                            "workflow_id": workflow_id, "workflow": name, "state": state}
    line.update(fields)
    _emit(line)


def _emit(line: dict[str, Any]) -> None:
    """Inside `batch()` the line waits for the end of the batch; otherwise it is written at once."""
    text = _one_line(line)
    buffer = getattr(_local, "buffer", None)
    if buffer is not None:
        buffer.append(text)
    elif _audit_file is not None:
        _audit_file.write([text])


@contextmanager
def batch() -> Iterator[None]:
    """Collect this thread's audit lines and write them together when the block ends (even on error)."""
    if getattr(_local, "buffer", None) is not None:
        yield  # already inside a batch: the outer one writes
        return
    _local.buffer = []
    _local.time = None
    try:
        yield
    finally:
        lines, _local.buffer = _local.buffer, None
        if lines and _audit_file is not None:
            _audit_file.write(lines)
