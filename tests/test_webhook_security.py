"""Webhooks attacked (issue 10): allow-list bypasses through URL parsing, names that resolve to forbidden addresses,
redirects, header injection, secrets leaking through answers or logs, forged deliveries; and the signing a real
receiver verifies with the reference Standard Webhooks library.

Everything runs on loopback: 127.0.0.1 is allowed by default, 127.0.0.2 is a loopback address that is not, and
a receiver listens there to prove that nothing ever reaches it. DNS is a stub inside this process (socket.getaddrinfo),
so the tests need no resolver and no network.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.helpers import running_engine, sql, wait_for

FORBIDDEN = "127.0.0.2"  # loopback, not in the default WEBHOOK_ALLOWED_HOSTS (127.0.0.1, ::1, localhost)


class Receiver:
    """A real HTTP receiver on `host`, verifying each delivery as a user's receiver would: with the reference
    Standard Webhooks library and the secret it was given; a delivery that does not verify gets 401."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[dict[str, Any]] = []
        self.secret: str | None = None
        self.status = 200
        self.redirect_to: str | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = dict(self.headers)
                verified: Any = None
                if receiver.secret is not None:
                    try:
                        verified = Webhook(receiver.secret).verify(raw, headers)
                    except WebhookVerificationError as exc:
                        verified = exc
                receiver.requests.append({"raw": raw, "headers": headers, "verified": verified, "path": self.path})
                status = receiver.status if not isinstance(verified, Exception) else 401
                if receiver.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = b'{"ok": true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    target = Receiver()
    yield target
    target.close()


@pytest.fixture
def forbidden():
    """A receiver on 127.0.0.2: anything it receives is a successful attack."""
    target = Receiver(FORBIDDEN)
    yield target
    target.close()


@contextmanager
def dns(names: dict[str, list[str]]) -> Iterator[None]:
    """A resolver stub for this process: each name in `names` resolves to its addresses, in order."""
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):  # noqa: A002
        if isinstance(host, str) and host.lower() in names:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, int(port)) if ":" not in a else (a, int(port), 0, 0)) for a in names[host.lower()]]
        return real(host, port, family, type, proto, flags)

    socket.getaddrinfo = fake
    try:
        yield
    finally:
        socket.getaddrinfo = real


@contextmanager
def app_with(db: Any, settings: Any, **changes: Any) -> Iterator[Any]:
    """The API and a running engine with these settings; yields a test client."""
    from app import create_app

    with running_engine(db, settings, **changes) as eng:
        yield create_app(eng.settings, db, eng, eng.metrics).test_client()


def make_hook(client: Any, name: str, url: str, **extra: Any) -> dict[str, Any]:
    created = client.post("/callbacks", json={"name": name, "kind": "webhook", "target": url, "max_attempts": 1,
                                              "timeout_seconds": 2, **extra})
    assert created.status_code == 201, created.json
    return created.json


def settled(db_url: str, event_id: int, timeout: float = 8.0) -> dict[str, Any]:
    def done():
        rows = sql(db_url, "SELECT * FROM events WHERE id = %s AND state IN ('finished', 'failed')", (event_id,))
        return rows[0] if rows else None
    return wait_for(done, timeout=timeout, message=f"event {event_id} to finish or fail")


def schedule(client: Any, callback: str, payload: dict[str, Any] | None = None) -> int:
    created = client.post("/events", json={"callback": callback, "payload": payload or {}})
    assert created.status_code == 201, created.json
    return created.json["id"]


def count_callbacks(db_url: str) -> int:
    return sql(db_url, "SELECT count(*) AS n FROM callbacks")[0]["n"]


# -- the URL: one parser for the check and the request --------------------------------------------

