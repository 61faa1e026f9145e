"""What a Kafka message means: alerts, a plain event, or a kafka-message-scheduler schedule.

Parsing never touches the database; anything that cannot become events raises Rejected with
a reason that is stored beside the raw bytes.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import ValidationError

import jsonsafe
from schemas import EventCreate

ALERT_CALLBACK = "Alert"
SCHEDULER_CALLBACK = "KafkaScheduler"
# kafka-message-scheduler's header names.
EPOCH, TARGET_TOPIC, TARGET_KEY = "scheduler-epoch", "scheduler-target-topic", "scheduler-target-key"
FIRED_TIMESTAMP, FIRED_KEY, FIRED_TOPIC = "scheduler-timestamp", "scheduler-key", "scheduler-topic"


class Rejected(Exception):
    """This message cannot become events; the message says why."""


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _storable(value: Any) -> None:
    """Refuse what PostgreSQL's jsonb cannot hold (NUL, lone surrogates, too deep: see jsonsafe), with a reason."""
    problem = jsonsafe.problem(value)
    if problem:
        raise Rejected(problem)


def decode_json(value: Optional[bytes]) -> Any:
    if value is None:
        raise Rejected("empty message (null value)")
    try:
        data = json.loads(value.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise Rejected("not UTF-8 text") from None
    except RecursionError:
        raise Rejected("JSON nested too deeply") from None
    except ValueError as exc:
        raise Rejected(f"not JSON: {exc}") from None
    _storable(data)
    return data


def _event(data: dict[str, Any]) -> EventCreate:
    try:
        return EventCreate.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise Rejected(f"invalid event: {where}: {first.get('msg')}") from None


def parse_alerts_topic(value: Optional[bytes]) -> list[EventCreate]:
    """`{"alerts": [{"alert_id": .., "message": .., ...}]}` -> one Alert event each; or one plain event."""
    data = decode_json(value)
    if not isinstance(data, dict):
        raise Rejected("message must be a JSON object")
    if "alerts" in data:
        alerts = data["alerts"]
        if not isinstance(alerts, list) or not alerts:
            raise Rejected("alerts must be a non-empty list")
        items = []
        for index, alert in enumerate(alerts):
            if not isinstance(alert, dict):
                raise Rejected(f"alerts[{index}] must be an object")
            missing = [field for field in ("alert_id", "message") if field not in alert]
            if missing:
                raise Rejected(f"alerts[{index}] misses {', '.join(missing)}")
            items.append(_event({"callback": ALERT_CALLBACK, "payload": alert}))
        return items
    if "callback" in data:
        return [_event(data)]
    raise Rejected("message has neither 'alerts' nor 'callback'")


@dataclass(frozen=True)
class Schedule:
    """A kafka-message-scheduler command: schedule (or replace) `key`, or cancel it (tombstone)."""

    key: str
    event: Optional[EventCreate]  # None: cancel


def _header(headers: dict[str, bytes], name: str) -> Optional[str]:
    raw = headers.get(name)
    return raw.decode("utf-8", errors="replace") if raw is not None else None


def encode_bytes(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode("utf-8"), "value_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode("ascii"), "value_encoding": "base64"}


def parse_schedule(topic: str, key: Optional[bytes], value: Optional[bytes],
                   headers: list[tuple[str, bytes]]) -> Schedule:
    if not key:
        raise Rejected("a schedule needs a message key")
    schedule_key = key.decode("utf-8", errors="replace")
    if value is None:
        return Schedule(schedule_key, None)
    by_name = {name: raw for name, raw in headers or []}
    epoch, target = _header(by_name, EPOCH), _header(by_name, TARGET_TOPIC)
    if epoch is None or target is None:
        raise Rejected(f"a schedule needs the {EPOCH} and {TARGET_TOPIC} headers")
    try:
        when = datetime.fromtimestamp(float(epoch), timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise Rejected(f"{EPOCH} must be seconds since the epoch, got {epoch!r}") from None
    other = {name: encode_bytes(raw) for name, raw in by_name.items()
             if name not in (EPOCH, TARGET_TOPIC, TARGET_KEY) and raw is not None}
    payload = {
        "topic": target,
        "key": _header(by_name, TARGET_KEY),
        **encode_bytes(value),
        "headers": other,
        # Added to the fired message, as kafka-message-scheduler does.
        "scheduler": {FIRED_KEY: schedule_key, FIRED_TOPIC: topic, FIRED_TIMESTAMP: epoch},
    }
    _storable(payload)
    return Schedule(schedule_key, _event({"callback": SCHEDULER_CALLBACK, "payload": payload,
                                          "scheduled_for": when.isoformat()}))
