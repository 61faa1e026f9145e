"""Kafka in: a consumer-group consumer on the alerts, schedules and workflows topics.

Order per batch: poll -> one database transaction (events + kafka_messages rows) -> commit ->
only then commit the offsets. Auto-commit is off: kafka-python's default would commit offsets of
polled messages whether or not their events were stored. A crash before the offset commit
redelivers the batch, and the kafka_messages primary key makes it a no-op.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

import crashpoints
from config import Settings
from controllers.ingest import Message, Topics, ingest
from db import Database
from engine.role import TRANSIENT, Role

log = logging.getLogger("punctual.kafka.consumer")


class AlertConsumer(Role):
    """What wakes it: messages polled from the alerts, schedules and workflows topics (it waits in poll itself).
    What it writes: the messages' events, workflows and signals, and kafka_messages rows, in one transaction per
    batch."""

    name = "kafka-consumer"
    # KafkaError covers NoBrokersAvailable (2.x) and KafkaTimeoutError (3.x).
    transient = (KafkaError, *TRANSIENT)

    def __init__(self, db: Database, settings: Settings, on_created: Callable[[], None]) -> None:
        super().__init__(period=0, retry_initial=0.5, retry_cap=settings.reconnect_max_seconds, logger=log)
        self.db = db
        self.settings = settings
        self._on_created = on_created
        self._consumer: KafkaConsumer | None = None
        self.connected = False
        self.ingested = 0
        self.workflows_started = 0
        self.workflows_signalled = 0
        self.rejected = 0
        self.duplicates = 0
        self.lag: int | None = None
        self._lag_measured = 0.0
        self.topics = Topics(schedules=settings.kafka_schedules_topic, workflows=settings.kafka_workflows_topic)
        # Once each, in case two settings name the same topic.
        self.subscribed = list(dict.fromkeys((settings.kafka_alerts_topic, settings.kafka_schedules_topic,
                                              settings.kafka_workflows_topic)))

    def describe(self) -> str:
        return ", ".join(self.subscribed)

    def stop(self, timeout: float = 15.0) -> bool:
        return super().stop(timeout)

    def _new_consumer(self) -> KafkaConsumer:
        poll_interval = self.settings.kafka_max_poll_interval_ms
        session = min(10_000, poll_interval)
        return KafkaConsumer(
            *self.subscribed,
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.settings.kafka_group_id,
            client_id=f"punctual-{self.settings.instance_name}",
            enable_auto_commit=False,           # offsets only after the database commit
            auto_offset_reset="earliest",       # a new group starts at the beginning, not at "now"
            max_poll_records=200,
            max_poll_interval_ms=poll_interval,
            session_timeout_ms=session,
            heartbeat_interval_ms=max(session // 3, 100),
            request_timeout_ms=max(30_000, session + 5_000),
            bootstrap_timeout_ms=10_000,  # then retry with backoff, logging it, rather than wait silently
        )

    def run_once(self) -> None:
        if self._consumer is None:
            self._consumer = self._new_consumer()
            self.connected = True
            self.log.info("Kafka consumer connected to %s", self.settings.kafka_bootstrap_servers)
        consumer = self._consumer
        records = consumer.poll(timeout_ms=500)
        if records:
            self._handle(consumer, records)
        self._measure_lag(consumer)

    def reset(self) -> None:
        """Closed and rebuilt after a failure: its fetch position rewinds to the committed offsets, so a batch
        whose events were not stored is delivered again rather than skipped."""
        self.connected = False
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close(autocommit=False)  # never commit what was not stored
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self.reset()

    def _handle(self, consumer: KafkaConsumer, records: dict[TopicPartition, list[Any]]) -> None:
        messages = [
            Message(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or []))
            for batch in records.values() for r in batch
        ]
        # If this raises, the consumer is closed and rebuilt: its fetch position rewinds to the
        # committed offsets, so the batch is delivered again rather than skipped.
        result = ingest(self.db, messages, self.topics)
        self.ingested += len(result.created)
        self.workflows_started += result.started
        self.workflows_signalled += result.signalled
        self.rejected += result.rejected
        self.duplicates += result.duplicates
        if result.created:
            self._on_created()
        crashpoints.reached("bridge_before_offset_commit")
        offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1) for tp, batch in records.items()}
        try:
            consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced; another member gets these messages again and dedupes them.
            log.warning("offset commit failed after a rebalance (%s); redelivery will be deduplicated", exc)

    def _measure_lag(self, consumer: KafkaConsumer) -> None:
        """Lag = end offsets minus our positions; asked of the broker at most every 5 s."""
        now = time.monotonic()
        if now - self._lag_measured < 5:
            return
        self._lag_measured = now
        try:
            assigned = consumer.assignment()
            if not assigned:
                return
            ends = consumer.end_offsets(list(assigned))
            self.lag = sum(max(ends[tp] - consumer.position(tp), 0) for tp in assigned)
        except Exception:  # noqa: BLE001 - lag is informational
            self.lag = None