def bypasses(port: int) -> list[str]:
    return [
        f"http://{FORBIDDEN}:{port}\\@127.0.0.1/",     # the probe: urlsplit saw 127.0.0.1, requests called .2
        "http://evil.example\\@127.0.0.1/",
        f"http://127.0.0.1\\@{FORBIDDEN}:{port}/",
        f"http://127.0.0.1@{FORBIDDEN}:{port}/",        # userinfo
        f"http://127.0.0.1:80@{FORBIDDEN}:{port}/",
        f"http://user:pw@127.0.0.1:{port}/",            # userinfo even towards an allowed host
        f"http://127.0.0.1:{port}#@{FORBIDDEN}/",      # a fragment: never sent, and read differently by some
        f"http://127.0.0.1:{port}/ x",                  # whitespace
        f"http://127.0.0.1:{port}/\r\nX-Injected: 1",   # control characters
        f" http://127.0.0.1:{port}/",
        f"http://127.0.0.1:{port}\t/",
        f"http://127.0.0.1%2e:{port}/",                 # percent-encoding in the host
        f"http://[::ffff:{FORBIDDEN}]:{port}/",         # 127.0.0.2 as an IPv4-mapped IPv6 address
        f"http://2130706434:{port}/",                   # 127.0.0.2 as one number
        f"http://127.1:{port}/",
        f"http://{FORBIDDEN}:{port}/",
        f"http://127.0.0.1.nip.io:{port}/",
        f"http://lоcalhost:{port}/",                    # a Cyrillic o
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{port}/",
        f"http:/127.0.0.1:{port}/",
        "http://127.0.0.1:0/",
    ]


def test_urls_that_parsers_read_differently_are_refused_at_creation_and_nothing_is_stored(client, db_url,
                                                                                        forbidden):
    before = count_callbacks(db_url)
    for url in bypasses(forbidden.port):
        answer = client.post("/callbacks", json={"name": "evil", "kind": "webhook", "target": url})
        assert answer.status_code == 422, (url, answer.json)
        assert answer.json["error"]["details"]["field"] == "target", url
    assert count_callbacks(db_url) == before
    assert forbidden.requests == []


def test_a_backslash_url_stored_before_the_fix_is_refused_at_delivery(db, settings, db_url, forbidden):
    """A row written by plain SQL (or by an older version) is checked again when it runs."""
    with app_with(db, settings) as client:
        for n, url in enumerate([f"http://{FORBIDDEN}:{forbidden.port}\\@127.0.0.1/",
                                 f"http://127.0.0.1@{FORBIDDEN}:{forbidden.port}/"]):
            sql(db_url, """INSERT INTO callbacks (name, kind, target, max_attempts, signing_secret)
                           VALUES (%s, 'webhook', %s, 1, %s)""", (f"old{n}", url, "whsec_" + "A" * 44))
            event = settled(db_url, schedule(client, f"old{n}"))
            assert event["state"] == "failed"
            assert event["last_error"].startswith("webhook target refused"), event["last_error"]
    assert forbidden.requests == []


# -- the address connected to, after DNS ----------------------------------------------------------

def test_a_listed_name_resolving_to_a_forbidden_address_is_refused_at_delivery(db, settings, db_url, receiver,
                                                                                forbidden):
    """hooks.test is allowed by name; what it resolves to decides where the request may go. The control case
    (good.test -> 127.0.0.1, a listed address) proves the stub is used and delivery works."""
    allowed = ("127.0.0.1", "::1", "localhost", "hooks.test", "good.test", "mixed.test")
    with dns({"hooks.test": [FORBIDDEN], "good.test": ["127.0.0.1"], "mixed.test": [FORBIDDEN, "127.0.0.1"]}), \
            app_with(db, settings, webhook_allowed_hosts=allowed) as client:
        make_hook(client, "rebound", f"http://hooks.test:{forbidden.port}/")  # accepted: the name is listed
        make_hook(client, "good", f"http://good.test:{receiver.port}/")
        make_hook(client, "mixed", f"http://mixed.test:{receiver.port}/")
        bad = settled(db_url, schedule(client, "rebound"))
        good = settled(db_url, schedule(client, "good"))
        mixed = settled(db_url, schedule(client, "mixed"))
    assert bad["state"] == "failed"
    assert "resolved to 127.0.0.2" in bad["last_error"] and "WEBHOOK_ALLOWED_HOSTS" in bad["last_error"]
    assert forbidden.requests == []
    assert good["state"] == "finished", good["last_error"]
    assert mixed["state"] == "finished", mixed["last_error"]  # the forbidden address is skipped, not tried
    assert len(receiver.requests) == 2


