"""Retention: terminal events and their history go RETENTION_DAYS after they ended, in batches, one instance at a
time; nothing scheduled or running ever goes, and the audit log keeps every line."""
from __future__ import annotations

import json
import threading

from engine.retention import LEASE, Retention, give_back_lease, take_lease
from metrics import Metrics
from tests.helpers import sql, wait_for

OLD_AND_NEW = """
INSERT INTO events (callback_id, state, attempts, scheduled_for, started_at, finished_at, lease_until, worker)
SELECT c.id, v.state, v.attempts, now() - v.age, now() - v.age, v.ended, v.lease, v.worker
FROM callbacks c, (VALUES
    ('finished',  1, interval '10 days', now() - interval '10 days', NULL::timestamptz, 'w'),
    ('failed',    3, interval '10 days', now() - interval '9 days',  NULL, 'w'),
    ('cancelled', 0, interval '10 days', now() - interval '8 days',  NULL, NULL),
    ('finished',  1, interval '1 day',   now() - interval '1 day',   NULL, 'w'),
    ('scheduled', 0, interval '30 days', NULL, NULL, NULL),
    ('running',   1, interval '30 days', NULL, now() + interval '1 hour', 'w')
) AS v(state, attempts, age, ended, lease, worker)
WHERE c.name = 'Addition'
RETURNING id, state, finished_at < now() - interval '7 days' AS old"""


def retention(settings, db, **changes) -> Retention:
    return Retention(db, settings.with_(**changes), Metrics())


def test_only_terminal_events_older_than_the_retention_go_with_their_history(settings, db, db_url):
    made = sql(db_url, OLD_AND_NEW)
    sql(db_url, """INSERT INTO rejected_messages (topic, partition, "offset", reason, received_at)
                   VALUES ('t', 0, 1, 'old', now() - interval '40 days'), ('t', 0, 2, 'new', now())""")
    deleted = retention(settings, db, retention_days=7).prune()
    old = {r["id"] for r in made if r["old"]}
    assert deleted == {"events": 3, "workflows": 0, "outbox": 0, "kafka_messages": 0, "rejected_messages": 1}
    left = {r["id"]: r["state"] for r in sql(db_url, "SELECT id, state FROM events")}
    assert set(left) == {r["id"] for r in made} - old
    assert sorted(left.values()) == ["finished", "running", "scheduled"]
    assert sql(db_url, "SELECT count(*) AS n FROM event_history WHERE event_id = ANY(%s)", (list(old),)) == [{"n": 0}]
    assert [r["reason"] for r in sql(db_url, "SELECT reason FROM rejected_messages")] == ["new"]


def test_fractions_of_a_day_count_and_zero_keeps_everything(settings, db, db_url):
    sql(db_url, OLD_AND_NEW)
    assert retention(settings, db, retention_days=0, rejected_retention_days=0).prune() == \
        {"events": 0, "workflows": 0, "outbox": 0, "kafka_messages": 0, "rejected_messages": 0}
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 6}]
    # Half a day: the event that ended a day ago goes too; the scheduled and running ones never.
    assert retention(settings, db, retention_days=0.5).prune()["events"] == 4
    assert sorted(r["state"] for r in sql(db_url, "SELECT state FROM events")) == ["running", "scheduled"]


def test_one_instance_at_a_time_holds_the_retention_lease(settings, db, db_url):
    assert take_lease(db, LEASE, "a:1", 60)
    assert not take_lease(db, LEASE, "b:2", 60)  # a holds it
    assert take_lease(db, LEASE, "a:1", 60)      # a renews it
    give_back_lease(db, LEASE, "a:1")
    assert take_lease(db, LEASE, "b:2", 60)
    sql(db_url, "UPDATE maintenance_leases SET until = now() - interval '1 second'")
    assert take_lease(db, LEASE, "a:1", 60)      # b's ran out: a may take it


