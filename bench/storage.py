#!/usr/bin/env python3
"""What each event leaves in the tables (issue 14 point 3): row versions, dead rows, HOT updates, bytes of heap and
of indexes per event, for the schema as it is and for variants of it; the measurements behind
migrations/0009_storage.sql.

    .venv/bin/python bench/storage.py                      # every variant, 30 s clean + 30 s held each (about 6 minutes)
    .venv/bin/python bench/storage.py --only schema,lease --seconds 10
    .venv/bin/python bench/storage.py --autovacuum         # also the autovacuum comparison (about 10 minutes more)

No app process and no HTTP: one connection runs the engine's own statements (engine/queries.py) for each event,
the way an instance does at a steady rate: the insert (one row, as `POST /events` makes it), the claim by id,
with --renew one lease renewal (extend_leases, as the lease keeper renews an attempt that waits, and as a
desk's `extend` does), and the outcome. Five events at a time, as fast as one connection goes. Its own PostgreSQL
(an embedded pgserver cluster, autovacuum on), one fresh database per variant, the schema from database.sql (or
the variant's SQL on top), so what is compared is the schema alone.

Phases: *clean* (vacuum and page pruning free to work) and *held* (another session holds an xid, as in the long
run's idle-in-transaction phase: no dead row can be removed). Per phase, from pg_stat_user_tables and the
relations' sizes: updates per event and the HOT share of them, dead rows per event, heap and index bytes per
event, and how often a claim's new row version stayed on the page of the row it replaced.

--autovacuum: a table that holds days of finished events (--prefill of them, with their three history rows each,
as RETENTION_DAYS keeps them), then --av-minutes of the steady loop at --av-rate events a second, retention
deleting the oldest as fast as events are made, with the server's autovacuum thresholds and with those of 0009;
dead rows and sizes every 5 s, autovacuum runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import longrun  # noqa: E402 - bench/longrun.py: the cluster of its own

from db import Database  # noqa: E402
from engine import queries  # noqa: E402

BEFORE_0009 = """DROP INDEX IF EXISTS events_schedule_key_idx;
CREATE INDEX events_schedule_key_idx ON events (schedule_key) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS events_lease_idx ON events (lease_until) WHERE state = 'running';
ALTER TABLE events RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
                          autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor);