def test_a_star_allows_any_name_but_not_any_address(db, settings, db_url, forbidden):
    with dns({"anything.test": [FORBIDDEN], "private.test": ["10.0.0.7"]}), \
            app_with(db, settings, webhook_allowed_hosts=("*",)) as client:
        make_hook(client, "star", f"http://anything.test:{forbidden.port}/")
        make_hook(client, "private", f"http://private.test:{forbidden.port}/")
        # An IP literal under "*" must be public: a private one is refused at creation already.
        for literal in (f"http://{FORBIDDEN}:{forbidden.port}/", "http://10.0.0.7/", "http://169.254.169.254/",
                        "http://[::1]/", "http://0.0.0.0/"):
            answer = client.post("/callbacks", json={"name": "lit", "kind": "webhook", "target": literal})
            assert answer.status_code == 422, (literal, answer.json)
        star = settled(db_url, schedule(client, "star"))
        private = settled(db_url, schedule(client, "private"))
    assert star["state"] == "failed" and "resolved to 127.0.0.2" in star["last_error"]
    assert private["state"] == "failed" and "resolved to 10.0.0.7" in private["last_error"]
    assert forbidden.requests == []


def test_a_listed_network_allows_its_addresses(db, settings, db_url, forbidden):
    with dns({"internal.test": [FORBIDDEN]}), \
            app_with(db, settings, webhook_allowed_hosts=("internal.test", "127.0.0.0/30")) as client:
        make_hook(client, "internal", f"http://internal.test:{forbidden.port}/")
        make_hook(client, "literal", f"http://{FORBIDDEN}:{forbidden.port}/")
        first = settled(db_url, schedule(client, "internal"))
        second = settled(db_url, schedule(client, "literal"))
    assert first["state"] == second["state"] == "finished", (first["last_error"], second["last_error"])
    assert len(forbidden.requests) == 2


def test_a_redirect_to_a_forbidden_address_is_not_followed(live_client, db_url, receiver, forbidden):
    receiver.redirect_to = forbidden.url + "/stolen"
    make_hook(live_client, "hook", receiver.url)
    event = settled(db_url, schedule(live_client, "hook", {"secret": "s3cr3t"}))
    assert event["state"] == "failed" and event["last_error"].startswith("webhook answered HTTP 307")
    assert len(receiver.requests) == 1 and forbidden.requests == []


# -- headers -------------------------------------------------------------------------------------

BAD_HEADERS = [
    {"X-A": "ok\r\nX-Injected: 1"}, {"X-A": "ok\nX-Injected: 1"}, {"X-A": "ok\r"}, {"X-A": "a\x00b"},
    {"X-A\r\nX-Injected": "1"}, {"X A": "1"}, {"": "1"}, {"X-A:": "1"}, {"X-A": " leading"},
    {"webhook-signature": "v1,forged"}, {"Webhook-Id": "1"}, {"X-Punctual-Event-Id": "7"}, {"Host": "elsewhere"},
    {"X-A": 1}, {"X-A": None},
]


def test_header_names_and_values_with_cr_or_lf_are_refused_on_create_and_update(client, db_url, receiver):
    before = count_callbacks(db_url)
    for headers in BAD_HEADERS:
        answer = client.post("/callbacks", json={"name": "h", "kind": "webhook", "target": receiver.url,
                                                 "config": {"headers": headers}})
        assert answer.status_code == 422, (headers, answer.json)
        assert set(answer.json["error"]) == {"code", "message", "details"}
        assert "Injected: 1" not in answer.get_data(as_text=True) or "\\r\\n" in answer.json["error"]["message"]
    assert count_callbacks(db_url) == before
    created = make_hook(client, "h", receiver.url, config={"headers": {"X-A": "fine"}})
    stored = sql(db_url, "SELECT * FROM callbacks WHERE id = %s", (created["id"],))
    for method in ("put", "patch"):
        for headers in BAD_HEADERS:
            answer = getattr(client, method)(f"/callbacks/{created['id']}", json={"config": {"headers": headers}})
            assert answer.status_code == 422, (method, headers, answer.json)
    assert sql(db_url, "SELECT * FROM callbacks WHERE id = %s", (created["id"],)) == stored


