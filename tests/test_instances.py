"""Several `python app.py` processes on one database: every attempt is claimed by exactly one of them."""
from __future__ import annotations

from tests.helpers import sql, wait_for
from tests.test_process import make_callback

N_EVENTS = 2000


def test_three_instances_run_each_of_2000_due_events_exactly_once(start_app, db_url):
    # Few threads each: three instances plus the handler's own connections stay well under max_connections.
    apps = [start_app(WORKER_THREADS="4", DB_POOL_SIZE="4", HTTP_THREADS="2") for _ in range(3)]
    make_callback(apps[0], "rec", max_attempts=1)  # one attempt: a second claim could only be a double run
    # One statement, as another program would: every instance is notified of all of them at once.
    sql(db_url, """INSERT INTO events (callback_id, payload, scheduled_for, source)
                   SELECT c.id, jsonb_build_object('n', g), now(), 'sql'
                   FROM callbacks c, generate_series(1, %s) g WHERE c.name = 'rec'""", (N_EVENTS,))

    def finished() -> int:
        return sql(db_url, "SELECT count(*) AS n FROM events WHERE state = 'finished'")[0]["n"]

    wait_for(lambda: finished() == N_EVENTS, 60, 0.2, f"all {N_EVENTS} events to finish")

    assert sql(db_url, "SELECT state, count(*) AS n FROM events GROUP BY state") == [
        {"state": "finished", "n": N_EVENTS}]
    ran = sql(db_url, """SELECT count(*) AS rows, count(DISTINCT event_id) AS events, max(attempt) AS max_attempt
                         FROM executions""")[0]
    assert ran == {"rows": N_EVENTS, "events": N_EVENTS, "max_attempt": 1}
    running = sql(db_url, """SELECT count(*) AS rows, count(DISTINCT event_id) AS events FROM event_history
                             WHERE state = 'running'""")[0]
    assert running == {"rows": N_EVENTS, "events": N_EVENTS}
    # The 'finished' history row names the instance that ran it, the same one the handler saw.
    by_pid = {r["pid"]: r["n"] for r in sql(db_url, "SELECT pid, count(*) AS n FROM executions GROUP BY pid")}
    assert set(by_pid) <= {app.proc.pid for app in apps}, by_pid
    assert len(by_pid) > 1, f"only one instance did any work: {by_pid}"
    mismatched = sql(db_url, """SELECT count(*) AS n FROM executions x JOIN event_history h
                                ON h.event_id = x.event_id AND h.state = 'finished'
                                WHERE split_part(h.worker, ':', 2)::int <> x.pid""")[0]["n"]
    assert mismatched == 0, "an event's outcome was recorded by an instance other than the one that ran it"
    for app in apps:
        assert app.proc.poll() is None, "an instance died"
