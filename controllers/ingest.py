"""The rules for Kafka messages: each (topic, partition, offset) becomes its events, or starts or signals its
workflow, exactly once.

One transaction per polled batch; a savepoint per message, so a bad message is recorded as
rejected without undoing its neighbours. The caller commits the Kafka offsets only after this
transaction committed: a crash in between redelivers messages that the primary key of
kafka_messages then turns into no-ops.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Optional

from psycopg2.extras import Json

import audit
from controllers import workflows
from controllers.events import SELECT, insert_events
from controllers.messages import (
    Rejected,
    Schedule,
    WorkflowMessage,
    parse_alerts_topic,
    parse_schedule,
    parse_workflow_message,
)
from db import Database
from errors import AppError


@dataclass(frozen=True)
class Message:
    """One Kafka record as the consumer polled it: where it came from (the exactly-once key) and its bytes."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Topics:
    """Which topic means what; any other topic the consumer reads is an alerts topic."""

    schedules: str
    workflows: str


@dataclass
class IngestResult:
    """What one polled batch did: the events it made and cancelled (for the audit log and the stream),
    the workflows it started and signalled, and how many messages were refused or seen before."""

    created: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    started: int = 0
    signalled: int = 0
    rejected: int = 0
    duplicates: int = 0


def _apply_schedule(cur: Any, schedule: Schedule, namespace: str
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Replace or cancel the pending schedule with this key, then add the new one."""
    key = f"{namespace}:{schedule.key}"
    cur.execute(
        """UPDATE events SET state = 'cancelled', finished_at = now(), updated_at = now(),
                  last_error = 'replaced or cancelled by a later schedule message'
           WHERE schedule_key = %s AND state = 'scheduled' RETURNING id""",
        (key,),
    )
    cancelled_ids = [row["id"] for row in cur.fetchall()]
    created: list[dict[str, Any]] = []
    if schedule.event is not None:
        item = schedule.event
        cur.execute(
            """INSERT INTO events (callback_id, payload, scheduled_for, max_attempts, source, schedule_key)
               SELECT id, %s, %s, max_attempts, 'kafka', %s FROM callbacks WHERE name = %s
               RETURNING id""",
            (Json(item.payload), item.scheduled_for, key, item.callback),
        )
        row = cur.fetchone()
        if row is None:
            raise Rejected(f"callback {item.callback!r} is missing")
        cur.execute(f"{SELECT} WHERE e.id = %s", (row["id"],))
        created.append(cur.fetchone())
    cancelled: list[dict[str, Any]] = []
    if cancelled_ids:
        cur.execute(f"{SELECT} WHERE e.id = ANY(%s)", (cancelled_ids,))
        cancelled = cur.fetchall()
    return created, cancelled


def _apply_workflow(cur: Any, message: WorkflowMessage, result: IngestResult) -> None:
    """Start or signal a workflow in the batch's transaction. A start whose id exists with the same workflow and
    input is the same workflow again (nothing new, not rejected); Invalid, NotFound and Conflict are reasons."""
    try:
        if message.action == "new":
            _, created = workflows.start_in(cur, message.name, message.value, message.workflow_id, "kafka")
            result.started += int(created)
        else:
            workflows.signal_in(cur, message.workflow_id, message.name, message.value, "kafka")
            result.signalled += 1
    except AppError as exc:
        what = "start workflow" if message.action == "new" else "signal"
        raise Rejected(f"{what} {message.name!r} refused: {exc.message}") from None


def ingest(db: Database, messages: list[Message], topics: Topics) -> IngestResult:
    """Turn a polled batch into events in one transaction (see the module docstring); commit the offsets after."""
    result = IngestResult()
    with db.transaction() as cur:
        for msg in messages:
            cur.execute("SAVEPOINT message")
            cur.execute(
                """INSERT INTO kafka_messages (topic, partition, "offset") VALUES (%s, %s, %s)
                   ON CONFLICT DO NOTHING RETURNING 1""",
                (msg.topic, msg.partition, msg.offset),
            )
            if cur.fetchone() is None:
                result.duplicates += 1  # seen before: its events exist already
                cur.execute("RELEASE SAVEPOINT message")
                continue
            try:
                if msg.topic == topics.schedules:
                    created, cancelled = _apply_schedule(
                        cur, parse_schedule(msg.topic, msg.key, msg.value, msg.headers), msg.topic)
                elif msg.topic == topics.workflows:
                    _apply_workflow(cur, parse_workflow_message(msg.key, msg.value), result)
                    created, cancelled = [], []
                else:
                    created = [event for event, _ in insert_events(cur, parse_alerts_topic(msg.value), "kafka")]
                    cancelled = []
                cur.execute(
                    """UPDATE kafka_messages SET events = %s WHERE topic = %s AND partition = %s AND "offset" = %s""",
                    (len(created), msg.topic, msg.partition, msg.offset),
                )
                result.created += created
                result.cancelled += cancelled
            except (Rejected, AppError) as exc:
                reason = str(exc) if isinstance(exc, Rejected) else exc.message
                # Undoes what the message did, and its kafka_messages row with it: written again just below,
                # so the offset stays recorded and a redelivery of a rejected message is a duplicate too.
                cur.execute("ROLLBACK TO SAVEPOINT message")
                cur.execute(
                    """INSERT INTO kafka_messages (topic, partition, "offset") VALUES (%s, %s, %s)
                       ON CONFLICT DO NOTHING""",
                    (msg.topic, msg.partition, msg.offset),
                )
                cur.execute(
                    """INSERT INTO rejected_messages (topic, partition, "offset", key, value, reason)
                       VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    (msg.topic, msg.partition, msg.offset, msg.key, msg.value, reason[:2000]),
                )
                result.rejected += 1
            cur.execute("RELEASE SAVEPOINT message")
    with audit.batch():
        for event in result.created:
            audit.record("event_created", event, source="kafka", scheduled_for=event["scheduled_for"])
        for event in result.cancelled:
            audit.record("event_cancelled", event, source="kafka")
    return result


def _text(raw: Optional[memoryview]) -> Optional[str]:
    if raw is None:
        return None
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def list_rejected(db: Database, limit: int, cursor: Optional[int]) -> dict[str, Any]:
    """Rejected messages, newest first: raw bytes as base64, and as text where they are UTF-8."""
    rows = db.query(
        """SELECT id, topic, partition, "offset", key, value, reason, received_at
           FROM rejected_messages WHERE (%s::bigint IS NULL OR id < %s) ORDER BY id DESC LIMIT %s""",
        (cursor, cursor, limit + 1),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        key, value = row.pop("key"), row.pop("value")
        row["key"] = _text(key)
        row["value_text"] = _text(value)
        row["value_base64"] = base64.b64encode(bytes(value)).decode("ascii") if value is not None else None
    return {"rejected": rows, "next_cursor": rows[-1]["id"] if more else None}