ALTER TABLE event_history RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
                                 autovacuum_vacuum_insert_scale_factor);"""
# name: (what it is, SQL run after the schema, whether each event renews its lease once)
VARIANTS: dict[str, tuple[str, str, bool]] = {
    "before": ("the schema before 0009", BEFORE_0009, False),
    "schema": ("the schema as it is (database.sql)", "", False),
    "fillfactor": ("before 0009, events at fillfactor 70", BEFORE_0009 + "ALTER TABLE events SET (fillfactor = 70);", False),
    "lease-before": ("before 0009, a lease renewal per event", BEFORE_0009, True),
    "lease": ("the schema as it is, a lease renewal per event", "", True),
}


def stats(db: Database, tables: tuple[str, ...] = ("events", "event_history")) -> dict[str, dict[str, Any]]:
    rows = db.query(
        """SELECT relname, pg_table_size(relid) AS heap, pg_indexes_size(relid) AS indexes, n_live_tup AS live,
                  n_dead_tup AS dead, n_tup_ins AS ins, n_tup_upd AS upd, n_tup_hot_upd AS hot, n_tup_del AS del,
                  autovacuum_count AS autovacuums
           FROM pg_stat_user_tables WHERE relname = ANY(%s)""", (list(tables),))
    return {row["relname"]: row for row in rows}


def settle() -> None:
    time.sleep(1.2)  # backends report their table statistics at most once a second


def steady(db: Database, callback_id: int, seconds: float, renew: bool, rate: float = 0.0,
           retire: bool = False) -> dict[str, int]:
    """The engine's statements for events, five at a time, for `seconds` (at `rate` events a second, or as fast as
    one connection goes); events done and claims whose new row version stayed on the old one's page. `retire`:
    each round also deletes the five oldest finished events with their history, as retention does once the
    table holds RETENTION_DAYS of them (its size then stays put)."""
    done = same_page = 0
    began = time.monotonic()
    until = began + seconds
    while time.monotonic() < until:
        if rate:
            time.sleep(max(0.0, began + done / rate - time.monotonic()))
        made = [db.query("""INSERT INTO events (callback_id, payload) VALUES (%s, '{"seconds": 0.001}')
                            RETURNING id, (ctid::text::point)[0]::int AS page""", (callback_id,))[0]
                for _ in range(5)]
        rows = queries.claim_ids(db, "w", [m["id"] for m in made], 30)
        pages = {r["id"]: r["page"] for r in db.query(
            "SELECT id, (ctid::text::point)[0]::int AS page FROM events WHERE id = ANY(%s)", ([m["id"] for m in made],))}
        same_page += sum(1 for m in made if pages.get(m["id"]) == m["page"])
        if renew:
            queries.extend_leases(db, "w", [(r.id, r.attempts, 60.0) for r in rows])
        queries.record_outcomes(db, "w", [queries.Outcome(r.id, r.attempts, True, None, None, 0.0, 0.001, time.time())
                                          for r in rows])
        if retire:
            db.query("""DELETE FROM events WHERE id IN (SELECT id FROM events WHERE state = 'finished'
                        ORDER BY finished_at, id LIMIT 5)""")
        done += len(made)
    return {"events": done, "same_page": same_page}


def per_event(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    e0, e1 = before["events"], after["events"]
    h0, h1 = before["event_history"], after["event_history"]
    upd = e1["upd"] - e0["upd"]
    return {
        "updates_per_event": round(upd / n, 2),
        "hot_share": round((e1["hot"] - e0["hot"]) / upd, 3) if upd else None,
        "dead_per_event": round((e1["dead"] - e0["dead"]) / n, 2),
        "events_heap_bytes": round((e1["heap"] - e0["heap"]) / n),
        "events_index_bytes": round((e1["indexes"] - e0["indexes"]) / n),
        "history_bytes": round(((h1["heap"] + h1["indexes"]) - (h0["heap"] + h0["indexes"])) / n),
    }


def variant(cluster: longrun.Cluster, name: str, seconds: float) -> dict[str, Any]:
    what, sql, renew = VARIANTS[name]
    url = cluster.database(f"storage_{name.replace('-', '_')}")
    db = Database(url, pool_size=2)
    holder = None
    try:
        db.apply_schema()
        if sql:
            db.query(sql)
        callback_id = db.query("INSERT INTO callbacks (name, kind, target) VALUES ('n', 'python', 'noop') RETURNING id")[0]["id"]
        out: dict[str, Any] = {"variant": name, "what": what}
        for phase in ("clean", "held"):
            if phase == "held":
                holder = longrun.connect(url)
                holder.autocommit = False
                with holder.cursor() as cur:
                    cur.execute("SELECT txid_current()")
            settle()
            before = stats(db)
            loop = steady(db, callback_id, seconds, renew)
            settle()
            out[phase] = {"events": loop["events"], "claim_same_page": round(loop["same_page"] / loop["events"], 2),
                          **per_event(before, stats(db), loop["events"])}
            print(f"  {name:<13} {phase:<5} {json.dumps(out[phase])}", flush=True)
        return out
    finally:
        if holder is not None:
            holder.rollback()
            holder.close()
        db.close()


def autovacuum(cluster: longrun.Cluster, tuned: bool, prefill: int, minutes: float, rate: float) -> dict[str, Any]:
    """A table holding `prefill` finished events (three history rows each) and retention deleting as many as are
    made, then the steady loop at `rate`; dead rows and sizes every 5 s."""
    label = "0009" if tuned else "server defaults"
    url = cluster.database("storage_av_" + ("tuned" if tuned else "default"))
    db = Database(url, pool_size=2)
    try:
        db.apply_schema()
        if not tuned:
            db.query(BEFORE_0009)
        callback_id = db.query("INSERT INTO callbacks (name, kind, target) VALUES ('n', 'python', 'noop') RETURNING id")[0]["id"]
        # Finished events that RETENTION_DAYS keeps, with the history an event leaves (scheduled, running, finished).
        began = time.monotonic()
        db.query("""INSERT INTO events (callback_id, state, attempts, started_at, finished_at, result, worker)
                    SELECT %s, 'finished', 1, now(), now() - interval '1 day', 'null', 'prefill'
                    FROM generate_series(1, %s)""", (callback_id, prefill))
        db.query("""INSERT INTO event_history (event_id, state, attempt, worker)
                    SELECT id, s.state, s.attempt, 'prefill' FROM events,
                           (VALUES ('scheduled', 0), ('running', 1)) AS s(state, attempt)""")
        db.query("VACUUM ANALYZE events")
        db.query("VACUUM ANALYZE event_history")
        print(f"  autovacuum ({label}): {prefill:,} finished events made in {time.monotonic() - began:.0f} s", flush=True)
        settle()
        first = stats(db)
        samples = []
        until = time.monotonic() + minutes * 60
        done = 0
        while time.monotonic() < until:
            done += steady(db, callback_id, 5.0, False, rate=rate, retire=True)["events"]
            s = stats(db)
            samples.append({"t": round(minutes * 60 - (until - time.monotonic())), "events": done,
                            **{f"{t}_dead": s[t]["dead"] for t in s},
                            **{f"{t}_mb": round((s[t]["heap"] + s[t]["indexes"]) / 2**20, 2) for t in s},
                            **{f"{t}_autovacuums": s[t]["autovacuums"] - first[t]["autovacuums"] for t in s}})
        last = samples[-1]

        def mb(table: str) -> float:
            return (first[table]["heap"] + first[table]["indexes"]) / 2**20

        out = {"settings": label, "prefill": prefill, "events": done, "minutes": minutes,
               "rate": round(done / (minutes * 60)),
               "events_dead_max": max(s["events_dead"] for s in samples),
               "events_dead_mean": round(statistics.mean(s["events_dead"] for s in samples)),
               "history_dead_max": max(s["event_history_dead"] for s in samples),
               "history_dead_mean": round(statistics.mean(s["event_history_dead"] for s in samples)),
               "events_mb_start": round(mb("events"), 1), "history_mb_start": round(mb("event_history"), 1),
               "events_growth_mb": round(last["events_mb"] - mb("events"), 2),
               "history_growth_mb": round(last["event_history_mb"] - mb("event_history"), 2),
               "events_autovacuums": last["events_autovacuums"], "history_autovacuums": last["event_history_autovacuums"],
               "samples": samples}
        print(f"  autovacuum ({label}): {json.dumps({k: v for k, v in out.items() if k != 'samples'})}", flush=True)
        return out
    finally:
        db.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated variants of {', '.join(VARIANTS)}")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default 30)")
    parser.add_argument("--autovacuum", action="store_true", help="also compare autovacuum thresholds")
    parser.add_argument("--prefill", type=int, default=500_000, help="finished events kept, for --autovacuum")
    parser.add_argument("--av-minutes", type=float, default=4.0, help="minutes of steady load, for --autovacuum")
    parser.add_argument("--av-rate", type=float, default=300.0, help="events a second, for --autovacuum")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    chosen = [v.strip() for v in args.only.split(",")] if args.only else list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}")
    cluster = longrun.Cluster()
    results: dict[str, Any] = {"variants": [], "autovacuum": []}
    try:
        print(f"PostgreSQL {cluster.settings()['server_version']}, autovacuum on, a cluster of its own", flush=True)
        for name in chosen:
            results["variants"].append(variant(cluster, name, args.seconds))
        if args.autovacuum:
            for tuned in (False, True):
                results["autovacuum"].append(autovacuum(cluster, tuned, args.prefill, args.av_minutes, args.av_rate))
    finally:
        cluster.close()
    print()
    print("| variant | phase | updates per event | HOT share | dead rows per event | events heap B/event "
          "| events indexes B/event | history B/event | claim on the same page |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["variants"]:
        for phase in ("clean", "held"):
            p = r[phase]
            print(f"| {r['what']} | {phase} | {p['updates_per_event']} | {p['hot_share']} | {p['dead_per_event']} | "
                  f"{p['events_heap_bytes']} | {p['events_index_bytes']} | {p['history_bytes']} | {p['claim_same_page']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
