"""Load: many concurrent API clients creating and reading events against one instance, then three.

Each client loops POST /events (due now, so the engine runs them meanwhile) then GET /events/<id>;
any answer other than 201/200, or any exception, is an error. Clients run in a few processes of
threads so the test's own GIL is not the bottleneck. Default: 50 clients for 5 s; PUNCTUAL_SOAK=1:
200 clients for 60 s. Figures (p50/p99 per request, requests/s, events/s) go to tests/faults/README.md.
"""
from __future__ import annotations

import multiprocessing
import statistics
import threading
import time

import pytest
import requests

from tests.faults.conftest import assert_every_attempt_recorded_once, count, record_figure, soak
from tests.helpers import wait_for

CLIENTS = soak(50, 200)
SECONDS = soak(5.0, 60.0)
PROCESSES = 4


def _client_process(urls: list[str], threads: int, seconds: float, offset: int, out) -> None:
    """`threads` clients for `seconds`; send back (latencies of creates, of reads, errors, created ids)."""
    creates: list[float] = []
    reads: list[float] = []
    errors: list[str] = []
    ids: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        session = requests.Session()
        url = urls[(offset + n) % len(urls)]
        mine_c, mine_r, mine_e, mine_i = [], [], [], []
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                t0 = time.monotonic()
                created = session.post(url + "/events", json={"callback": "Addition", "payload": {"x": i, "y": n}},
                                       timeout=30)
                t1 = time.monotonic()
                if created.status_code != 201:
                    mine_e.append(f"POST {created.status_code} {created.text[:200]}")
                    continue
                mine_c.append(t1 - t0)
                event_id = created.json()["id"]
                mine_i.append(event_id)
                read = session.get(f"{url}/events/{event_id}", timeout=30)
                mine_r.append(time.monotonic() - t1)
                if read.status_code != 200:
                    mine_e.append(f"GET {read.status_code} {read.text[:200]}")
            except requests.RequestException as exc:
                mine_e.append(f"{type(exc).__name__}: {exc}")
        with lock:
            creates.extend(mine_c)
            reads.extend(mine_r)
            errors.extend(mine_e)
            ids.extend(mine_i)

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((creates, reads, errors, ids))


def _load(urls: list[str]) -> dict:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    per = [CLIENTS // PROCESSES + (1 if i < CLIENTS % PROCESSES else 0) for i in range(PROCESSES)]
    procs = [ctx.Process(target=_client_process, args=(urls, n, SECONDS, sum(per[:i]), queue))
             for i, n in enumerate(per)]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=SECONDS + 120) for _ in procs]
    took = time.monotonic() - started
    for proc in procs:
        proc.join(10)
    creates = sorted(x for r in results for x in r[0])
    reads = sorted(x for r in results for x in r[1])
    both = sorted(creates + reads)
    return {"errors": [e for r in results for e in r[2]], "ids": [i for r in results for i in r[3]],
            "requests": len(both), "seconds": took,
            "p50": statistics.quantiles(both, n=100)[49], "p99": statistics.quantiles(both, n=100)[98],
            "create_p99": statistics.quantiles(creates, n=100)[98]}


@pytest.mark.parametrize("instances", [1, 3])
def test_concurrent_clients_creating_and_reading_events_get_no_errors(start_app, db_url, instances):
    # Pools sized so three instances stay well inside the server's max_connections.
    env = {"DB_POOL_SIZE": "12" if instances == 1 else "8", "HTTP_THREADS": "16", "WORKER_THREADS": "4"}
    apps = [start_app(**env) for _ in range(instances)]
    result = _load([app.url for app in apps])
    created = len(result["ids"])
    assert result["errors"] == [], f"{len(result['errors'])} errors, first: {result['errors'][:5]}"
    assert created > 0
    run_started = time.monotonic()
    wait_for(lambda: count(db_url, "SELECT count(*) AS n FROM events WHERE state = 'finished'") == created,
             60 + created / 200, 0.2, "every created event to run")
    drain = time.monotonic() - run_started
    assert count(db_url, "SELECT count(*) AS n FROM events") == created
    assert count(db_url, "SELECT count(*) AS n FROM events WHERE attempts <> 1") == 0
    assert_every_attempt_recorded_once(db_url)
    for app in apps:
        assert app.proc.poll() is None
    record_figure(f"load: {CLIENTS} clients x {SECONDS:.0f} s, {instances} instance(s)",
                  f"{result['requests']} requests, 0 errors, p50 {result['p50'] * 1000:.0f} ms, "
                  f"p99 {result['p99'] * 1000:.0f} ms (create p99 {result['create_p99'] * 1000:.0f} ms), "
                  f"{result['requests'] / result['seconds']:.0f} requests/s, {created / result['seconds']:.0f} events "
                  f"created/s, all {created} ran once ({drain:.1f} s after the load ended)")


def test_more_than_a_hundred_open_client_connections_do_not_lock_out_a_new_client(start_app):
    import socket

    app = start_app()
    idle = [socket.create_connection(("127.0.0.1", app.port), 5) for _ in range(110)]  # keep-alive clients
    try:
        started = time.monotonic()
        answer = requests.get(app.url + "/health", timeout=5)
        assert answer.status_code == 200 and time.monotonic() - started < 5
    finally:
        for sock in idle:
            sock.close()
