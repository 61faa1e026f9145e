"""One Kafka producer per instance (kafka-python's producer is thread-safe), rebuilt after errors."""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from kafka import KafkaProducer
from kafka.errors import KafkaError

from errors import Unavailable

log = logging.getLogger("punctual.kafka.producer")

Headers = list[tuple[str, bytes]]


class Producer:
    def __init__(self, bootstrap_servers: str, timeout: float = 5.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout = timeout
        self._producer: Optional[KafkaProducer] = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def _get(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    acks="all",                      # an outcome or alert counts as sent once all replicas have it
                    retries=3,
                    linger_ms=2,
                    max_block_ms=int(self.timeout * 1000),
                    request_timeout_ms=int(self.timeout * 1000),
                    # kafka-python 3 waits 30 s for a first broker by default, even in the constructor:
                    # an API request (POST /alerts) must get its 503 sooner.
                    bootstrap_timeout_ms=int(self.timeout * 1000),
                    client_id="punctual",
                )
            return self._producer

    def _reset(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken producer may fail too
                pass

    def send_many(self, messages: list[tuple[str, Optional[bytes], Optional[bytes], Headers]]) -> list[Any]:
        """Send (topic, key, value, headers) messages and wait until the broker acknowledged each.

        :raise KafkaError: when any was not acknowledged; the producer is rebuilt for the next call.
        """
        try:
            producer = self._get()
            futures = [producer.send(topic, key=key, value=value, headers=headers)
                       for topic, key, value, headers in messages]
            producer.flush(timeout=self.timeout)
            results = [future.get(timeout=self.timeout) for future in futures]
            self.last_error = None
            return results
        except KafkaError as exc:
            self._reset(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. connection errors surfacing as OSError
            self._reset(exc)
            raise KafkaError(f"{type(exc).__name__}: {exc}") from exc

    def send(self, topic: str, value: Optional[bytes], key: Optional[bytes] = None,
             headers: Headers | None = None) -> Any:
        return self.send_many([(topic, key, value, headers or [])])[0]

    def send_for_api(self, topic: str, value: bytes, key: Optional[bytes] = None) -> Any:
        """:raise Unavailable: (503) when the broker does not acknowledge in time."""
        try:
            return self.send(topic, value, key)
        except KafkaError as exc:
            raise Unavailable("Kafka did not acknowledge the message", {"reason": str(exc)[:300]}) from None

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)
