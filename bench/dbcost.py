#!/usr/bin/env python3
"""Database time per event on Punctual's schema, with and without its triggers (issue 5's profile).

Why: the engine's throughput is bounded by what PostgreSQL spends per event (insert, claim, finish); this
splits that time by statement and shows what the history and notification triggers add. One connection,
statements as the engine sends them in bulk (1,000 inserted, claimed 250 at a time, finished), each in
its own transaction, on a scratch database of the server in BENCH_DATABASE_URL (default: the local one).

    .venv/bin/python bench/dbcost.py            # 20 rounds of 1,000 events, triggers on, then off, twice
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SCRATCH = "punctual_bench_dbcost"

CLAIM = """UPDATE events SET state = 'running', attempts = attempts + 1, worker = 'bench',
                  started_at = clock_timestamp(), lease_until = now() + interval '1 min'
           WHERE id IN (SELECT id FROM events WHERE state = 'scheduled' AND scheduled_for <= now()
                        ORDER BY priority DESC, scheduled_for, id LIMIT 250 FOR UPDATE SKIP LOCKED)"""
FINISH = "UPDATE events SET state = 'finished', finished_at = clock_timestamp(), lease_until = NULL WHERE state = 'running'"


def measure(url: str, rounds: int, triggers: bool) -> dict[str, float]:
    """Milliseconds per 1,000 events for each step, on a fresh copy of the schema."""
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        cur.execute(f"CREATE DATABASE {SCRATCH}")
    scratch = psycopg2.extensions.make_dsn(url, dbname=SCRATCH)
    conn = psycopg2.connect(scratch)
    try:
        with conn, conn.cursor() as cur:
            cur.execute((ROOT / "database.sql").read_text())
            cur.execute("INSERT INTO callbacks (name, kind, target) VALUES ('bench', 'python', 'noop') RETURNING id")
            callback = cur.fetchone()[0]
        cur = conn.cursor()
        if not triggers:  # the session skips ordinary triggers: history, notify, outbox (and foreign-key checks)
            cur.execute("SET session_replication_role = replica")
            conn.commit()
        spent = {"insert": 0.0, "claim": 0.0, "finish": 0.0}

        def timed(step: str, sql: str, params: tuple = ()) -> None:
            began = time.perf_counter()
            cur.execute(sql, params)
            conn.commit()
            spent[step] += time.perf_counter() - began

        for _ in range(rounds):
            timed("insert", "INSERT INTO events (callback_id) SELECT %s FROM generate_series(1, 1000)", (callback,))
            for _ in range(4):
                timed("claim", CLAIM)
                timed("finish", FINISH)
        conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
        admin.close()
    return {step: seconds / rounds * 1000 for step, seconds in spent.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="rounds of 1,000 events per measurement")
    args = parser.parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    print("ms per 1,000 events (insert / claim / finish; total = microseconds per event)")
    for triggers in (True, False, True, False):
        ms = measure(url, args.rounds, triggers)
        print(f"  triggers {'on ' if triggers else 'off'}: insert {ms['insert']:5.1f}  claim {ms['claim']:5.1f}  "
              f"finish {ms['finish']:5.1f}  total {sum(ms.values()):5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
