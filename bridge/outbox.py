"""Kafka out: publish the outbox (terminal outcomes, written by trigger in the same transaction as
the state change) to the history topic, in order, at least once.

One instance relays at a time (a transaction-level advisory lock), so rows go out in id order.
Rows are marked sent in the same transaction that read them, after the broker acknowledged
them; if Kafka or this process fails in between, they are sent again by the next relay round.
"""
from __future__ import annotations

import json
import logging

from kafka.errors import KafkaError

from bridge.producer import Producer
from db import Database
from engine.role import TRANSIENT, Role

log = logging.getLogger("punctual.kafka.outbox")

RELAY_LOCK_KEY = 0x5057_4F42  # "PWOB"
BATCH = 500


class OutboxRelay(Role):
    """Publishes unsent outbox rows. What wakes it: its period (0.5 s), or a wake() after outcomes were
    written. What it writes: sent_at on the rows the broker acknowledged; it deletes sent rows after an hour."""

    name = "outbox-relay"
    transient = (KafkaError, *TRANSIENT)

    def __init__(self, db: Database, producer: Producer, topic: str, period: float = 0.5,
                 retention_hours: float = 1.0, reconnect_max: float = 10.0) -> None:
        super().__init__(period=period, retry_initial=0.5, retry_cap=reconnect_max, logger=log)
        self.db = db
        self.producer = producer
        self.topic = topic
        self.retention_hours = retention_hours
        self.sent = 0
        self.pending: int | None = None

    def describe(self) -> str:
        return f"topic {self.topic}"

    def start(self) -> None:
        # From now on terminal state changes write outbox rows (see punctual_flags in database.sql).
        self.db.query("INSERT INTO punctual_flags (name) VALUES ('outbox') ON CONFLICT DO NOTHING")
        super().start()

    def stop(self, timeout: float = 15.0) -> bool:
        return super().stop(timeout)

    def run_once(self) -> None:
        while not self.stopping and self.relay_once() == BATCH:
            pass

    def relay_once(self) -> int:
        """Publish up to one batch; returns how many rows were sent."""
        with self.db.transaction() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s) AS mine", (RELAY_LOCK_KEY,))
            if not cur.one()["mine"]:
                return 0  # another instance is relaying
            cur.execute("SELECT id, event_id, body FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT %s", (BATCH,))
            rows = cur.fetchall()
            if rows:
                self.producer.send_many([
                    (self.topic, str(row["event_id"]).encode(),
                     json.dumps({"outbox_id": row["id"], **row["body"]}).encode(),
                     [("punctual-outbox-id", str(row["id"]).encode())])
                    for row in rows
                ])
                cur.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],))
            cur.execute(
                "DELETE FROM outbox WHERE sent_at < now() - %s * interval '1 hour'", (self.retention_hours,))
            cur.execute("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
            self.pending = cur.one()["n"]
        self.sent += len(rows)
        return len(rows)
