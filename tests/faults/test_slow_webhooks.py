"""Webhook targets that answer slowly must not make other events late.

tests/test_webhook.py covers a hang, a 500, a closed connection and a redirect one at a time; here
slow answers hold workers while a stream of other events falls due, and the lateness of those
others is measured from the instant their handler really ran (database clock).
"""
from __future__ import annotations

from tests.faults.conftest import api, at, count, record_figure
from tests.helpers import sql, wait_for

WORKERS = 8
SLOW_SECONDS = 3.0
LATENESS_BOUND = 0.5


def _run(start_app, db_url, webhook, slow: int) -> dict:
    app = start_app(WORKER_THREADS=str(WORKERS), WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
    webhook.delay = SLOW_SECONDS
    api(app, "POST", "/callbacks", {"name": "slow", "kind": "webhook", "target": webhook.url + "/slow",
                                    "timeout_seconds": 10, "max_attempts": 1}, 201)
    api(app, "POST", "/events/batch", {"events": [{"callback": "slow", "payload": {"n": i}} for i in range(slow)]}, 201)
    wait_for(lambda: len(webhook.requests) >= min(slow, WORKERS) - 1, 5, 0.01, "the slow requests to be in flight")
    # `record` notes the instant the handler really ran (events.started_at is the claim, which may
    # precede the run when the attempt waits for a free worker).
    api(app, "POST", "/callbacks", {"name": "rec", "kind": "python", "target": "record"}, 201)
    others = [e["id"] for e in api(app, "POST", "/events/batch", {"events": [
        {"callback": "rec", "payload": {"n": i}, "scheduled_for": at(0.3 + i * 0.05)}
        for i in range(40)]}, 201)["events"]]  # due over the next 2.3 s, while the slow answers are pending
    wait_for(lambda: count(db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s) AND state = 'finished'",
                           (others,)) == len(others), 20, 0.05, "the other events to run")
    late = sql(db_url, """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50, max(s) AS worst,
                                 max(abs(gap)) AS started_at_error FROM
                          (SELECT extract(epoch FROM x.at - e.scheduled_for)::float AS s,
                                  extract(epoch FROM x.at - e.started_at)::float AS gap
                           FROM events e JOIN executions x ON x.event_id = e.id WHERE e.id = ANY(%s)) t""",
               (others,))[0]
    wait_for(lambda: count(db_url, "SELECT count(*) AS n FROM events WHERE state = 'finished'") == slow + len(others),
             SLOW_SECONDS * (slow / WORKERS + 2) + 10, 0.1, "the slow webhooks to finish")
    return late


def test_slow_webhooks_holding_half_the_workers_leave_other_events_on_time(start_app, db_url, webhook):
    late = _run(start_app, db_url, webhook, slow=WORKERS // 2)
    record_figure(f"{WORKERS // 2} webhooks answering in {SLOW_SECONDS:.0f} s, {WORKERS} workers",
                  f"40 other events: lateness p50 {late['p50'] * 1000:.0f} ms, worst {late['worst'] * 1000:.0f} ms")
    assert late["worst"] < LATENESS_BOUND, late


def test_slow_webhooks_outnumbering_the_workers_leave_other_events_on_time(start_app, db_url, webhook):
    late = _run(start_app, db_url, webhook, slow=WORKERS * 2)
    record_figure(f"{WORKERS * 2} webhooks answering in {SLOW_SECONDS:.0f} s, {WORKERS} workers",
                  f"40 other events: lateness p50 {late['p50'] * 1000:.0f} ms, worst {late['worst'] * 1000:.0f} ms "
                  f"(started_at off by up to {late['started_at_error'] * 1000:.0f} ms)")
    assert late["worst"] < LATENESS_BOUND, late


def test_started_at_is_when_the_handler_really_started_even_after_waiting_for_a_worker(start_app, db_url, webhook):
    late = _run(start_app, db_url, webhook, slow=WORKERS * 2)
    assert late["started_at_error"] < LATENESS_BOUND, late
