"""Kafka out: publish the outbox (terminal outcomes, written by trigger in the same transaction as
the state change) to the history topic, in order, at least once.

One instance relays at a time (a transaction-level advisory lock), so rows go out in id order.
Rows are marked sent in the same transaction that read them, after the broker acknowledged
them; if Kafka or this process fails in between, they are sent again by the next relay round.
"""
from __future__ import annotations

import json
import logging
import threading

from kafka.errors import KafkaError

from bridge.producer import Producer
from db import CONNECTION_ERRORS, Database
from errors import Unavailable

log = logging.getLogger("punctual.kafka.outbox")

RELAY_LOCK_KEY = 0x5057_4F42  # "PWOB"
BATCH = 500


class OutboxRelay:
    def __init__(self, db: Database, producer: Producer, topic: str, period: float = 0.5,
                 retention_hours: float = 1.0, reconnect_max: float = 10.0) -> None:
        self.db = db
        self.producer = producer
        self.topic = topic
        self.period = period
        self.retention_hours = retention_hours
        self.reconnect_max = reconnect_max
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="punctual-outbox-relay", daemon=True)
        self.sent = 0
        self.last_error: str | None = None
        self.pending: int | None = None

    def start(self) -> None:
        # From now on terminal state changes write outbox rows (see punctual_flags in database.sql).
        self.db.query("INSERT INTO punctual_flags (name) VALUES ('outbox') ON CONFLICT DO NOTHING")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=15)

    def wake(self) -> None:
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        log.info("outbox relay started (topic %s)", self.topic)
        delay = self.period
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.relay_once() == BATCH:
                    pass
                self.last_error = None
                delay = self.period
            except (KafkaError, Unavailable, *CONNECTION_ERRORS) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("outbox relay failed (%s); retrying in %.1f s", self.last_error, delay)
                delay = min(max(delay * 2, 0.5), self.reconnect_max)
            except Exception as exc:  # noqa: BLE001 - keep relaying whatever one round did
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("outbox relay failed")
                delay = min(max(delay * 2, 0.5), self.reconnect_max)
        log.info("outbox relay stopped")

    def relay_once(self) -> int:
        """Publish up to one batch; returns how many rows were sent."""
        with self.db.transaction() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s) AS mine", (RELAY_LOCK_KEY,))
            if not cur.fetchone()["mine"]:
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
            self.pending = cur.fetchone()["n"]
        self.sent += len(rows)
        return len(rows)
