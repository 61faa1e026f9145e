"""The Kafka bridge against a real Kafka-protocol broker (tansu): alerts in exactly once, bad
messages recorded and skipped, kafka-message-scheduler schedules, outcomes out through the outbox."""
from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import kafka_env
from tests.helpers import sql, wait_for

pytestmark = pytest.mark.kafka


def _count(db_url: str, query: str, params=None) -> int:
    return sql(db_url, query, params)[0]["n"]


def test_a_thousand_alerts_become_exactly_a_thousand_events_across_a_kill_9(kafka_broker, start_app, db_url):
    app = start_app(**kafka_env(kafka_broker))
    producer = kafka_broker.producer()
    for i in range(1000):
        producer.send("alerts", json.dumps({"alerts": [{"alert_id": i, "message": f"alert {i}"}]}).encode())
        if i == 400:
            producer.flush()
            wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'") > 0, 30,
                     message="the first alerts to arrive")
            app.kill()
    producer.flush()
    producer.close()

    start_app(**kafka_env(kafka_broker))
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'") >= 1000, 60, 0.2,
             "all alerts to become events")
    time.sleep(2)  # let any redelivery land, so a duplicate would show
    rows = sql(db_url, """SELECT count(*) AS n, count(DISTINCT payload->>'alert_id') AS ids
                          FROM events WHERE source = 'kafka'""")[0]
    assert rows == {"n": 1000, "ids": 1000}
    assert _count(db_url, "SELECT count(*) AS n FROM kafka_messages WHERE topic = 'alerts'") == 1000


def test_a_crash_between_the_database_commit_and_the_offset_commit_adds_nothing_twice(kafka_broker, start_app, db_url):
    producer = kafka_broker.producer()
    for i in range(20):
        producer.send("alerts", json.dumps({"alerts": [{"alert_id": i, "message": "m"}]}).encode())
    producer.flush()
    crashing = start_app(**kafka_env(kafka_broker), PUNCTUAL_CRASH_AT="bridge_before_offset_commit")
    wait_for(lambda: crashing.proc.poll() is not None, 60, 0.1, "the app to die at the crash point")
    stored = _count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'")
    assert stored > 0  # the batch was committed to the database, its offsets were not

    start_app(**kafka_env(kafka_broker))
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'") >= 20, 60, 0.2)
    time.sleep(2)
    assert _count(db_url, "SELECT count(DISTINCT payload->>'alert_id') AS n FROM events WHERE source = 'kafka'") == 20
    assert _count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'") == 20


def test_malformed_messages_are_recorded_and_skipped_while_good_ones_become_events(kafka_broker, start_app, db_url):
    app = start_app(**kafka_env(kafka_broker))
    producer = kafka_broker.producer()
    bad = [b"not json", b"\xff\xfe", json.dumps({"type": "alert"}).encode(), None,
           json.dumps({"alerts": [{"alert_id": 1}]}).encode(),                      # misses message
           json.dumps({"callback": "NoSuchCallback", "payload": {}}).encode(),
           json.dumps({"callback": "Addition", "payload": {}, "scheduled_for": "2030-01-01T00:00:00"}).encode(),
           b'{"alerts": [{"alert_id": 1, "message": "\\u0000"}]}']
    for index, value in enumerate(bad):
        producer.send("alerts", json.dumps({"alerts": [{"alert_id": f"good-{index}", "message": "ok"}]}).encode(),
                      partition=0)
        producer.send("alerts", value, key=b"bad", partition=0)
    producer.send("alerts", json.dumps({"callback": "Addition", "payload": {"x": 1, "y": 2}}).encode(), partition=0)
    producer.flush()

    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'") >= len(bad) + 1, 60,
             0.2, "good messages to become events")
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM rejected_messages") >= len(bad), 30)
    assert _count(db_url, "SELECT count(*) AS n FROM rejected_messages") == len(bad)
    listed = requests.get(app.url + "/rejected-messages", timeout=5).json()["rejected"]
    reasons = " | ".join(r["reason"] for r in listed)
    for fragment in ("not JSON", "not UTF-8", "neither", "null value", "misses message", "unknown callback",
                     "offset", "\\u0000"):
        assert fragment in reasons, (fragment, reasons)
    assert any(r["value_text"] == "not json" for r in listed)
    # The plain event among them became an event of its callback, and runs.
    wait_for(lambda: sql(db_url, """SELECT e.result FROM events e JOIN callbacks c ON c.id = e.callback_id
                                    WHERE c.name = 'Addition' AND e.source = 'kafka' AND e.state = 'finished'"""),
             20, 0.1, "the plain event to run")
    assert _count(db_url, "SELECT count(*) AS n FROM events e JOIN callbacks c ON c.id = e.callback_id "
                          "WHERE c.name = 'Alert' AND e.source = 'kafka'") == len(bad)


