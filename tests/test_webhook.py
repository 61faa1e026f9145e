"""`webhook` callbacks against a real HTTP server: what is sent, what counts as success, and that
failures (5xx, hangs, dropped connections, redirects, hosts no longer allowed) are failed attempts."""
from __future__ import annotations

from typing import Any

from engine import Engine
from metrics import Metrics
from tests.helpers import WebhookTarget, sql, wait_for


def make_hook(client, name: str, url: str, *, max_attempts: int = 1, timeout: float = 2.0) -> None:
    created = client.post("/callbacks", json={"name": name, "kind": "webhook", "target": url,
                                              "config": {"headers": {"X-Custom": "yes"}},
                                              "max_attempts": max_attempts, "timeout_seconds": timeout})
    assert created.status_code == 201, created.json


def schedule(client, callback: str, payload: dict[str, Any]) -> int:
    created = client.post("/events", json={"callback": callback, "payload": payload})
    assert created.status_code == 201, created.json
    return created.json["id"]


def settled(db_url: str, event_id: int, timeout: float = 8.0) -> dict[str, Any]:
    def done():
        rows = sql(db_url, "SELECT * FROM events WHERE id = %s AND state IN ('finished', 'failed')", (event_id,))
        return rows[0] if rows else None
    return wait_for(done, timeout=timeout, message=f"event {event_id} to finish or fail")


def test_a_webhook_gets_the_payload_as_json_with_event_id_and_attempt_and_2xx_is_success(
        live_client, db_url, webhook):
    webhook.status = 201
    webhook.body = {"received": True, "text": "ünïcode"}
    make_hook(live_client, "hook", webhook.url + "/in?x=1")
    payload = {"order": 17, "items": ["a", "b"], "nested": {"ok": True}}
    event_id = schedule(live_client, "hook", payload)
    event = settled(db_url, event_id)
    assert event["state"] == "finished", event["last_error"]
    assert event["result"] == {"status": 201, "body": {"received": True, "text": "ünïcode"}}
    [request] = webhook.requests
    assert request["path"] == "/in?x=1"
    assert request["json"] == payload
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Punctual-Event-Id"] == str(event_id)
    assert request["headers"]["X-Punctual-Attempt"] == "1"
    assert request["headers"]["X-Punctual-Callback"] == "hook"
    assert request["headers"]["X-Custom"] == "yes"


def test_a_5xx_answer_is_retried_and_then_fails(live_client, db_url, webhook):
    webhook.status = 500
    webhook.body = {"error": "boom"}
    make_hook(live_client, "hook", webhook.url, max_attempts=2)
    event_id = schedule(live_client, "hook", {"n": 1})
    event = settled(db_url, event_id)
    assert event["state"] == "failed" and event["attempts"] == 2
    assert event["last_error"].startswith("webhook answered HTTP 500")
    assert [r["headers"]["X-Punctual-Attempt"] for r in webhook.requests] == ["1", "2"]
    assert {r["headers"]["X-Punctual-Event-Id"] for r in webhook.requests} == {str(event_id)}


def test_a_webhook_hanging_past_the_timeout_is_a_failed_attempt_that_timed_out(live_client, db_url, webhook):
    webhook.delay = 1.5
    make_hook(live_client, "slow", webhook.url, timeout=0.3)
    event_id = schedule(live_client, "slow", {})
    event = settled(db_url, event_id, timeout=5)
    assert event["state"] == "failed"
    assert "timed out" in event["last_error"]
    assert (event["finished_at"] - event["started_at"]).total_seconds() < 1.2


def test_a_closed_connection_is_a_failed_attempt(live_client, db_url, webhook):
    webhook.close_connection = True
    make_hook(live_client, "hook", webhook.url)
    event_id = schedule(live_client, "hook", {})
    event = settled(db_url, event_id)
    assert event["state"] == "failed"
    assert event["last_error"].startswith("webhook request failed")
    assert len(webhook.requests) == 1


def test_a_redirect_is_not_followed_and_is_a_failed_attempt(db, settings, db_url, webhook):
    from app import create_app

    elsewhere = WebhookTarget()  # listens on 127.0.0.1 but is named `localhost`, off the allow-list
    eng = Engine(db, settings.with_(webhook_allowed_hosts=("127.0.0.1",)), Metrics())
    eng.start()
    try:
        client = create_app(eng.settings, db, eng, eng.metrics).test_client()
        webhook.redirect_to = elsewhere.url.replace("127.0.0.1", "localhost") + "/stolen"
        make_hook(client, "hook", webhook.url)
        event_id = schedule(client, "hook", {"secret": "s3cr3t"})
        event = settled(db_url, event_id)
    finally:
        eng.stop()
        elsewhere.close()
    assert event["state"] == "failed"
    assert event["last_error"].startswith("webhook answered HTTP 307")
    assert len(webhook.requests) == 1 and elsewhere.requests == []


def test_a_host_allowed_when_the_callback_was_made_but_not_at_run_time_fails(client, db, settings, db_url, webhook):
    make_hook(client, "hook", webhook.url)  # created under the default allow-list (127.0.0.1, localhost)
    eng = Engine(db, settings.with_(webhook_allowed_hosts=("hooks.example.org",)), Metrics())
    eng.start()
    try:
        event_id = schedule(client, "hook", {})
        event = settled(db_url, event_id)
    finally:
        eng.stop()
    assert event["state"] == "failed"
    assert "not in WEBHOOK_ALLOWED_HOSTS" in event["last_error"]
    assert webhook.requests == []


def test_a_webhook_callback_for_a_host_off_the_allow_list_is_refused_at_creation(client):
    answer = client.post("/callbacks", json={"name": "evil", "kind": "webhook", "target": "http://evil.example/x"})
    assert answer.status_code == 422
    assert answer.json["error"]["details"]["field"] == "target"


def test_a_huge_answer_is_cut_and_only_its_start_is_stored(live_client, db_url, webhook):
    webhook.body = {"data": "y" * 3_000_000}
    make_hook(live_client, "hook", webhook.url)
    event_id = schedule(live_client, "hook", {})
    event = settled(db_url, event_id)
    assert event["state"] == "finished", event["last_error"]
    assert event["result"]["truncated"] is True
    assert event["result"]["body"].startswith('{"data": "yyy')
    assert len(event["result"]["body"]) == 10_000

