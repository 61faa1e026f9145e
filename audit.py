"""Audit trail in files: one JSON line per state change in events.log, failures in errors.log."""
from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

# The fixed vocabulary of `action`: tests and log readers may rely on these words.
ACTIONS = frozenset({
    "event_created",       # -> scheduled (API, batch, Kafka)
    "event_rescheduled",   # scheduled_for/payload/priority changed while scheduled
    "event_cancelled",     # scheduled -> cancelled
    "event_deleted",       # row removed
    "event_retried",       # failed/cancelled -> scheduled through the API
    "attempt_started",     # scheduled -> running (claimed)
    "attempt_succeeded",   # running -> finished
    "attempt_failed",      # running -> scheduled, a retry is due after backoff
    "event_failed",        # running -> failed, no attempts left
    "lease_expired",       # running -> scheduled/failed, the holder vanished
    "attempt_released",    # running -> scheduled, given back (shutdown, worker release)
})

_events_logger = logging.getLogger("punctual.audit")
_events_logger.propagate = False


def _one_line(data: Any) -> str:
    """JSON in pure ASCII: every character that any reader treats as a line end (\\n, \\r, but also
    NEL, U+2028/U+2029 for str.splitlines()) is escaped, so no input can split or forge a line."""
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


class AuditFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _one_line(record.msg)


def setup_logging(log_dir: str, max_bytes: int, backups: int, level: int = logging.INFO) -> None:
    """Route the audit trail to events.log, warnings and errors to errors.log, and everything to stderr.

    Fails fast with a clear message if the folder cannot be written: silent audit loss is worse.
    """
    path = Path(log_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        events = logging.handlers.RotatingFileHandler(path / "events.log", maxBytes=max_bytes,
                                                      backupCount=backups, encoding="utf-8")
        errors = logging.handlers.RotatingFileHandler(path / "errors.log", maxBytes=max_bytes,
                                                      backupCount=backups, encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"cannot write logs to {path.resolve()}: {exc}") from None

    events.setFormatter(AuditFormatter())
    for old in list(_events_logger.handlers):
        _events_logger.removeHandler(old)
        old.close()
    _events_logger.addHandler(events)
    _events_logger.setLevel(logging.INFO)

    errors.setLevel(logging.WARNING)
    errors.setFormatter(JsonFormatter())
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(errors)
    root.addHandler(console)
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def record(action: str, event: dict[str, Any], **fields: Any) -> None:
    """Write one audit line for a state change of `event` (a row with id, callback, attempts, state)."""
    assert action in ACTIONS, action
    line: dict[str, Any] = {
        "time": datetime.now(timezone.utc).isoformat(),
        "action": action,
        "event_id": event.get("id"),
        "callback": event.get("callback"),
        "attempt": event.get("attempts"),
        "state": event.get("state"),
    }
    line.update(fields)
    _events_logger.info(line)


def record_many(action: str, events: Iterable[dict[str, Any]], **fields: Any) -> None:
    for event in events:
        record(action, event, **fields)