def test_instances_pruning_at_once_delete_each_row_once(settings, db, db_url):
    sql(db_url, """INSERT INTO events (callback_id, state, finished_at)
                   SELECT id, 'finished', now() - interval '30 days' FROM callbacks, generate_series(1, 5000)
                   WHERE name = 'Addition'""")
    sql(db_url, "DELETE FROM maintenance_leases")
    deleted: list[int] = []
    roles = [retention(settings, db, retention_days=7, instance_name=f"i:{n}") for n in range(3)]
    barrier = threading.Barrier(3)

    def run(role: Retention) -> None:
        barrier.wait()
        role.run_once()
        deleted.append(role.metrics.pruned.labels("events")._value.get())

    threads = [threading.Thread(target=run, args=(role,)) for role in roles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # One took the lease and deleted everything; the others found it held and did nothing.
    assert sorted(deleted) == [0, 0, 5000]
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 0}]


def test_the_audit_log_keeps_the_lines_of_events_retention_deleted(live_client, settings, db, db_url, log_dir):
    event_id = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1}}).json["id"]
    wait_for(lambda: live_client.get(f"/events/{event_id}").json["state"] == "finished", 10, message="the event")
    sql(db_url, "UPDATE events SET finished_at = now() - interval '8 days' WHERE id = %s", (event_id,))
    assert retention(settings, db, retention_days=7).prune()["events"] == 1
    assert live_client.get(f"/events/{event_id}").status_code == 404
    lines = [json.loads(line) for line in (log_dir / "events.log").read_text().splitlines()]
    assert {"event_created", "attempt_succeeded"} <= {line["action"] for line in lines if line["event_id"] == event_id}


def test_workflows_that_ended_long_ago_go_with_their_steps_and_running_ones_stay(settings, db, db_url):
    sql(db_url, """INSERT INTO workflows (id, name, state, finished_at) VALUES
                       ('old-done', 'trip', 'completed', now() - interval '10 days'),
                       ('old-failed', 'trip', 'failed', now() - interval '8 days'),
                       ('recent', 'trip', 'completed', now() - interval '1 day'),
                       ('still-waiting', 'trip', 'waiting', NULL)""")
    sql(db_url, """INSERT INTO workflow_steps (workflow_id, step, kind, name, state)
                   SELECT id, 1, 'sleep', '', 'completed' FROM workflows""")
    sql(db_url, "INSERT INTO workflow_signals (workflow_id, name) VALUES ('old-done', 'go'), ('still-waiting', 'go')")
    assert retention(settings, db, retention_days=7).prune()["workflows"] == 2
    assert sorted(r["id"] for r in sql(db_url, "SELECT id FROM workflows")) == ["recent", "still-waiting"]
    assert sorted(r["workflow_id"] for r in sql(db_url, "SELECT workflow_id FROM workflow_steps")) == [
        "recent", "still-waiting"]
    assert [r["workflow_id"] for r in sql(db_url, "SELECT workflow_id FROM workflow_signals")] == ["still-waiting"]


def test_published_outbox_rows_and_old_kafka_message_records_go_and_unpublished_rows_stay(settings, db, db_url):
    sql(db_url, """INSERT INTO outbox (event_id, body, created_at, sent_at) VALUES
                       (1, '{}', now() - interval '3 days', now() - interval '3 days'),
                       (2, '{}', now() - interval '2 days', NULL),
                       (3, '{}', now() - interval '2 days', now() - interval '2 days'),
                       (4, '{}', now() - interval '1 hour', now() - interval '1 hour')""")
    sql(db_url, """INSERT INTO kafka_messages (topic, partition, "offset", received_at) VALUES
                       ('alerts', 0, 1, now() - interval '9 days'), ('alerts', 0, 2, now() - interval '1 day')""")
    deleted = retention(settings, db, retention_days=0, rejected_retention_days=0, outbox_retention_days=1,
                        kafka_messages_retention_days=7).prune()
    assert (deleted["outbox"], deleted["kafka_messages"]) == (2, 1)
    # The unpublished row stays however old (Kafka was away), and so does what is younger than the limit.
    assert [r["event_id"] for r in sql(db_url, "SELECT event_id FROM outbox ORDER BY id")] == [2, 4]
    assert [r["offset"] for r in sql(db_url, 'SELECT "offset" FROM kafka_messages')] == [2]
