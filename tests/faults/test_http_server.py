"""The HTTP server attacked: a stop under load, a flood of idle connections, slow and silent clients.

Each test runs a real `python app.py` (tests/helpers.AppProcess) and attacks it over loopback with raw
sockets, as the probes of issue 10 did:

- SIGTERM while hundreds of creations are in flight: every one gets its whole answer (no reset), every
  acknowledged event is in the database, errors.log has no traceback, the exit code is 0;
- 1,010 connections each trickling a byte every few seconds: /health (and /metrics) still answer within
  two seconds, on the main port with the default settings and on HEALTH_PORT;
- a silent connection, a keep-alive connection after its answer and a slowloris request are cut after
  the (small, here) HTTP_IDLE_TIMEOUT_SECONDS / HTTP_REQUEST_TIMEOUT_SECONDS; a live /stream is not.
"""
from __future__ import annotations

import http.client
import json
import re
import resource
import selectors
import signal
import socket
import threading
import time
from typing import Optional

import pytest
import requests

from tests.faults.conftest import at, record_figure
from tests.helpers import AppProcess, free_port, sql, wait_for

FLOOD = 1010
"""Connections of the flood: past the default HTTP_CONNECTION_LIMIT (1000), as the probe sent."""


@pytest.fixture(autouse=True)
def enough_open_files():
    """The flood needs more than 1,024 descriptors in this process: raise the soft limit, then restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FLOOD + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- helpers ----------------------------------------------------------------------------


def make_callback(app: AppProcess, name: str = "rec") -> None:
    response = requests.post(app.url + "/callbacks", json={"name": name, "kind": "python", "target": "record"},
                             timeout=10)
    assert response.status_code == 201, response.text


def post_request(port: int, body: dict, keep_alive: bool = False) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
            ).encode() + data


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one whole HTTP/1.1 answer; AssertionError when it is cut short."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"answer cut inside its headers: {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", -1))
    assert length == len(body), f"answer cut in its body: {len(body)} of {length} bytes"
    return status, headers, body


def closed_by_server(sock: socket.socket, since: float, timeout: float) -> Optional[float]:
    """Wait up to `timeout` for the server to close `sock` (EOF or reset); seconds from `since` to it, or None."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - since
        except socket.timeout:
            continue
        except OSError:  # reset: the server closed with our bytes unread (a slowloris cut)
            return time.monotonic() - since
    return None


def assert_no_traceback(app: AppProcess) -> None:
    errors = app.folder / "logs" / "errors.log"
    text = errors.read_text(errors="replace") if errors.exists() else ""
    for line in text.splitlines():
        record = json.loads(line)
        assert "exception" not in record and record["level"] not in ("error", "critical"), record
    assert "Traceback" not in app.log_text(), app.log_text()[-3000:]


class Flood:
    """FLOOD connections to one port, each sending one byte of a request line every `every` seconds."""

    def __init__(self, port: int, count: int = FLOOD, every: float = 3.0) -> None:
        self.port = port
        self.every = every
        self.socks: list[socket.socket] = []
        self.closed = 0
        self._stop = threading.Event()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            self.socks.append(sock)
        self._thread = threading.Thread(target=self._trickle, name="flood", daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n"
        sent = 0
        while not self._stop.is_set():
            byte = request[sent % len(request):sent % len(request) + 1]
            for sock in self.socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass  # cut by the server: that is its right
            sent += 1
            self._stop.wait(self.every)

    def count_closed(self) -> int:
        """How many of the flood's connections the server has closed so far."""
        closed = 0
        for sock in self.socks:
            try:
                if sock.recv(1024) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)
        for sock in self.socks:
            sock.close()


def timed_get(url: str, timeout: float = 5.0) -> tuple[int, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=timeout)
    return response.status_code, time.monotonic() - started


# -- 1. SIGTERM under load --------------------------------------------------------------


