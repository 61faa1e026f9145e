"""The Kafka broker killed and restarted in the middle of a stream of 1,000 alerts.

tansu keeps its log in memory, so a restart loses every message the bridge had not consumed yet,
the group's committed offsets, and the log's offsets themselves (they start again at 0). A real
broker keeps all three. So the test plays the producer's part honestly: it records which alerts the
broker acknowledged, and after the restart re-sends every alert the bridge had not stored (the
broker lost them, not the app), after padding each partition up to the offsets the app has already
stored (those padding messages sit at offsets the app has seen, so it must take them for the
redeliveries they look like and skip them). Every alert must then be exactly one event.
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import kafka_env
from tests.faults.conftest import count, record_figure
from tests.helpers import sql, wait_for

pytestmark = pytest.mark.kafka

N = 1000
PARTITIONS = 2


def _alert(i: int) -> bytes:
    return json.dumps({"alerts": [{"alert_id": i, "message": f"alert {i}"}]}).encode()


def _stored(db_url: str) -> int:
    return count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'")


def test_a_broker_restart_in_the_middle_of_a_thousand_alerts_makes_each_alert_one_event(kafka_broker, start_app,
                                                                                         db_url):
    app = start_app(**kafka_env(kafka_broker))
    producer = kafka_broker.producer()
    acked: set[int] = set()
    futures = []
    for i in range(N // 2):
        futures.append((i, producer.send("alerts", _alert(i), partition=i % PARTITIONS)))
        if i == N // 4:
            producer.flush()
            wait_for(lambda: _stored(db_url) > 0, 30, 0.05, "the bridge to consume")
    producer.flush()
    for i, future in futures:
        future.get(10)
        acked.add(i)
    producer.close()
    # Kill it while the bridge is (most likely) still working through the backlog.
    kafka_broker.stop()
    killed_with = _stored(db_url)
    # A batch polled before the kill is still committed to the database; wait until nothing moves.
    last = [-1, time.monotonic()]

    def settled() -> bool:
        now = _stored(db_url)
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return time.monotonic() - last[1] > 1.5
    wait_for(settled, 20, 0.1, "the stored count to settle")
    before_restart = _stored(db_url)
    health = app.healthy() and sql(db_url, "SELECT 1 AS ok")
    assert health, "the app stopped serving when the broker went away"

    kafka_broker.start()
    stored_ids = {int(r["alert_id"]) for r in sql(db_url, "SELECT payload->>'alert_id' AS alert_id FROM events "
                                                          "WHERE source = 'kafka'")}
    next_offset = {r["partition"]: r["n"] + 1 for r in sql(
        db_url, "SELECT partition, max(\"offset\") AS n FROM kafka_messages WHERE topic = 'alerts' GROUP BY partition")}
    producer = kafka_broker.producer()
    padding = 0
    for partition in range(PARTITIONS):
        for _ in range(next_offset.get(partition, 0)):
            producer.send("alerts", _alert(-1), partition=partition)  # sits at an offset the app has stored
            padding += 1
    producer.flush()
    lost_by_broker = sorted(acked - stored_ids)
    resend = lost_by_broker + list(range(N // 2, N))
    for future in [producer.send("alerts", _alert(i), partition=i % PARTITIONS) for i in resend]:
        future.get(10)  # acknowledged by the restarted broker
    producer.close()

    wait_for(lambda: _stored(db_url) >= N, 60, 0.2, "every alert to become an event")
    time.sleep(2)  # a duplicate arriving late would show now
    rows = sql(db_url, """SELECT count(*) AS n, count(DISTINCT payload->>'alert_id') AS ids,
                                 min((payload->>'alert_id')::int) AS lo, max((payload->>'alert_id')::int) AS hi
                          FROM events WHERE source = 'kafka'""")[0]
    assert rows == {"n": N, "ids": N, "lo": 0, "hi": N - 1}, rows
    wait_for(lambda: app.healthy(), 10, 0.2)
    wait_for(lambda: requests.get(app.url + "/health", timeout=5).json()["checks"]["kafka"]["status"]
             == "ok", 30, 0.2, "the bridge to report Kafka ok again")
    record_figure("Kafka broker restart during 1,000 alerts",
                  f"{killed_with} stored when the broker died, {before_restart} once settled; the broker lost "
                  f"{len(lost_by_broker)} acknowledged alerts (re-sent); {padding} padding messages skipped; "
                  f"1,000 events, each alert once")
