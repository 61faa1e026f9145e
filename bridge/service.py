"""The bridge of one instance: consumer, outbox relay and the shared producer, started and stopped together."""
from __future__ import annotations

import logging
from typing import Any, Callable

from bridge.consumer import AlertConsumer
from bridge.outbox import OutboxRelay
from bridge.producer import Producer
from config import Settings
from db import Database

log = logging.getLogger("punctual.kafka")


class Bridge:
    def __init__(self, db: Database, settings: Settings, producer: Producer, on_created: Callable[[], None]) -> None:
        self.settings = settings
        self.producer = producer
        self.consumer = AlertConsumer(db, settings, on_created)
        self.relay = OutboxRelay(db, self.producer, settings.kafka_history_topic,
                                 reconnect_max=settings.reconnect_max_seconds)

    def start(self) -> None:
        self.consumer.start()
        self.relay.start()
        log.info("Kafka bridge started (%s)", self.settings.kafka_bootstrap_servers)

    def stop(self) -> None:
        self.consumer.stop()
        self.relay.stop()
        self.producer.close()
        log.info("Kafka bridge stopped")

    def health(self) -> dict[str, Any]:
        consumer_ok = self.consumer.alive and self.consumer.connected
        relay_ok = self.relay.alive and self.relay.last_error is None
        return {
            "status": "ok" if consumer_ok and relay_ok else "down",
            "consumer": {"connected": self.consumer.connected, "lag": self.consumer.lag,
                         "ingested_events": self.consumer.ingested,
                         "workflows_started": self.consumer.workflows_started,
                         "workflows_signalled": self.consumer.workflows_signalled, "rejected": self.consumer.rejected,
                         "duplicates": self.consumer.duplicates, "last_error": self.consumer.last_error},
            "outbox": {"pending": self.relay.pending, "sent": self.relay.sent, "last_error": self.relay.last_error},
            "producer": {"last_error": self.producer.last_error},
        }