def _schedule(producer, key: str, value: bytes | None, epoch: float, **headers: str) -> None:
    hdrs = [("scheduler-epoch", f"{epoch:.3f}".encode()), ("scheduler-target-topic", b"fired"),
            ("scheduler-target-key", f"target-{key}".encode())]
    hdrs += [(name, v.encode()) for name, v in headers.items()]
    producer.send("schedules", key=key.encode(), value=value, headers=hdrs if value is not None else [])


def test_scheduled_kafka_messages_fire_at_their_epoch_and_tombstones_and_replacements_apply(kafka_broker, start_app,
                                                                                            db_url):
    start_app(**kafka_env(kafka_broker))
    producer = kafka_broker.producer()
    # The cancelled and moved messages start far ahead, so that the tombstone and the replacement
    # are applied before they could fire even on a loaded machine: the test proves what a tombstone
    # does, not how fast the bridge is.
    epoch = time.time() + 4
    _schedule(producer, "plain", b"hello", epoch, trace="abc")
    _schedule(producer, "cancelled", b"never", epoch + 60)
    _schedule(producer, "moved", b"old value", epoch + 60)
    producer.flush()
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE schedule_key IS NOT NULL") >= 3, 30, 0.1)
    producer.send("schedules", key=b"cancelled", value=None)            # tombstone
    _schedule(producer, "moved", b"new value", epoch + 1)                 # replacement
    producer.flush()
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE schedule_key LIKE '%:cancelled' "
                                    "AND state = 'cancelled'") == 1, 30, 0.1, "the tombstone to cancel")
    assert _count(db_url, "SELECT count(*) AS n FROM events WHERE schedule_key LIKE '%:cancelled' "
                          "AND state <> 'cancelled'") == 0

    fired = kafka_broker.read_all("fired", expect=2, timeout=40)
    by_key = {m.key.decode(): m for m in fired}
    assert set(by_key) == {"target-plain", "target-moved"}, [m.key for m in fired]
    plain = by_key["target-plain"]
    headers = {name: value.decode() for name, value in plain.headers}
    assert plain.value == b"hello"
    assert headers["scheduler-key"] == "plain" and headers["scheduler-topic"] == "schedules"
    assert float(headers["scheduler-timestamp"]) == pytest.approx(epoch, abs=0.01)
    assert headers["trace"] == "abc"
    assert by_key["target-moved"].value == b"new value"
    # Never early; within the lateness target (broker produce time included).
    assert plain.timestamp / 1000 >= epoch - 0.01
    assert plain.timestamp / 1000 - epoch < 1.0


def test_outcomes_reach_the_history_topic_once_each_also_after_a_broker_restart(kafka_broker, start_app, db_url):
    app = start_app(**kafka_env(kafka_broker))
    first = [requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": i, "y": 1}},
                           timeout=5).json()["id"] for i in range(5)]
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NOT NULL") >= 5, 30, 0.1)
    before = kafka_broker.read_all("event-history", expect=5, timeout=30)
    assert sorted(json.loads(m.value)["event_id"] for m in before) == sorted(first)

    kafka_broker.stop()
    second = [requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": i, "y": 2}},
                            timeout=5).json()["id"] for i in range(5)]
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE state = 'finished'") >= 10, 20, 0.1)
    assert _count(db_url, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL") == 5  # held while Kafka is down

    kafka_broker.start()  # tansu keeps data in memory: the topic starts empty again
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL") == 0, 60, 0.2,
             "the relay to catch up")
    after = kafka_broker.read_all("event-history", expect=5, timeout=30)
    ids = [json.loads(m.value)["event_id"] for m in after]
    assert sorted(ids) == sorted(second)  # each once, none invented
    assert all(json.loads(m.value)["state"] == "finished" for m in after)


