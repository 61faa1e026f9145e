"""`kafka` callbacks: produce the payload's value to a topic, acknowledged by all replicas (acks=all).

Payload: {"value": ..., "key": "...", "headers": {...}} sends `value` (a string as UTF-8, anything
else as JSON, or bytes given as {"value": "<base64>", "value_encoding": "base64"}); a payload
without "value" is sent whole as JSON. The topic is the callback's target, or the payload's
"topic" when the target is empty (kafka-message-scheduler schedules carry their own).
"""
from __future__ import annotations

import base64
import json
from typing import Any, Optional, Protocol

from kafka.errors import KafkaError

from engine.kinds.base import Attempt, AttemptFailed


class Sent(Protocol):
    topic: str
    partition: int
    offset: int


class Sender(Protocol):
    """What a kafka attempt needs of the bridge's producer: send one message and wait for acks=all."""

    def send(self, topic: str, value: bytes, key: Optional[bytes],
             headers: list[tuple[str, bytes]]) -> Sent: ...


def _bytes(value: Any, encoding: Optional[str] = None) -> bytes:
    if encoding == "base64":
        return base64.b64decode(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _header_value(value: Any) -> bytes:
    if isinstance(value, dict) and "value" in value:
        return _bytes(value["value"], value.get("value_encoding"))
    return _bytes(value)


def run(producer: Optional[Sender], attempt: Attempt) -> dict[str, Any]:
    """Produce the attempt's message; the producer is None when this instance has no Kafka bridge."""
    if producer is None:
        raise AttemptFailed("Kafka is not configured in this instance (KAFKA_BOOTSTRAP_SERVERS is empty)")
    payload = attempt.payload
    topic = attempt.target or payload.get("topic")
    if not topic or not isinstance(topic, str):
        raise AttemptFailed("no topic: the callback's target is empty and the payload names none")
    if "value" in payload:
        value = _bytes(payload["value"], payload.get("value_encoding"))
    else:
        value = _bytes(payload)
    key = payload.get("key", attempt.config.get("key"))
    headers = {**(attempt.config.get("headers") or {}), **(payload.get("headers") or {}),
               **(payload.get("scheduler") or {})}
    header_list = [(str(name), _header_value(v)) for name, v in headers.items()]
    header_list += [("punctual-event-id", str(attempt.event_id).encode()),
                    ("punctual-attempt", str(attempt.attempt).encode())]
    try:
        meta = producer.send(topic, value, key.encode("utf-8") if isinstance(key, str) else None, header_list)
    except KafkaError as exc:
        raise AttemptFailed(f"Kafka did not acknowledge the message: {type(exc).__name__}: {exc}") from None
    return {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}
