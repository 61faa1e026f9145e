"""What a Kafka message means: alerts, a plain event, a kafka-message-scheduler schedule, or a workflow's start or
signal.

Parsing never touches the database; anything that cannot become events raises Rejected with
a reason that is stored beside the raw bytes.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Optional

from pydantic import TypeAdapter, ValidationError

import jsonsafe
from schemas import EventCreate, WorkflowId

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


WORKFLOW_ID: TypeAdapter[str] = TypeAdapter(WorkflowId)  # the API's rule for an id, one rule for both
NAME_MAX = 200  # as schemas.Name


@dataclass(frozen=True)
class WorkflowMessage:
    """A message of the workflows topic, keyed by the workflow's id: start workflow `name` with `value` as its input
    (`{"new": name, "input": value}`), or send it signal `name` with `value` (`{"signal": name, "value": value}`)."""

    workflow_id: str
    action: Literal["new", "signal"]
    name: str
    value: Any


def _name(data: dict[str, Any], field: str) -> str:
    name = data[field]
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        raise Rejected(f"'{field}' must be a name (text of 1 to {NAME_MAX} characters), got {json.dumps(name)[:100]}")
    return name


def parse_workflow_message(key: Optional[bytes], value: Optional[bytes]) -> WorkflowMessage:
    """The seed kafka-workflow's convention: the key is the workflow's id (so a repeated start is the same
    workflow); the value starts it or signals it."""
    if not key:
        raise Rejected("a workflow message needs a key: the workflow's id")
    try:
        workflow_id = key.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("the key (the workflow's id) is not UTF-8 text") from None
    try:
        WORKFLOW_ID.validate_python(workflow_id)
    except ValidationError:
        raise Rejected(f"the key {workflow_id[:210]!r} is not a workflow id "
                       "(1 to 200 letters, digits and . _ : @ -)") from None
    data = decode_json(value)
    if not isinstance(data, dict):
        raise Rejected("a workflow message must be a JSON object")
    if "new" in data and "signal" in data:
        raise Rejected("a workflow message has either 'new' or 'signal', not both")
    action: Literal["new", "signal"]
    if "new" in data:
        action, allowed = "new", {"new", "input"}
    elif "signal" in data:
        action, allowed = "signal", {"signal", "value"}
    else:
        raise Rejected("a workflow message has neither 'new' (start one) nor 'signal' (signal one)")
    extra = sorted(set(data) - allowed)
    if extra:
        raise Rejected(f"unexpected field(s) in a {action!r} message: {', '.join(extra)} "
                       f"(it takes only {' and '.join(sorted(allowed))})")
    payload = data.get("input") if action == "new" else data.get("value")
    return WorkflowMessage(workflow_id, action, _name(data, action), payload)
