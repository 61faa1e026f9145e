"""The Python client (punctual.client) against a real app: keep-alive, batches answered with ids only,
retries on 503 after Retry-After, and no retry that could make a second event."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from punctual.client import Client, PunctualError, PunctualUnreachable
from tests.helpers import free_port, wait_for


def test_events_made_one_and_in_batches_with_ids_only(start_app):
    app = start_app()
    with Client(app.url) as punctual:
        one = punctual.create("Addition", {"x": 2, "y": 3})
        later = punctual.create("Addition", {"x": 1, "y": 1},
                                scheduled_for=datetime.now(timezone.utc) + timedelta(hours=1))
        ids = punctual.create_batch([{"callback": "Multiplication", "payload": {"x": i, "y": 2}} for i in range(50)])
        assert len(ids) == 50 and all(isinstance(i, int) for i in ids) and ids == sorted(ids)
        rows = punctual.create_batch([{"callback": "Addition", "payload": {"x": 0, "y": 0}}], minimal=False)
        assert rows[0]["callback"] == "Addition" and rows[0]["state"] in ("scheduled", "running", "finished")
        assert wait_for(lambda: punctual.get(one["id"])["state"] == "finished", 10, 0.05)
        assert punctual.get(one["id"])["result"] == 5
        assert wait_for(lambda: punctual.get(ids[-1])["result"] == 98, 10, 0.05)
        assert punctual.cancel(later["id"])["state"] == "cancelled"
        with pytest.raises(PunctualError) as refused:
            punctual.create("NoSuchCallback", {})
        assert refused.value.status == 422 and "NoSuchCallback" in refused.value.message


def test_the_batch_answers_ids_only_when_asked_and_says_so(start_app):
    app = start_app()
    body = {"events": [{"callback": "Addition", "payload": {"x": 1, "y": 1}}] * 3}
    minimal = requests.post(app.url + "/events/batch", json=body, headers={"Prefer": "handling=lenient, return=minimal"},
                            timeout=10)
    assert minimal.status_code == 201 and minimal.headers["Preference-Applied"] == "return=minimal"
    assert list(minimal.json()) == ["ids"] and len(minimal.json()["ids"]) == 3
    full = requests.post(app.url + "/events/batch", json=body, timeout=10)
    assert "Preference-Applied" not in full.headers and len(full.json()["events"]) == 3


def test_an_answer_of_ids_only_still_runs_logs_and_replays_each_event_as_a_full_one(start_app):
    """return=minimal reads less of each new row back: the due events still run with their own payloads, the
    later one waits, a replayed key answers the first event's id, and every creation has its audit line."""
    app = start_app()
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    body = {"events": [{"callback": "Addition", "payload": {"x": i, "y": 10}} for i in range(20)]
            + [{"callback": "Addition", "payload": {"x": 1, "y": 1}, "scheduled_for": later},
               {"callback": "Addition", "payload": {"x": 5, "y": 5}, "idempotency_key": "ids-only-key"}]}
    headers = {"Prefer": "return=minimal"}
    first = requests.post(app.url + "/events/batch", json=body, headers=headers, timeout=10).json()["ids"]
    again = requests.post(app.url + "/events/batch", json={"events": [body["events"][-1]]}, headers=headers,
                          timeout=10).json()["ids"]
    assert again == [first[-1]] and len(set(first)) == 22
    with Client(app.url) as punctual:
        assert wait_for(lambda: all(punctual.get(i)["state"] == "finished" for i in first[:20] + first[-1:]), 15, 0.1)
        assert [punctual.get(i)["result"] for i in first[:20]] == [i + 10 for i in range(20)]
        assert punctual.get(first[-1])["result"] == 10
        assert punctual.get(first[20])["state"] == "scheduled"
    created = [line for line in app.audit_lines() if line["action"] == "event_created"]
    assert sorted(line["event_id"] for line in created) == sorted(first)
    assert all(line["scheduled_for"] and line["state"] == "scheduled" and line["attempt"] == 0 for line in created)


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 with Retry-After a given number of times, then 201; counts what it received."""

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        server = self.server
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server.seen += 1
        if server.seen <= server.unavailable:
            self.send_response(503)
            self.send_header("Retry-After", "0.1")
            body = b'{"error": {"code": "unavailable", "message": "database unavailable", "details": {}}}'
        else:
            self.send_response(201)
            body = b'{"id": 7, "state": "scheduled"}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Flaky)
    server.seen, server.unavailable = 0, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_503_is_retried_after_its_retry_after_and_then_given_up(flaky):
    flaky.unavailable = 2
    url = f"http://127.0.0.1:{flaky.server_address[1]}"
    with Client(url, retries=3) as punctual:
        assert punctual.create("Addition", {"x": 1, "y": 1})["id"] == 7
    assert flaky.seen == 3
    flaky.seen, flaky.unavailable = 0, 10
    with Client(url, retries=2) as punctual, pytest.raises(PunctualError) as refused:
        punctual.create("Addition", {})
    assert refused.value.status == 503 and flaky.seen == 3


def test_a_lost_answer_is_retried_only_when_a_repeat_cannot_make_a_second_event():
    port = free_port()  # nothing listens: every request fails to connect
    with Client(f"http://127.0.0.1:{port}", retries=2, backoff=0.01) as punctual:
        calls = []
        real = punctual.pool.request

        def counting(*args, **kwargs):
            calls.append(kwargs.get("body"))
            return real(*args, **kwargs)

        punctual.pool.request = counting
        with pytest.raises(PunctualUnreachable):
            punctual.create("Addition", {})
        assert len(calls) == 1                                   # no key: never repeated
        with pytest.raises(PunctualUnreachable):
            punctual.create("Addition", {}, idempotency_key="order-1")
        assert len(calls) == 1 + 3                                # keyed: the first try and two retries
        with pytest.raises(ValueError):
            punctual.create("Addition", {}, scheduled_for=datetime(2030, 1, 1))  # naive: refused before sending
