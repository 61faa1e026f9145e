"""Retention: deletes what the retention settings say is old, in small batches, one instance at a time.

What it owns: the 'retention' lease in maintenance_leases (taken for a few minutes and renewed while it works, so
a second instance, or a second round, never deletes beside it). What wakes it: its period
(RETENTION_INTERVAL_SECONDS). What it writes: deletes terminal events (finished, failed, cancelled) that ended
more than RETENTION_DAYS ago, with their history (the foreign key cascades), workflows that ended as long ago
(with their steps and signals), published outbox rows older than OUTBOX_RETENTION_DAYS, the records of consumed
Kafka messages older than KAFKA_MESSAGES_RETENTION_DAYS, and rejected Kafka messages older
than REJECTED_RETENTION_DAYS; never a scheduled or running event. Each batch is one short transaction, so
claims and outcomes never wait behind a long delete. The audit log files keep every line.
"""
from __future__ import annotations

from config import Settings
from db import Database
from engine.role import Role
from metrics import Metrics

LEASE = "retention"
BATCH = 1000
LEASE_SECONDS = 300


def take_lease(db: Database, name: str, holder: str, seconds: float) -> bool:
    """Take (or renew) a maintenance lease; False when another holder's lease has not run out."""
    rows = db.query(
        """INSERT INTO maintenance_leases (name, holder, until) VALUES (%s, %s, now() + make_interval(secs => %s))
           ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
           WHERE maintenance_leases.until < now() OR maintenance_leases.holder = EXCLUDED.holder
           RETURNING holder""", (name, holder, seconds))
    return bool(rows)


def give_back_lease(db: Database, name: str, holder: str) -> None:
    db.query("DELETE FROM maintenance_leases WHERE name = %s AND holder = %s", (name, holder))


class Retention(Role):
    name = "retention"

    def __init__(self, db: Database, settings: Settings, metrics: Metrics) -> None:
        super().__init__(period=settings.retention_interval_seconds, retry_cap=settings.reconnect_max_seconds)
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.holder = settings.instance_name

    def describe(self) -> str:
        days = self.settings.retention_days
        return f"events kept {days:g} days" if days > 0 else "events kept forever"

    def run_once(self) -> None:
        settings = self.settings
        if max(settings.retention_days, settings.rejected_retention_days, settings.outbox_retention_days,
               settings.kafka_messages_retention_days) <= 0:
            return
        if not take_lease(self.db, LEASE, self.holder, LEASE_SECONDS):
            return  # another instance is pruning
        try:
            self.prune()
        finally:
            give_back_lease(self.db, LEASE, self.holder)

    def prune(self) -> dict[str, int]:
        """Delete what is old, batch by batch, while this instance holds the lease; rows deleted per table."""
        settings = self.settings
        deleted = {
            "events": self._in_batches("events", settings.retention_days, _OLD_EVENTS, renew=True),
            # Workflows that ended as long ago, with their steps and signals (cascade); their events went above.
            "workflows": self._in_batches("workflows", settings.retention_days, _OLD_WORKFLOWS),
            "outbox": self._in_batches("outbox", settings.outbox_retention_days, _OLD_OUTBOX),
            "kafka_messages": self._in_batches("kafka_messages", settings.kafka_messages_retention_days,
                                               _OLD_KAFKA_MESSAGES),
            "rejected_messages": self._in_batches("rejected_messages", settings.rejected_retention_days,
                                                  _OLD_REJECTED),
        }
        if any(deleted.values()):
            self.log.info("retention deleted %d events (with their history), %d workflows (with their steps), "
                          "%d outbox rows, %d Kafka message records and %d rejected messages", deleted["events"],
                          deleted["workflows"], deleted["outbox"], deleted["kafka_messages"],
                          deleted["rejected_messages"])
        return deleted

    def _in_batches(self, table: str, days: float, statement: str, renew: bool = False) -> int:
        """Run a DELETE of at most BATCH rows older than `days` until one deletes fewer; 0 days keeps all.
        `renew`: renew the lease between batches (a long backlog), stopping if someone else took it."""
        total = 0
        while days > 0 and not self.stopping:
            rows = self.db.query(statement, {"seconds": days * 86400, "batch": BATCH})
            total += len(rows)
            self.metrics.pruned.labels(table).inc(len(rows))
            if len(rows) < BATCH:
                break
            if renew and not take_lease(self.db, LEASE, self.holder, LEASE_SECONDS):
                break  # the lease ran out meanwhile and someone else took it
        return total


_OLD_EVENTS = """DELETE FROM events WHERE id IN (
                     SELECT id FROM events
                     WHERE state IN ('finished', 'failed', 'cancelled')
                       AND finished_at < now() - make_interval(secs => %(seconds)s)
                     ORDER BY finished_at, id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
                 RETURNING id"""
_OLD_WORKFLOWS = """DELETE FROM workflows WHERE id IN (
                        SELECT id FROM workflows
                        WHERE state IN ('completed', 'failed', 'cancelled')
                          AND finished_at < now() - make_interval(secs => %(seconds)s)
                        ORDER BY finished_at, id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
                    RETURNING id"""
# The oldest rows by id (ids follow time); of those, the ones published and old enough. An unpublished one (Kafka
# away for days) stays, and so stops the walk: nothing newer can be older.
_OLD_OUTBOX = """DELETE FROM outbox WHERE id IN (
                     SELECT id FROM (SELECT id, sent_at, created_at FROM outbox ORDER BY id LIMIT %(batch)s) AS oldest
                     WHERE sent_at IS NOT NULL AND created_at < now() - make_interval(secs => %(seconds)s))
                 RETURNING id"""
_OLD_KAFKA_MESSAGES = """DELETE FROM kafka_messages WHERE (topic, partition, "offset") IN (
                             SELECT topic, partition, "offset" FROM kafka_messages
                             WHERE received_at < now() - make_interval(secs => %(seconds)s)
                             ORDER BY received_at LIMIT %(batch)s)
                         RETURNING 1"""
_OLD_REJECTED = """DELETE FROM rejected_messages WHERE id IN (
                       SELECT id FROM rejected_messages WHERE received_at < now() - make_interval(secs => %(seconds)s)
                       ORDER BY id LIMIT %(batch)s)
                   RETURNING id"""
