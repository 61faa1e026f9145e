"""The workflows topic (DESIGN.md "Workflows", issue 13) against a real Kafka-protocol broker (tansu): a message
keyed by a workflow's id starts it ({"new", "input"}) or signals it ({"signal", "value"}), once per message across
redeliveries; bad messages are recorded with their reason and skipped; and the shipped escalation example
(examples/escalation.py) pages, escalates and is acknowledged through Kafka end to end."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import requests
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from tests.conftest import kafka_env
from tests.helpers import sql, wait_for

pytestmark = pytest.mark.kafka

# The workflows topic and the escalation's targets, beside the bridge's own topics (tests/kafka_broker.py): made
# before the app starts, so its consumer finds the workflows topic at its first metadata request.
TOPICS = {"workflows": 2, "pages": 1, "escalations": 1}


@pytest.fixture
def broker(kafka_broker):
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap, request_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, partitions, 1) for name, partitions in TOPICS.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return kafka_broker


def _send(producer, key: str | bytes | None, value: Any) -> None:
    """Produce to the workflows topic: a dict as JSON, bytes (or None, a tombstone) as they are."""
    raw = value if value is None or isinstance(value, bytes) else json.dumps(value).encode()
    producer.send("workflows", key=key.encode() if isinstance(key, str) else key, value=raw)


def _count(db_url: str, query: str, params: Any = None) -> int:
    return sql(db_url, query, params)[0]["n"]


def _workflow(app, workflow_id: str) -> dict | None:
    answer = requests.get(f"{app.url}/workflows/{workflow_id}", timeout=5)
    return answer.json() if answer.status_code == 200 else None


def _wait_state(app, workflow_id: str, *states: str, timeout: float = 60.0) -> dict:
    def state():
        body = _workflow(app, workflow_id)
        return body if body is not None and body["state"] in states else None
    return wait_for(state, timeout, 0.1, f"workflow {workflow_id} to be {states}")


def _consumer_health(app) -> dict:
    return requests.get(app.url + "/health", timeout=5).json()["checks"]["kafka"]["consumer"]


def test_a_message_starts_a_workflow_under_its_key_and_a_signal_sent_before_the_wait_is_kept_for_it(
        broker, start_app, db_url):
    app = start_app(**kafka_env(broker))
    producer = broker.producer()
    _send(producer, "order-1", {"new": "tour", "input": {"x": 1, "sleep": 3}})
    producer.flush()
    started = wait_for(lambda: _workflow(app, "order-1"), 60, 0.1, "the workflow to be started from Kafka")
    assert started["workflow"] == "tour" and started["input"] == {"x": 1, "sleep": 3}
    assert started["source"] == "kafka"

    # Sent while the workflow is still on its steps or its 3 s sleep: kept until its wait_for("go") takes it.
    _send(producer, "order-1", {"signal": "go", "value": "now!"})
    producer.flush()
    done = _wait_state(app, "order-1", "completed")
    assert done["result"]["first"] == 2 and done["result"]["pair"] == [12, 4] and done["result"]["said"] == "now!"
    [signal] = done["signals"]
    assert (signal["name"], signal["value"], signal["source"], signal["step"]) == ("go", "now!", "kafka", 5)
    wait_step = done["steps"][4]
    assert (wait_step["kind"], wait_step["name"]) == ("signal", "go")
    came, waited = datetime.fromisoformat(signal["received_at"]), datetime.fromisoformat(wait_step["created_at"])
    assert came < waited, "the signal came before the wait began"
    assert _count(db_url, "SELECT count(*) AS n FROM kafka_messages WHERE topic = 'workflows'") == 2
    assert _count(db_url, "SELECT count(*) AS n FROM rejected_messages") == 0
    health = wait_for(lambda: (h := _consumer_health(app))["workflows_signalled"] == 1 and h, 10, 0.1)
    assert health["workflows_started"] == 1


def test_a_redelivered_or_repeated_start_makes_one_workflow_and_a_redelivered_signal_counts_once(
        broker, start_app, db_url):
    producer = broker.producer()
    _send(producer, "trip-9", {"new": "changing", "input": {"n": 1}})
    _send(producer, "trip-9", {"new": "changing", "input": {"n": 1}})  # the same start again, at another offset
    _send(producer, "trip-9", {"signal": "continue", "value": 1})
    producer.flush()

    # The first batch is committed to the database, its offsets are not: the next app gets it again.
    crashing = start_app(**kafka_env(broker), PUNCTUAL_CRASH_AT="bridge_before_offset_commit")
    wait_for(lambda: crashing.proc.poll() is not None, 60, 0.1, "the app to die at the crash point")
    assert _count(db_url, "SELECT count(*) AS n FROM workflows") == 1

    app = start_app(**kafka_env(broker))
    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM kafka_messages WHERE topic = 'workflows'") == 3, 60,
             0.1, "every message to be stored")
    wait_for(lambda: _consumer_health(app)["duplicates"] >= 1, 30, 0.1, "the redelivered batch to be seen again")
    done = _wait_state(app, "trip-9", "completed")
    assert done["result"] == "done" and done["input"] == {"n": 1}
    assert [(s["name"], s["value"], s["step"]) for s in done["signals"]] == [("continue", 1, 2)]
    assert _count(db_url, "SELECT count(*) AS n FROM workflows") == 1
    assert _count(db_url, "SELECT count(*) AS n FROM workflow_signals") == 1
    assert _count(db_url, "SELECT count(*) AS n FROM events WHERE workflow_id = 'trip-9'") == 2
    assert _count(db_url, "SELECT count(*) AS n FROM rejected_messages") == 0


def test_malformed_workflow_messages_are_recorded_with_their_reason_and_skipped(broker, start_app, db_url):
    app = start_app(**kafka_env(broker))
    producer = broker.producer()
    _send(producer, "finished-1", {"new": "tour", "input": {"x": 1, "sleep": 0, "timeout": 0.1}})
    _send(producer, "dup", {"new": "changing", "input": {"n": 1}})
    producer.flush()
    _wait_state(app, "finished-1", "completed")
    wait_for(lambda: _workflow(app, "dup"), 30, 0.1, "the workflow 'dup' to start")

    bad: list[tuple[str | bytes | None, Any, str]] = [
        (None, {"new": "tour", "input": {}}, "needs a key"),
        ("has space", {"new": "tour", "input": {}}, "is not a workflow id"),
        (b"\xff\xfe", {"new": "tour", "input": {}}, "is not UTF-8"),
        ("line\n", {"new": "tour", "input": {}}, "is not a workflow id"),
        ("bad-1", b"not json", "not JSON"),
        ("bad-2", None, "null value"),
        ("bad-3", [1, 2], "must be a JSON object"),
        ("bad-4", {"start": "tour"}, "neither 'new'"),
        ("bad-5", {"new": "tour", "signal": "go"}, "not both"),
        ("bad-6", {"new": "tour", "input": {}, "priority": 1}, "unexpected field(s) in a 'new' message: priority"),
        ("bad-7", {"new": 5}, "'new' must be a name"),
        ("bad-8", {"new": "no_such_workflow", "input": {}}, "no workflow named 'no_such_workflow'"),
        ("bad-9", b'{"new": "tour", "input": {"x": "\\u0000"}}', "\\u0000"),
        ("ghost", {"signal": "go", "value": 1}, "no workflow 'ghost'"),
        ("finished-1", {"signal": "go", "value": 1}, "is completed"),
        ("dup", {"new": "changing", "input": {"n": 2}}, "already used with another workflow or input"),
    ]
    for key, value, _ in bad:
        _send(producer, key, value)
    _send(producer, "good-1", {"new": "tour", "input": {"x": 2, "sleep": 0, "timeout": 0.1}})  # after them all
    producer.flush()

    wait_for(lambda: _count(db_url, "SELECT count(*) AS n FROM rejected_messages") >= len(bad), 60, 0.1,
             "the bad messages to be recorded")
    _wait_state(app, "good-1", "completed")
    assert _count(db_url, "SELECT count(*) AS n FROM rejected_messages") == len(bad)
    listed = requests.get(app.url + "/rejected-messages", timeout=5).json()["rejected"]
    assert all(r["topic"] == "workflows" for r in listed)
    reasons = " | ".join(r["reason"] for r in listed)
    by_key = {r["key"]: r["reason"] for r in listed if r["key"] is not None}
    for key, _, fragment in bad:
        if isinstance(key, str):
            assert fragment in by_key[key], (key, fragment, by_key[key])
        else:
            assert fragment in reasons, (fragment, reasons)
    assert by_key["bad-8"].startswith("start workflow 'no_such_workflow' refused: ")
    assert by_key["finished-1"].startswith("signal 'go' refused: ")
    assert any(r["value_text"] == "not json" for r in listed)
    # Every offset is recorded once, the rejected ones too, so none of them comes back.
    assert _count(db_url, "SELECT count(*) AS n FROM kafka_messages WHERE topic = 'workflows'") == len(bad) + 3
    # Nothing they said was done: no other workflow, no signal, the first 'dup' as it was.
    assert sorted(r["id"] for r in sql(db_url, "SELECT id FROM workflows")) == ["dup", "finished-1", "good-1"]
    assert _count(db_url, "SELECT count(*) AS n FROM workflow_signals") == 0
    assert _workflow(app, "dup")["input"] == {"n": 1}
    assert _consumer_health(app)["rejected"] == len(bad)


# -- the shipped escalation example, end to end --------------------------------------------------------------

def _escalation_callbacks(app) -> None:
    for name, topic in (("page_oncall", "pages"), ("escalate", "escalations")):
        made = requests.post(app.url + "/callbacks", json={"name": name, "kind": "kafka", "target": topic}, timeout=5)
        assert made.status_code == 201, made.text


def _event_id(message) -> int:
    return int(dict(message.headers)["punctual-event-id"].decode())


def test_the_escalation_example_without_an_acknowledgement_escalates_three_times_and_completes(
        broker, start_app, db_url):
    app = start_app(**kafka_env(broker))
    _escalation_callbacks(app)
    producer = broker.producer()
    _send(producer, "alert-7", {"new": "escalation",
                                "input": {"alert": "disk full on db-1", "ack_timeout": 1, "pause": 1}})
    producer.flush()

    done = _wait_state(app, "alert-7", "completed", timeout=90)
    assert done["result"] == {"acknowledged_by": None, "level": 3}
    assert [(s["kind"], s["name"]) for s in done["steps"]] == [
        ("call", "page_oncall"), ("signal", "acknowledged"), ("call", "escalate"), ("sleep", ""),
        ("call", "page_oncall"), ("signal", "acknowledged"), ("call", "escalate"), ("sleep", ""),
        ("call", "page_oncall"), ("signal", "acknowledged"), ("call", "escalate")]

    pages = broker.read_all("pages", expect=3, timeout=30)
    escalations = broker.read_all("escalations", expect=3, timeout=30)
    assert [json.loads(m.value) for m in pages] == [{"alert": "disk full on db-1", "level": n} for n in (1, 2, 3)]
    assert [json.loads(m.value) for m in escalations] == [
        {"alert": "disk full on db-1", "level": n} for n in (1, 2, 3)]
    # Each message is its step's event, produced once.
    calls = [s["event_id"] for s in done["steps"] if s["kind"] == "call"]
    assert [_event_id(m) for m in pages] == calls[0::2] and [_event_id(m) for m in escalations] == calls[1::2]
    # An escalation comes only after the acknowledgement timeout passed since its page (timestamps in ms,
    # both written by the app's producer).
    for page, escalation in zip(pages, escalations):
        assert escalation.timestamp - page.timestamp >= 990, (page.timestamp, escalation.timestamp)


def test_the_escalation_example_acknowledged_on_the_workflows_topic_after_the_first_page_completes_at_level_1(
        broker, start_app, db_url):
    app = start_app(**kafka_env(broker))
    _escalation_callbacks(app)
    producer = broker.producer()
    _send(producer, "alert-8", {"new": "escalation", "input": {"alert": "api errors", "ack_timeout": 60, "pause": 1}})
    producer.flush()

    [page] = broker.read_all("pages", expect=1, timeout=60)
    assert json.loads(page.value) == {"alert": "api errors", "level": 1}
    _send(producer, "alert-8", {"signal": "acknowledged", "value": "ann"})
    producer.flush()

    done = _wait_state(app, "alert-8", "completed", timeout=30)
    assert done["result"] == {"acknowledged_by": "ann", "level": 1}
    assert [(s["kind"], s["name"], s["state"]) for s in done["steps"]] == [
        ("call", "page_oncall", "completed"), ("signal", "acknowledged", "completed")]
    assert [(s["name"], s["value"], s["source"]) for s in done["signals"]] == [("acknowledged", "ann", "kafka")]
    assert broker.read_all("escalations", expect=0, timeout=3) == []
    assert len(broker.read_all("pages", expect=1, timeout=10)) == 1