def test_the_app_serves_without_a_broker_and_picks_the_bridge_up_when_it_appears(tmp_path, start_app, db_url):
    from tests.kafka_broker import Broker

    broker = Broker(tmp_path)  # its port is reserved but nothing listens yet
    app = start_app(**kafka_env(broker))
    health = requests.get(app.url + "/health", timeout=5).json()
    assert health["checks"]["kafka"]["status"] == "down"
    created = requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1}}, timeout=5)
    assert created.status_code == 201
    refused = requests.post(app.url + "/alerts", json={"message": "nobody hears"}, timeout=30)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"

    broker.start()
    try:
        sent = wait_for(lambda: (r := requests.post(app.url + "/alerts", json={"message": "hello"}, timeout=30))
                        .status_code == 202 and r, 60, 0.5, "POST /alerts to succeed")
        assert sent.json()["topic"] == "alerts"
        wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM events WHERE source = 'kafka'") == 1, 60, 0.2,
                 "the alert to arrive through the bridge")
        wait_for(lambda: requests.get(app.url + "/health", timeout=5).json()["checks"]["kafka"]["status"] == "ok",
                 30, 0.2)
    finally:
        broker.stop()


def test_post_alerts_answers_503_when_kafka_is_not_configured(client):
    answer = client.post("/alerts", json={"message": "hello"})
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "unavailable"


def test_a_kafka_callback_produces_its_payload_with_key_and_headers_and_a_broker_error_is_a_retried_attempt(
        kafka_broker, start_app, db_url):
    app = start_app(**kafka_env(kafka_broker))
    created = requests.post(app.url + "/callbacks", json={"name": "Publish", "kind": "kafka", "target": "fired",
                                                          "config": {"headers": {"team": "ops"}}}, timeout=5)
    assert created.status_code == 201, created.text
    event = requests.post(app.url + "/events", json={
        "callback": "Publish", "payload": {"value": {"order": 7}, "key": "order-7", "headers": {"kind": "paid"}}},
        timeout=5).json()
    message = kafka_broker.read_all("fired", expect=1, timeout=30)[0]
    assert message.key == b"order-7" and json.loads(message.value) == {"order": 7}
    headers = {name: value.decode() for name, value in message.headers}
    assert headers["team"] == "ops" and headers["kind"] == "paid"
    assert headers["punctual-event-id"] == str(event["id"]) and headers["punctual-attempt"] == "1"
    done = wait_for(lambda: (r := requests.get(f"{app.url}/events/{event['id']}", timeout=5).json())["state"]
                    == "finished" and r, 20)
    assert done["result"]["topic"] == "fired"

    metrics = requests.get(app.url + "/metrics", timeout=5).text
    assert "punctual_kafka_consumer_connected 1.0" in metrics and "punctual_outbox_pending" in metrics

    kafka_broker.stop()
    failing = requests.post(app.url + "/events", json={"callback": "Publish", "payload": {"value": "x"},
                                                       "max_attempts": 2}, timeout=5).json()
    failed = wait_for(lambda: (r := requests.get(f"{app.url}/events/{failing['id']}", timeout=5).json())["state"]
                      == "failed" and r, 90, 0.5, "both attempts to fail while the broker is down")
    assert failed["attempts"] == 2 and "Kafka did not acknowledge" in failed["last_error"]


def test_without_a_bridge_no_outbox_rows_pile_up_and_the_first_bridge_turns_the_outbox_on(live_client, db_url):
    """A deployment without Kafka must not grow an outbox nobody relays."""
    done = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1}}).json["id"]
    wait_for(lambda: live_client.get(f"/events/{done}").json["state"] == "finished", 10)
    assert _count(db_url, "SELECT count(*) AS n FROM outbox") == 0

    sql(db_url, "INSERT INTO punctual_flags (name) VALUES ('outbox')")  # as OutboxRelay.start does
    later = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 2, "y": 2}}).json["id"]
    wait_for(lambda: live_client.get(f"/events/{later}").json["state"] == "finished", 10)
    assert sql(db_url, "SELECT event_id FROM outbox") == [{"event_id": later}]