def test_header_refusals_name_the_header_but_never_echo_its_value(client):
    answer = client.post("/callbacks", json={"name": "h", "kind": "webhook", "target": "http://127.0.0.1/",
                                             "config": {"headers": {"Authorization": "Bearer TOPSECRET\r\nX: 1"}}})
    assert answer.status_code == 422
    assert "Authorization" in answer.json["error"]["message"]
    assert "TOPSECRET" not in answer.get_data(as_text=True)


# -- signing -------------------------------------------------------------------------------------

def test_each_delivery_is_signed_and_verifies_with_the_reference_library(live_client, db_url, receiver):
    created = make_hook(live_client, "signed", receiver.url, config={"headers": {"X-Team": "ops"}})
    secret = created["signing_secret"]
    assert secret.startswith("whsec_") and secret != "***"
    receiver.secret = secret
    payload = {"order": 17, "text": "ünïcode", "nested": {"ok": True}}
    event_id = schedule(live_client, "signed", payload)
    event = settled(db_url, event_id)
    assert event["state"] == "finished", event["last_error"]  # the receiver answers 401 to a bad signature
    [request] = receiver.requests
    assert request["verified"] == payload  # Webhook.verify returns the parsed body when the signature holds
    headers = request["headers"]
    assert headers["webhook-id"] == f"evt_{event_id}_1"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 30
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["X-Punctual-Event-Id"] == str(event_id) and headers["X-Punctual-Attempt"] == "1"
    assert headers["X-Team"] == "ops" and headers["Content-Type"] == "application/json"
    assert json.loads(request["raw"]) == payload
    # A forged or altered delivery does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request["raw"].replace(b"17", b"18"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "B" * 44).verify(request["raw"], headers)


def test_each_attempt_has_its_own_webhook_id(live_client, db_url, receiver):
    created = make_hook(live_client, "retried", receiver.url, max_attempts=2)
    receiver.secret = created["signing_secret"]
    receiver.status = 500
    event_id = schedule(live_client, "retried")
    assert settled(db_url, event_id)["state"] == "failed"
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [f"evt_{event_id}_1", f"evt_{event_id}_2"]
    assert all(isinstance(r["verified"], dict) for r in receiver.requests)