def test_sigterm_during_hundreds_of_creations_answers_every_one_of_them_whole(start_app, db_url):
    app = start_app(HTTP_DRAIN_SECONDS="20")
    make_callback(app)
    burst = 600

    # Keep-alive clients looping creations, as an SDK would; each stops starting requests at the SIGTERM,
    # and the one it has in flight then must be answered.
    sigterm_sent = threading.Event()
    loop_ids: list[int] = []
    loop_errors: list[str] = []

    def loop_client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
        i = 0
        while not sigterm_sent.is_set():
            body = json.dumps({"callback": "rec", "payload": {"loop": n, "i": i}, "scheduled_for": at(3600)})
            try:
                conn.request("POST", "/events", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except Exception as exc:  # noqa: BLE001 - any failure of a request in flight is the bug
                loop_errors.append(f"client {n} request {i}: {exc!r}")
                return
            if response.status != 201:
                loop_errors.append(f"client {n} request {i}: {response.status} {data[:200]!r}")
                return
            loop_ids.append(json.loads(data)["id"])
            i += 1
        conn.close()

    loops = [threading.Thread(target=loop_client, args=(n,), daemon=True) for n in range(20)]
    for thread in loops:
        thread.start()
    wait_for(lambda: len(loop_ids) >= 40, 10, 0.02, "the keep-alive clients to be creating events")

    # The burst: `burst` connections, each with a whole POST sent, none answered yet when SIGTERM comes.
    # Connected first, then every request sent in one tight loop: most of them are in flight at the signal.
    socks = [socket.create_connection(("127.0.0.1", app.port), timeout=10) for _ in range(burst)]
    for i, sock in enumerate(socks):
        sock.sendall(post_request(app.port, {"callback": "rec", "payload": {"burst": i}, "scheduled_for": at(3600)}))
    sigterm_sent.set()  # first: a loop client never starts a request after the signal
    app.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    answers: dict[socket.socket, bytearray] = {sock: bytearray() for sock in socks}
    failures: list[str] = []
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + 25
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except OSError as exc:  # ConnectionResetError: what the probe saw
                failures.append(repr(exc))
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()
            else:
                answers[sock].extend(data)
    assert not selector.get_map(), f"{len(selector.get_map())} answers still open at the deadline"
    last_answer = time.monotonic() - signalled
    for thread in loops:
        thread.join(timeout=25)

    assert failures == [], f"{len(failures)} connections reset: {failures[:5]}"
    assert loop_errors == [], loop_errors[:5]
    burst_ids = []
    for raw in answers.values():
        status, headers, body = parse_response(bytes(raw))
        assert status == 201, (status, body[:200])
        assert headers.get("connection") == "close"
        burst_ids.append(json.loads(body)["id"])
    assert len(burst_ids) == burst

    assert app.proc.wait(30) == 0
    acknowledged = burst_ids + loop_ids
    stored = sql(db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s)", (acknowledged,))[0]["n"]
    assert stored == len(acknowledged), "an acknowledged event is missing from the database"
    draining = re.search(r"http: draining (\d+) connection", app.log_text())
    assert draining and int(draining.group(1)) > 0, "nothing was in flight at the SIGTERM: the test proved nothing"
    assert_no_traceback(app)
    record_figure("SIGTERM under load", f"{burst} burst + {len(loop_ids)} keep-alive creations acknowledged, "
                                        f"{draining.group(1)} connections drained, last answer "
                                        f"{last_answer:.2f} s after SIGTERM, 0 resets")


def test_sigterm_ends_a_live_stream_and_closes_idle_and_trickling_connections_before_the_deadline(start_app):
    app = start_app(HTTP_DRAIN_SECONDS="20")
    stream = requests.get(app.url + "/stream", stream=True, timeout=10)
    assert stream.status_code == 200
    lines = stream.iter_lines(decode_unicode=True)
    assert next(line for line in lines if line.startswith("event:")) == "event: hello"
    idle = requests.Session()
    assert idle.get(app.url + "/health", timeout=5).status_code == 200  # then idle, kept alive
    slow = socket.create_connection(("127.0.0.1", app.port), timeout=5)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # a slowloris: headers begun, never ended

    signalled = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    assert next(line for line in lines if line.startswith("event:")) == "event: bye"
    assert app.proc.wait(20) == 0
    took = time.monotonic() - signalled
    assert took < 10, f"the stop took {took:.1f} s: a stream, idle or slow connection held the drain to its end"
    slow.close()
    assert_no_traceback(app)


# -- 2. the flood -----------------------------------------------------------------------


def test_a_flood_of_trickling_connections_does_not_lock_out_health_on_either_port(start_app):
    health_port = free_port()
    app = start_app(HEALTH_PORT=str(health_port))  # default limits: 1,000 connections, 60 s idle, 30 s request
    health = f"http://127.0.0.1:{health_port}"
    flood = Flood(app.port)
    try:
        # 1,010 connections trickling bytes: past the limit, so the main port must drop some of them to
        # take new clients; the health port is not flooded at all.
        worst = 0.0
        started = time.monotonic()
        while time.monotonic() - started < 8:
            for url in (app.url + "/health", app.url + "/metrics", health + "/health", health + "/metrics"):
                status, took = timed_get(url)
                assert status == 200, url
                assert took < 2.0, f"{url} took {took:.2f} s under the flood"
                worst = max(worst, took)
        assert requests.get(health + "/events", timeout=5).status_code == 404  # that port serves only these two
        closed = wait_for(flood.count_closed, 5, 0.1, "the server to drop flood connections at its limit")
        # Stopped under the flood: the trickling connections must not hold the drain (HTTP_DRAIN_SECONDS=10).
        signalled = time.monotonic()
        assert app.terminate(timeout=30) == 0
        stop_took = time.monotonic() - signalled
        assert stop_took < 8, f"the stop under the flood took {stop_took:.1f} s"
        record_figure("flood", f"{FLOOD} trickling connections: /health and /metrics on both ports answered "
                               f"within {worst * 1000:.0f} ms; {closed} flood connections dropped; "
                               f"SIGTERM under the flood: exit 0 in {stop_took:.1f} s")
    finally:
        flood.close()
    assert_no_traceback(app)


# -- 3. idle and slow clients -----------------------------------------------------------


def test_silent_idle_and_slowloris_connections_are_cut_after_their_timeouts(start_app):
    app = start_app(HTTP_IDLE_TIMEOUT_SECONDS="1", HTTP_REQUEST_TIMEOUT_SECONDS="2")

    silent = socket.create_connection(("127.0.0.1", app.port), timeout=5)  # never sends a byte
    silent_since = time.monotonic()

    kept_alive = socket.create_connection(("127.0.0.1", app.port), timeout=5)
    kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += kept_alive.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    answered_at = time.monotonic()

    slow = socket.create_connection(("127.0.0.1", app.port), timeout=5)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
    results: dict[str, Optional[float]] = {}

    def slowloris() -> None:
        started = time.monotonic()
        slow.settimeout(0.05)
        for i in range(len(request)):  # a byte every 0.25 s: always active, never a whole request
            try:
                slow.send(request[i:i + 1])
                if slow.recv(65536) == b"":
                    break
            except socket.timeout:
                time.sleep(0.2)
                continue
            except OSError:
                break
        results["slow"] = time.monotonic() - started

    trickler = threading.Thread(target=slowloris, daemon=True)
    trickler.start()
    results["silent"] = closed_by_server(silent, silent_since, 6)
    results["kept_alive"] = closed_by_server(kept_alive, answered_at, 6)
    trickler.join(timeout=10)

    assert results["silent"] is not None and 0.9 <= results["silent"] < 2.5, results
    assert results["kept_alive"] is not None and 0.9 <= results["kept_alive"] < 2.5, results
    assert results["slow"] is not None and 2.0 <= results["slow"] < 4.5, results
    # A client that sends its request at once is answered, before and after.
    assert requests.get(app.url + "/health", timeout=5).status_code == 200
    for sock in (silent, kept_alive, slow):
        sock.close()
    record_figure("idle/slow cuts", f"silent {results['silent']:.2f} s, keep-alive {results['kept_alive']:.2f} s "
                                    f"(idle 1 s); slowloris {results['slow']:.2f} s (request 2 s)")
    assert_no_traceback(app)


def test_a_live_stream_outlives_the_idle_and_request_timeouts(start_app):
    app = start_app(HTTP_IDLE_TIMEOUT_SECONDS="1", HTTP_REQUEST_TIMEOUT_SECONDS="1")
    make_callback(app)
    stream = requests.get(app.url + "/stream", stream=True, timeout=10)
    lines = stream.iter_lines(decode_unicode=True)
    assert next(line for line in lines if line.startswith("event:")) == "event: hello"
    opened = time.monotonic()
    # Quiet for three timeouts: a connection without a request in service would have been cut by now.
    wait_for(lambda: time.monotonic() - opened > 3, 5, 0.1, "three idle timeouts")
    created = requests.post(app.url + "/events", json={"callback": "rec", "payload": {}, "scheduled_for": at(3600)},
                            timeout=5)
    assert created.status_code == 201
    assert next(line for line in lines if line.startswith("event:")) == "event: changes"
    stream.close()