def test_rotation_changes_the_signing_secret_and_shows_the_new_one_once(live_client, db_url, receiver):
    created = make_hook(live_client, "rotated", receiver.url)
    old = created["signing_secret"]
    receiver.secret = old
    assert settled(db_url, schedule(live_client, "rotated"))["state"] == "finished"

    rotated = live_client.post(f"/callbacks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.json
    new = rotated.json["signing_secret"]
    assert new.startswith("whsec_") and new not in (old, "***")
    assert sql(db_url, "SELECT signing_secret FROM callbacks WHERE id = %s", (created["id"],)) == \
        [{"signing_secret": new}]
    assert live_client.get(f"/callbacks/{created['id']}").json["signing_secret"] == "***"

    # The receiver still holding the old secret refuses the next delivery; with the new one it verifies.
    failed = settled(db_url, schedule(live_client, "rotated"))
    assert failed["state"] == "failed" and "HTTP 401" in failed["last_error"]
    receiver.secret = new
    assert settled(db_url, schedule(live_client, "rotated"))["state"] == "finished"
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(receiver.requests[-1]["raw"], receiver.requests[-1]["headers"])


def test_rotation_is_for_webhooks_only_and_needs_an_existing_callback(client):
    python = client.post("/callbacks", json={"name": "py", "kind": "python", "target": "add"}).json
    answer = client.post(f"/callbacks/{python['id']}/rotate-secret")
    assert answer.status_code == 409 and answer.json["error"]["code"] == "conflict"
    answer = client.post("/callbacks/999999/rotate-secret")
    assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"


def test_a_client_may_bring_its_own_secret_and_it_is_never_answered(live_client, db_url, receiver):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    created = make_hook(live_client, "own", receiver.url, signing_secret=secret)
    assert created["signing_secret"] == "***"
    receiver.secret = secret
    assert settled(db_url, schedule(live_client, "own"))["state"] == "finished"
    for bad in ("plain", "whsec_", "whsec_!!!", "whsec_" + "A" * 8, 12):
        answer = live_client.post("/callbacks", json={"name": "bad", "kind": "webhook", "target": receiver.url,
                                                      "signing_secret": bad})
        assert answer.status_code == 422, (bad, answer.json)
        assert str(bad) not in answer.json["error"]["message"] or bad in ("whsec_",)
    answer = live_client.post("/callbacks", json={"name": "py", "kind": "python", "target": "add",
                                                  "signing_secret": secret})
    assert answer.status_code == 422 and answer.json["error"]["details"]["field"] == "signing_secret"


# -- secrets are write-only ----------------------------------------------------------------------

def test_star_star_star_sent_back_keeps_the_stored_values(live_client, db_url, receiver):
    created = make_hook(live_client, "kept", receiver.url,
                        config={"headers": {"Authorization": "Bearer s3cr3t-token", "X-Team": "ops"}})
    receiver.secret = created["signing_secret"]
    got = live_client.get(f"/callbacks/{created['id']}").json
    assert got["config"] == {"headers": {"Authorization": "***", "X-Team": "***"}}
    assert got["signing_secret"] == "***"
    # The GET's answer, edited and sent back: *** keeps each stored value, a new value replaces one.
    got["config"]["headers"]["X-Team"] = "platform"
    got["config"]["headers"]["X-New"] = "1"
    answer = live_client.put(f"/callbacks/{created['id']}",
                             json={"config": got["config"], "signing_secret": got["signing_secret"]})
    assert answer.status_code == 200, answer.json
    assert answer.json["config"]["headers"] == {"Authorization": "***", "X-Team": "***", "X-New": "***"}
    [stored] = sql(db_url, "SELECT config, signing_secret FROM callbacks WHERE id = %s", (created["id"],))
    assert stored["config"]["headers"] == {"Authorization": "Bearer s3cr3t-token", "X-Team": "platform",
                                           "X-New": "1"}
    assert stored["signing_secret"] == created["signing_secret"]
    assert settled(db_url, schedule(live_client, "kept"))["state"] == "finished"
    assert receiver.requests[-1]["headers"]["Authorization"] == "Bearer s3cr3t-token"
    # "***" for a header that has no stored value cannot be kept: refused, nothing changes.
    answer = live_client.patch(f"/callbacks/{created['id']}", json={"config": {"headers": {"X-Other": "***"}}})
    assert answer.status_code == 422 and answer.json["error"]["details"]["field"] == "config.headers"
    assert sql(db_url, "SELECT config, signing_secret FROM callbacks WHERE id = %s", (created["id"],)) == [stored]


def test_secrets_are_never_in_an_answer_or_a_log_line(db, settings, db_url, log_dir, receiver):
    """Header values and signing secrets, through every road that shows a callback: answers of every route,
    /openapi.json, events.log, errors.log, and every log record of this process."""
    header_secret, own_secret = "Bearer hdr-S3CRET-4711", "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LTAxMjM0NTY3ODk="
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    collector = Collect(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(collector)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    answers: list[str] = []
    try:
        with app_with(db, settings) as client:
            def call(method: str, path: str, **kwargs: Any) -> Any:
                response = getattr(client, method)(path, **kwargs)
                answers.append(response.get_data(as_text=True))
                return response

            generated = call("post", "/callbacks", json={
                "name": "leaky", "kind": "webhook", "target": receiver.url, "max_attempts": 2,
                "config": {"headers": {"Authorization": header_secret}}}).json
            made_secret = generated["signing_secret"]
            answers.pop()  # the one answer that shows the secret it made (by design)
            own = call("post", "/callbacks", json={"name": "own", "kind": "webhook", "target": receiver.url,
                                                   "signing_secret": own_secret,
                                                   "config": {"headers": {"Authorization": header_secret}}}).json
            receiver.secret = made_secret
            ok = schedule(client, "leaky", {"n": 1})
            assert settled(db_url, ok)["state"] == "finished"
            receiver.status = 500  # a failure, retried once: last_error and the audit lines have their say too
            failed = schedule(client, "leaky", {"n": 2})
            assert settled(db_url, failed)["state"] == "failed"
            receiver.status = 200
            call("get", "/callbacks")
            call("get", f"/callbacks/{generated['id']}")
            call("get", f"/callbacks/{own['id']}")
            call("put", f"/callbacks/{generated['id']}", json={"timeout_seconds": 3})
            call("patch", f"/callbacks/{own['id']}", json={"config": {"headers": {"Authorization": "***"}}})
            call("put", f"/callbacks/{own['id']}", json={"config": {"headers": {"Authorization": "x\r\ny"}}})
            call("post", "/callbacks", json={"name": "leaky", "kind": "webhook", "target": receiver.url,
                                             "config": {"headers": {"Authorization": header_secret}}})  # 409
            call("get", f"/events/{ok}")
            call("get", f"/events/{failed}")
            call("get", "/events")
            call("get", "/openapi.json")
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)
    files = {path.name: path.read_text() for path in log_dir.iterdir() if path.is_file()}
    assert "events.log" in files and "errors.log" in files
    assert len(receiver.requests) == 3  # the deliveries did happen, with the secrets, to the receiver only
    assert receiver.requests[0]["headers"]["Authorization"] == header_secret
    for secret in (header_secret, "hdr-S3CRET", made_secret, own_secret, own_secret.removeprefix("whsec_")):
        for n, text in enumerate(answers):
            assert secret not in text, (secret, n, text[:300])
        for name, text in files.items():
            assert secret not in text, (secret, name)
        for line in records:
            assert secret not in line, (secret, line)


# -- what holds audit history is not deleted by a side effect --------------------------------------

def test_delete_of_a_webhook_with_finished_events_is_409_and_the_rows_stay(live_client, db_url, receiver):
    created = make_hook(live_client, "audited", receiver.url)
    receiver.secret = created["signing_secret"]
    event_id = schedule(live_client, "audited")
    assert settled(db_url, event_id)["state"] == "finished"
    history = sql(db_url, "SELECT * FROM event_history WHERE event_id = %s ORDER BY id", (event_id,))
    answer = live_client.delete(f"/callbacks/{created['id']}")
    assert answer.status_code == 409, answer.json
    assert answer.json["error"]["details"] == {"events": 1, "pending_events": 0}
    assert sql(db_url, "SELECT state FROM events WHERE id = %s", (event_id,)) == [{"state": "finished"}]
    assert sql(db_url, "SELECT * FROM event_history WHERE event_id = %s ORDER BY id", (event_id,)) == history
    assert live_client.get(f"/callbacks/{created['id']}").status_code == 200


# -- the policy, read directly ---------------------------------------------------------------------

def test_the_address_policy_in_one_table():
    from controllers.targets import policy_of

    default = policy_of(("127.0.0.1", "::1", "localhost"))
    star = policy_of(("*",))
    listed = policy_of(("hooks.example.com", "*.corp.example", "10.1.0.0/16"))
    import ipaddress

    ip = ipaddress.ip_address
    cases = [
        (default, "127.0.0.1", True), (default, "localhost", True), (default, "::1", True),
        (default, "127.0.0.2", False), (default, "127.0.0.1.evil.test", False), (default, "::ffff:127.0.0.2", False),
        (star, "anything.example", True), (star, "8.8.8.8", True), (star, "10.0.0.1", False),
        (star, "169.254.169.254", False), (star, "127.0.0.1", False),
        (listed, "hooks.example.com", True), (listed, "a.corp.example", True), (listed, "corp.example", False),
        (listed, "evilcorp.example", False), (listed, "10.1.2.3", True), (listed, "10.2.0.1", False),
        (listed, "8.8.8.8", False),
    ]
    for rules, host, expected in cases:
        assert rules.host_allowed(host) is expected, (rules, host)
    for rules, address, expected in [
        (default, "127.0.0.1", True), (default, "127.0.0.2", False), (default, "93.184.216.34", True),
        (default, "10.0.0.1", False), (default, "192.168.1.1", False), (default, "169.254.169.254", False),
        (default, "100.64.0.1", False), (default, "0.0.0.0", False), (default, "::ffff:127.0.0.1", True),
        (default, "::ffff:10.0.0.1", False), (default, "fe80::1", False), (default, "fc00::1", False),
        (default, "224.0.0.1", False), (listed, "10.1.255.255", True),
    ]:
        assert rules.address_allowed(ip(address)) is expected, (rules, address)
