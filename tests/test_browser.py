"""The web client, in a real headless Chromium against a real `python app.py`, plus the live stream under it.

The browser tests skip only when /usr/bin/chromium is absent (CI installs Debian's `chromium`). Every page
they visit is saved under test-artifacts/screenshots/ (CI prints that folder).
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg2
import pytest
import requests

from engine.queries import Change
from streams import RESYNC, Broadcaster, stream
from tests.browser import CHROMIUM, Watched, launch, screenshot
from tests.helpers import sql, wait_for

# Small pools: several app processes and the browser share two cores and one PostgreSQL.
# HTTP_THREADS=8 allows 4 live streams (half the threads), plenty for three tabs.
APP_ENV = {"DB_POOL_SIZE": "4", "HTTP_THREADS": "8", "WORKER_THREADS": "2"}
ZONE = "America/New_York"  # not UTC, so a lost offset or a UTC-only display would show
MARKUP = "<img src=x onerror=alert(1)>"


# -- the broadcaster, without a browser ------------------------------------------------------------

def change(event_id: int, state: str | None = "scheduled") -> Change:
    return Change(event_id, state, datetime(2030, 1, 1, tzinfo=timezone.utc))


def test_a_slow_subscriber_is_told_to_resync_and_never_blocks_the_listener():
    hub = Broadcaster(queue_size=4)
    slow, fast = hub.subscribe(), hub.subscribe()
    started = time.monotonic()
    for n in range(5000):  # nobody reads `slow`: its inbox overflows at once
        hub([change(n)])
        if n % 100 == 0:
            assert fast.next(0) is not None
    assert time.monotonic() - started < 2.0, "publishing waited on a subscriber"
    assert slow.next(0) == RESYNC
    assert slow.next(0) is None  # the backlog was dropped with the resync, not delivered late
    hub([change(7, "running")])
    assert slow.next(0) == [{"id": 7, "state": "running", "scheduled_for": "2030-01-01T00:00:00+00:00"}]


def test_queued_batches_reach_a_subscriber_merged_latest_state_per_event():
    hub = Broadcaster()
    inbox = hub.subscribe()
    hub([change(1), change(2)])
    hub([change(1, "running")])
    hub([change(1, "finished"), change(3, None)])
    got = {c["id"]: c["state"] for c in inbox.next(0)}
    assert got == {1: "finished", 2: "scheduled", 3: None}


def test_streams_are_capped_and_a_closed_slot_is_reusable():
    hub = Broadcaster(max_subscribers=2)
    first, second = hub.subscribe(), hub.subscribe()
    assert first and second and hub.subscribe() is None
    hub.unsubscribe(first)
    assert hub.subscribe() is not None
    hub.close()
    assert hub.subscribe() is None


def test_a_stream_gives_its_slot_back_when_the_page_goes_or_the_server_stops():
    hub = Broadcaster(max_subscribers=1)
    gone = threading.Event()
    body = stream(hub, hub.subscribe(), alive=lambda: True, disconnected=gone.is_set, encode=json.dumps, tick=0.01)
    assert next(body).startswith(b"retry: 2000\nevent: hello")
    hub([change(5, "running")])
    assert next(body) == b'event: changes\ndata: [{"id": 5, "state": "running", "scheduled_for": "2030-01-01T00:00:00+00:00"}]\n\n'
    assert hub.subscribe() is None
    body.close()  # what waitress does when a write fails: the page went away
    assert hub.count == 0
    body = stream(hub, hub.subscribe(), alive=lambda: True, disconnected=gone.is_set, encode=json.dumps, tick=0.01)
    next(body)
    gone.set()  # waitress noticed the closed connection
    assert list(body) == [] and hub.count == 0
    body = stream(hub, hub.subscribe(), alive=lambda: True, disconnected=lambda: False, encode=json.dumps,
                  tick=0.01, heartbeat_seconds=0.02)
    next(body)
    assert next(body) == b": heartbeat\n\n"
    hub.close()
    assert list(body) == [b"event: bye\ndata: {}\n\n"] and hub.count == 0


# -- the stream through waitress -------------------------------------------------------------------

def read_messages(response, until, timeout: float = 5.0) -> list[tuple[str, str]]:
    """Read SSE messages (event, data) until `until(messages)` holds; fail at the deadline."""
    messages: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    buffer = getattr(response, "_sse_buffer", "")
    chunks = getattr(response, "_sse_chunks", None) or response.iter_content(chunk_size=None, decode_unicode=True)
    response._sse_chunks = chunks
    for chunk in chunks:
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event, data = "message", []
            for line in block.split("\n"):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
            if data:
                messages.append((event, "\n".join(data)))
        response._sse_buffer = buffer
        if messages and until(messages):
            return messages
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"stream ended or timed out; got {messages}")


def test_the_stream_pushes_a_change_within_a_second_and_refuses_pages_beyond_its_cap(start_app):
    app = start_app(**{**APP_ENV, "HTTP_THREADS": "4"})  # a cap of 2 streams
    first = requests.get(app.url + "/stream", stream=True, timeout=10)
    second = requests.get(app.url + "/stream", stream=True, timeout=10)
    try:
        assert first.headers["Content-Type"].startswith("text/event-stream")
        read_messages(first, lambda m: m[-1][0] == "hello")
        read_messages(second, lambda m: m[-1][0] == "hello")
        third = requests.get(app.url + "/stream", timeout=5)
        assert third.status_code == 503 and third.json()["error"]["details"] == {"limit": 2}
        started = time.monotonic()
        event = requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": 1, "y": 2}}).json()
        seen = read_messages(first, lambda m: any(e == "changes" and
                                                  any(c["id"] == event["id"] and c["state"] == "finished"
                                                      for c in json.loads(d)) for e, d in m))
        assert time.monotonic() - started < 1.0, seen
    finally:
        first.close()
        second.close()



def test_an_open_page_sees_events_running_because_it_tells_every_instance_to_notify_claims(start_app, db_url):
    app = start_app(**APP_ENV)
    sql(db_url, "INSERT INTO callbacks (name, kind, target) VALUES ('Sleeper', 'python', 'sleep')")
    assert sql(db_url, "SELECT count(*) AS n FROM punctual_flags WHERE name = 'live'")[0]["n"] == 0
    response = requests.get(app.url + "/stream", stream=True, timeout=10)
    try:
        read_messages(response, lambda m: m[-1][0] == "hello")
        fresh = sql(db_url, "SELECT set_at > now() - interval '10 seconds' AS fresh FROM punctual_flags "
                            "WHERE name = 'live'")
        assert fresh == [{"fresh": True}]
        event = requests.post(app.url + "/events", json={"callback": "Sleeper", "payload": {"seconds": 1}}).json()

        def seen(state: str):
            return lambda m: any(e == "changes" and any(c["id"] == event["id"] and c["state"] == state
                                                        for c in json.loads(d)) for e, d in m)
        read_messages(response, seen("running"))
        read_messages(response, seen("finished"))
    finally:
        response.close()

def test_a_stop_ends_open_streams_and_the_app_exits_cleanly(start_app):
    app = start_app(**APP_ENV)
    response = requests.get(app.url + "/stream", stream=True, timeout=20)
    read_messages(response, lambda m: m[-1][0] == "hello")
    ended = threading.Event()

    def drain() -> None:
        try:
            for _ in response.iter_content(chunk_size=1):
                pass
        except requests.RequestException:
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    started = time.monotonic()
    assert app.terminate(timeout=20) == 0
    assert time.monotonic() - started < 10, "an open stream held the shutdown up"
    assert ended.wait(5), "the stream was left hanging after the process stopped"


# -- the page in Chromium ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's policy forbids (as it
    # should). The markup test uses strict_context: the page must work under its own policy.
    ctx = browser.new_context(timezone_id=ZONE, locale="en-GB", viewport={"width": 1280, "height": 860},
                              bypass_csp=True)
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture
def strict_context(browser):
    ctx = browser.new_context(timezone_id=ZONE, locale="en-GB", viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def tab(context, url: str, token: str | None = None) -> Watched:
    """A new tab on `url`; with `token`, the tab starts out holding it (as if typed in the token dialog)."""
    page = context.new_page()
    if token:
        page.add_init_script(f"if (!sessionStorage.getItem('punctual.token')) "
                             f"sessionStorage.setItem('punctual.token', {json.dumps(token)});")
    return Watched(page).open(url)


def row_state(page, event_id: int) -> str | None:
    return page.evaluate("id => document.querySelector(`tr[data-id='${id}']`)?.dataset.state ?? null", event_id)


def count_events(app_db: str) -> int:
    return sql(app_db, "SELECT count(*) AS n FROM events")[0]["n"]


def test_an_event_scheduled_from_the_form_goes_scheduled_running_finished_without_a_reload(
        start_app, context, db_url):
    app = start_app(**APP_ENV)
    assert requests.post(app.url + "/callbacks", json={"name": "Nap", "kind": "python", "target": "sleep"}).ok
    page = tab(context, app.url + "/").page
    page.wait_for_selector("#live.on")
    page.evaluate("window.__sameDocument = true")
    page.select_option("#s-callback", "Nap")
    page.fill("#s-payload", '{"seconds": 1.5}')
    # The picker is in the person's zone; the form sends that time with its offset.
    when = (datetime.now(ZoneInfo(ZONE)) + timedelta(seconds=2.5)).replace(microsecond=0)
    page.fill("#s-when-pick", when.strftime("%Y-%m-%dT%H:%M:%S"))
    assert page.input_value("#s-when") == when.isoformat()  # e.g. 2026-11-22T14:03:07-05:00
    page.click("#s-submit")
    page.wait_for_selector("#s-result.ok")
    event_id = int(page.text_content("#s-result").split("#")[1].split(" ")[0])
    stored = requests.get(f"{app.url}/events/{event_id}").json()
    assert datetime.fromisoformat(stored["scheduled_for"]) == when

    seen: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (not seen or seen[-1] != "finished"):
        state = row_state(page, event_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        time.sleep(0.05)
    assert seen == ["scheduled", "running", "finished"]
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert page.get_attribute(f"tr[data-id='{event_id}'] time", "title").endswith(" UTC")  # UTC on hover
    page.wait_for_function("document.querySelector(\"[data-state='finished'] .chip-n\").textContent !== '0'")
    screenshot(page, "events")
    page.click(f"tr[data-id='{event_id}']")
    page.wait_for_selector("#detail[open] #d-history li >> nth=2")
    assert page.text_content("#d-outcome").count("1.5") == 1
    screenshot(page, "event-detail")
    assert count_events(db_url) == 1


def test_invalid_json_and_a_time_without_an_offset_get_a_readable_message_and_create_nothing(
        start_app, context, db_url):
    app = start_app(**APP_ENV)
    watched = tab(context, app.url + "/")
    page = watched.page
    page.select_option("#s-callback", "Addition")
    page.fill("#s-payload", '{"x": 1, "y": ')
    assert "Not valid JSON" in page.text_content("#s-payload-msg")  # as you type
    page.click("#s-submit")
    assert "Nothing was scheduled" in page.text_content("#s-result")
    page.fill("#s-payload", "[1, 2]")
    assert "must be a JSON object" in page.text_content("#s-payload-msg")
    page.fill("#s-payload", '{"x": 1, "y": 2}')
    page.fill("#s-when", "2020-01-01T09:00")  # in the past, and no offset: ambiguous
    assert "no UTC offset" in page.text_content("#s-when-msg")
    page.click("#s-submit")
    assert "Nothing was scheduled: fix the time" in page.text_content("#s-result")
    screenshot(page, "schedule-errors")
    assert count_events(db_url) == 0
    # The same form does schedule once the input is right (so the refusals above were the form's doing).
    page.fill("#s-when", "2020-01-01T09:00-05:00")
    assert "in the past" in page.text_content("#s-when-msg")
    page.click("#s-submit")
    page.wait_for_selector("#s-result.ok")
    wait_for(lambda: count_events(db_url) == 1, 5, message="the valid event")
    assert not watched.errors and not watched.dialogs


def test_an_event_created_by_another_client_appears_within_a_second(start_app, context):
    app = start_app(**APP_ENV)
    watched = tab(context, app.url + "/")
    page = watched.page
    page.wait_for_selector("#live.on")
    started = time.monotonic()
    event = requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": 2, "y": 3},
                                                     "scheduled_for": "2031-05-01T12:00:00Z"}).json()
    page.wait_for_selector(f"tr[data-id='{event['id']}'][data-state='scheduled']", timeout=1000)
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    assert requests.post(f"{app.url}/events/{event['id']}/cancel").ok
    page.wait_for_selector(f"tr[data-id='{event['id']}'][data-state='cancelled']", timeout=1000)
    assert time.monotonic() - started < 1.0
    # The counts follow too; the table was read once, at load: since then only the changed row was fetched.
    page.wait_for_function("document.querySelector(\"[data-state='cancelled'] .chip-n\").textContent === '1'")
    listings = [r for r in watched.requests if r.startswith(f"GET {app.url}/events?")]
    assert len(listings) == 1, listings
    assert f"GET {app.url}/events/{event['id']}" in watched.requests


def test_the_detail_view_cancels_retries_reschedules_and_deletes_and_shows_refusals(start_app, context):
    app = start_app(**APP_ENV)
    event = requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": 1, "y": 2},
                                                     "scheduled_for": "2031-03-01T12:00:00Z"}).json()
    page = tab(context, app.url + "/").page
    page.press(f"tr[data-id='{event['id']}']", "Enter")  # keyboard: a row opens with Enter
    page.wait_for_selector("#detail[open]")
    page.fill("#d-resched", "2031-03-02T08:30:00")  # the person's zone (New York, UTC-5 in March)
    page.click("#d-resched-btn")
    page.wait_for_selector("#d-msg.ok")
    assert requests.get(f"{app.url}/events/{event['id']}").json()["scheduled_for"] == "2031-03-02T13:30:00+00:00"
    page.click("#d-cancel")
    page.wait_for_selector("#d-title .s-cancelled")
    assert page.is_hidden("#d-cancel") and page.is_visible("#d-retry")
    page.click("#d-retry")
    wait_for(lambda: requests.get(f"{app.url}/events/{event['id']}").json()["state"] == "finished", 10,
             message="the retried event to run")
    page.wait_for_selector("#d-title .s-finished")  # the open detail follows the change
    assert "3" in page.text_content("#d-outcome")  # 1 + 2
    assert [li.split()[1] for li in page.locator("#d-history li").all_text_contents()][-2:] == ["running", "finished"]
    screenshot(page, "event-detail-actions")
    page.click("#d-delete")
    page.click("#d-delete")  # "Really delete?"
    page.wait_for_selector("#detail", state="hidden")
    page.wait_for_selector(f"tr[data-id='{event['id']}']", state="detached")
    assert requests.get(f"{app.url}/events/{event['id']}").status_code == 404
    # A refusal is shown in the API's words: a callback with pending events cannot be deleted.
    requests.post(app.url + "/events", json={"callback": "Division", "scheduled_for": "2031-01-01T00:00:00Z"})
    page.goto(app.url + "/#callbacks")
    page.click("button[aria-label='Delete Division']")
    page.click("button[aria-label='Delete Division']")
    page.wait_for_selector("#cb-result.bad")
    assert page.text_content("#cb-result").startswith("Not deleted: ")


def desk_tab(context, url: str, name: str, lease: int | None = None):
    page = tab(context, url + "/#desk").page
    if lease:
        page.click(".settings summary")
        page.fill("#desk-lease", str(lease))
        page.dispatch_event("#desk-lease", "change")
    page.fill("#desk-name", name)
    page.press("#desk-name", "Enter")
    return page


def held(page) -> int | None:
    value = page.evaluate("() => { const a = document.getElementById('desk-alert');"
                          " return a.hidden ? null : a.dataset.eventId; }")
    return int(value) if value else None


def test_desk_tabs_share_the_queue_an_expired_or_released_alert_goes_to_the_other_tab(start_app, context):
    app = start_app(**APP_ENV)
    alerts = [requests.post(app.url + "/events", json={"callback": "Alert", "payload": {
        "alert_id": n, "message": text, "severity": severity}}).json()["id"]
        for n, text, severity in ((1, "Disk 91% full on db-1", "warning"), (2, "API p99 above 2 s", "critical"))]
    ana = desk_tab(context, app.url, "ana", lease=3)
    ana.wait_for_selector("#desk-alert:not([hidden])")
    ben = desk_tab(context, app.url, "ben")
    ben.wait_for_selector("#desk-alert:not([hidden])")
    mine, theirs = held(ana), held(ben)
    assert {mine, theirs} == set(alerts)  # different alerts, one each
    # The tabs share one live stream (a SharedWorker), so a few open tabs do not use up the connections.
    with requests.get(app.url + "/stream", stream=True, timeout=10) as probe:
        hello = read_messages(probe, lambda m: m[-1][0] == "hello")[-1]
        assert json.loads(hello[1]) == {"subscribers": 2}
    assert ana.text_content("#desk-countdown").endswith("left")
    screenshot(ben, "desk")

    ben.click("#desk-resolve")
    ben.wait_for_selector("#desk-idle:not([hidden])")
    # ana lets the countdown run out: her alert goes back, and ben (idle) gets it.
    ana.wait_for_selector("#desk-expired:not([hidden])", timeout=6000)
    wait_for(lambda: held(ben) == mine, 6, 0.1, "ben to get the alert ana let expire")
    ana.click("#desk-resume")
    ana.wait_for_selector("#desk-idle:not([hidden])")
    screenshot(ana, "desk-quiet")

    # ben logs out: the alert is free at once, and ana, waiting, gets it.
    started = time.monotonic()
    ben.click("#desk-logout")
    ben.wait_for_selector("#desk-login:not([hidden])")
    wait_for(lambda: held(ana) == mine, 3, 0.05, "ana to get the alert ben gave back")
    assert time.monotonic() - started < 2.0
    workers = [h["worker"] for h in requests.get(f"{app.url}/events/{mine}").json()["history"]
               if h["state"] == "running"]
    assert workers == ["ana", "ben", "ana"]
    assert requests.get(f"{app.url}/events/{theirs}").json()["state"] == "finished"

    # Kafka is off in this test: the send box says so plainly.
    ana.fill("#a-message", "test alert")
    ana.click("#send-alert button[type=submit]")
    ana.wait_for_selector("#a-result.warn")
    assert "Kafka is off" in ana.text_content("#a-result")


def test_a_payload_holding_markup_is_shown_as_text_and_runs_no_script(start_app, strict_context):
    """Under the page's real Content Security Policy: nothing the page needs is blocked (no console errors)."""
    context = strict_context
    app = start_app(**APP_ENV)
    assert requests.post(app.url + "/callbacks", json={"name": "<b>x</b>", "kind": "manual"}).ok
    event = requests.post(app.url + "/events", json={"callback": "<b>x</b>", "payload": {"note": MARKUP},
                                                     "scheduled_for": "2031-01-01T00:00:00Z"}).json()
    alert = requests.post(app.url + "/events", json={"callback": "Alert", "payload": {"message": MARKUP}}).json()
    watched = tab(context, app.url + "/")
    page = watched.page
    page.wait_for_selector("#live.on")  # the shared worker and its stream are allowed by the policy
    row = f"tr[data-id='{event['id']}']"
    page.wait_for_selector(row)
    assert MARKUP in page.text_content(f"{row} td.payload")
    assert page.text_content(f"{row} td.cb") == "<b>x</b>"
    page.click(row)
    page.wait_for_selector("#detail[open]")
    assert MARKUP in page.text_content("#d-payload")
    desk = desk_tab(context, app.url, "<i>eve</i>")
    desk.wait_for_selector("#desk-alert:not([hidden])")
    assert held(desk) == alert["id"] and desk.text_content("#desk-alert-msg") == MARKUP
    assert desk.text_content("#desk-who") == "<i>eve</i>"
    for p in (page, desk):
        assert p.locator("img, b, i").count() == 0
    page.wait_for_timeout(300)  # an injected onerror would fire as soon as the image failed to load
    assert not watched.dialogs and not watched.errors
    screenshot(page, "markup-as-text")
    # The second lock, for real browsers: the page may only run its own script.
    policy = requests.get(app.url + "/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


def test_callbacks_page_creates_edits_and_deletes_and_pages_fit_a_narrow_screen(start_app, context, db_url):
    app = start_app(**APP_ENV)
    page = tab(context, app.url + "/#callbacks").page
    page.wait_for_selector("tr[data-name='Addition']")
    page.fill("#cb-name", "Notify")
    page.select_option("#cb-kind", "webhook")
    assert page.text_content("#cb-target-label") == "URL"
    page.fill("#cb-target", "http://127.0.0.1:9/hook")
    page.fill("#cb-config", '{"headers": {"X-Team": "ops"}}')
    page.click("#cb-submit")
    page.wait_for_selector("tr[data-name='Notify']")
    # The signing secret is answered once, by the creation: shown then, with the warning, and never again.
    page.wait_for_selector("#cb-secret:not([hidden])")
    assert "Copy it now, it will not be shown again" in page.text_content("#cb-secret")
    secret = page.input_value("#cb-secret-value")
    stored = sql(db_url, "SELECT config, signing_secret FROM callbacks WHERE name = 'Notify'")[0]
    assert secret and secret != "***" and secret in json.dumps(stored)
    screenshot(page, "callback-signing-secret")
    page.click("#cb-secret-done")
    assert page.is_hidden("#cb-secret") and page.input_value("#cb-secret-value") == ""
    # A secret header is shown as "***" and sent back as "***": editing something else keeps its value.
    page.click("button[aria-label='Edit Notify']")
    assert json.loads(page.input_value("#cb-config")) == {"headers": {"X-Team": "***"}}
    assert page.is_visible("#cb-secrets-msg")
    page.fill("#cb-timeout", "5")
    page.click("#cb-submit")
    page.wait_for_selector("#cb-result.ok")
    callback = next(c for c in requests.get(app.url + "/callbacks").json()["callbacks"] if c["name"] == "Notify")
    assert (callback["kind"], callback["timeout_seconds"], callback["config"]) == ("webhook", 5, {"headers": {"X-Team": "***"}})
    assert sql(db_url, "SELECT config FROM callbacks WHERE name = 'Notify'")[0]["config"] == {"headers": {"X-Team": "ops"}}
    assert secret not in page.content()  # the page holds the secret no longer than the person asked
    # Rotation (asked twice: the old secret stops signing at once) shows the new secret, once, the same way.
    page.click("button[aria-label='Edit Notify']")
    page.click("#cb-rotate")
    assert page.is_hidden("#cb-secret")
    page.click("#cb-rotate")
    page.wait_for_selector("#cb-secret:not([hidden])")
    rotated = page.input_value("#cb-secret-value")
    stored = json.dumps(sql(db_url, "SELECT signing_secret FROM callbacks WHERE name = 'Notify'")[0])
    assert rotated not in (secret, "***") and rotated in stored and secret not in stored
    page.click("#cb-secret-done")
    page.click("#cb-cancel")
    screenshot(page, "callbacks")
    page.click("button[aria-label='Delete Notify']")
    page.click("button[aria-label='Delete Notify']")  # "Really?"
    page.wait_for_selector("tr[data-name='Notify']", state="detached")

    page.set_viewport_size({"width": 390, "height": 844})
    for view in ("events", "schedules", "callbacks", "desk"):
        page.goto(f"{app.url}/#{view}")
        page.wait_for_selector("body[data-ready='true']")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the {view} page scrolls sideways on a phone ({overflow} px)"
        screenshot(page, f"narrow-{view}")


# -- access: tokens and scopes (DESIGN.md "Access") -------------------------------------------------

ADMIN = "s3cret-admin"
STATIC = ("/", "/app.js", "/app.css", "/live-worker.js", "/whoami")


def add_token(db_url: str, name: str, scope: str) -> str:
    """A named token, made as `python app.py tokens add NAME --scope SCOPE` stores it: only its SHA-256 kept."""
    secret = f"pct_{secrets.token_urlsafe(24)}"
    sql(db_url, "INSERT INTO api_tokens (name, scope, token_hash) VALUES (%s, %s, %s)",
        (name, scope, hashlib.sha256(secret.encode()).hexdigest()))
    return secret


def as_admin(app, method: str, path: str, **kwargs):
    response = requests.request(method, app.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10,
                                **kwargs)
    assert response.ok, (method, path, response.status_code, response.text)
    return response.json() if response.content else None


def api_requests(watched: Watched, base: str) -> list[str]:
    """The requests a page made beyond loading itself and asking who it is."""
    return [r for r in watched.requests if r.split(" ", 1)[1].removeprefix(base).split("?")[0] not in STATIC]


def test_with_an_api_token_the_page_shows_nothing_until_a_token_is_accepted_and_refuses_a_wrong_one(
        start_app, context):
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    event = as_admin(app, "POST", "/events", json={"callback": "Addition", "payload": {"secret": "do-not-show"},
                                                    "scheduled_for": "2031-01-01T00:00:00Z"})
    watched = Watched(context.new_page())
    page = watched.page
    page.goto(app.url + "/")
    page.wait_for_selector("#token-dialog[open]")
    # Before a token: no data asked for, none on the page, nothing but the dialog to act on.
    assert api_requests(watched, app.url) == []
    assert page.locator("tr[data-id]").count() == 0 and "do-not-show" not in page.content()
    for hidden in ("#view-events", "#view-callbacks", "#view-desk", "#who"):
        assert page.is_hidden(hidden), hidden
    screenshot(page, "token-asked")

    page.fill("#t-token", "not-the-token")
    page.press("#t-token", "Enter")
    page.wait_for_function("document.getElementById('t-msg').textContent.includes('refused')")
    assert page.is_visible("#token-dialog") and page.input_value("#t-token") == ""
    assert api_requests(watched, app.url) == [] and page.locator("tr[data-id]").count() == 0
    assert page.evaluate("sessionStorage.getItem('punctual.token')") is None
    screenshot(page, "token-refused")

    page.fill("#t-token", ADMIN)
    page.press("#t-token", "Enter")
    page.wait_for_selector(f"tr[data-id='{event['id']}']")
    page.wait_for_selector("#live.on")  # the stream, too, runs with the token
    assert page.is_hidden("#token-dialog")
    assert (page.text_content("#who-name"), page.text_content("#who-scope")) == ("admin", "admin")
    assert page.is_visible("#s-submit")  # admin: everything
    # Kept for this tab: a reload asks nothing; another tab is asked again.
    page.reload()
    page.wait_for_selector(f"tr[data-id='{event['id']}']")
    assert page.is_hidden("#token-dialog")
    other = context.new_page()
    other.goto(app.url + "/")
    other.wait_for_selector("#token-dialog[open]")
    assert other.locator("tr[data-id]").count() == 0
    other.close()

    # Sign out: everything goes, the dialog asks; cancelled, only the way back in is shown.
    page.click("#sign-out")
    page.wait_for_selector("#token-dialog[open]")
    assert page.locator("tr[data-id]").count() == 0
    page.click("#t-cancel")
    page.wait_for_selector("#signed-out:not([hidden])")
    assert page.evaluate("sessionStorage.getItem('punctual.token')") is None
    assert page.is_hidden("#view-events") and page.locator("tr[data-id]").count() == 0
    screenshot(page, "signed-out")
    page.click("#sign-in")
    page.fill("#t-token", ADMIN)
    page.press("#t-token", "Enter")
    page.wait_for_selector(f"tr[data-id='{event['id']}']")
    # The refusals above are the only thing Chromium logs (as failed loads); no script error.
    assert all("status of 401" in e for e in watched.errors), watched.errors


def test_a_read_token_sees_events_and_callbacks_but_no_action_at_all(start_app, context, db_url):
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "rita", "read")
    scheduled = as_admin(app, "POST", "/events", json={"callback": "Addition", "scheduled_for": "2031-01-01T00:00:00Z"})
    cancelled = as_admin(app, "POST", "/events", json={"callback": "Addition", "scheduled_for": "2031-01-01T00:00:00Z"})
    as_admin(app, "POST", f"/events/{cancelled['id']}/cancel")
    page = tab(context, app.url + "/", token).page
    page.wait_for_selector(f"tr[data-id='{cancelled['id']}'][data-state='cancelled']")
    assert (page.text_content("#who-name"), page.text_content("#who-scope")) == ("rita", "read")
    assert page.is_hidden("#schedule") and page.is_hidden("#s-submit")
    for event in (scheduled, cancelled):  # neither cancel, retry, reschedule nor delete
        page.click(f"tr[data-id='{event['id']}']")
        page.wait_for_selector("#detail[open]")
        for button in ("#d-cancel", "#d-retry", "#d-delete", "#d-resched-btn"):
            assert page.is_hidden(button), button
        page.keyboard.press("Escape")
        page.wait_for_selector("#detail", state="hidden")
    screenshot(page, "read-only")
    assert page.is_hidden("#nav-desk")
    page.goto(app.url + "/#callbacks")
    page.wait_for_selector("tr[data-name='Addition']")
    assert page.locator("#callbacks-body button").count() == 0 and page.is_hidden("#cb-form")
    page.goto(app.url + "/#desk")  # not for this token: the events page instead
    page.wait_for_selector("body[data-ready='true']")
    assert page.is_visible("#view-events") and page.is_hidden("#view-desk")
    page.set_viewport_size({"width": 390, "height": 844})  # the token's name and sign-out fit a phone too
    assert page.is_visible("#sign-out")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways on a phone with a token ({overflow} px)"
    screenshot(page, "narrow-read-only")


def test_a_write_token_refused_after_its_scope_changed_gets_a_readable_message_and_the_page_adapts(
        start_app, context, db_url):
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "walt", "write")
    page = tab(context, app.url + "/", token).page
    assert page.is_visible("#s-submit")
    assert page.is_hidden("#cb-form") and page.is_hidden("#desk-login")  # write: no callbacks, no desk
    sql(db_url, "UPDATE api_tokens SET scope = 'read' WHERE name = 'walt'")  # while the page is open
    page.select_option("#s-callback", "Addition")
    page.click("#s-submit")
    page.wait_for_selector("#s-result.bad", state="attached")
    assert page.text_content("#s-result") == 'Not scheduled: your token "walt" has the read scope, and this needs write'
    # The page asks again who it is, and shows what the token may do now (and says why the form went).
    page.wait_for_selector("#s-submit", state="hidden")
    assert page.text_content("#who-scope") == "read"
    # The notice comes once the page has read its data again with the new scope (after the form went).
    page.wait_for_selector("#notice:not([hidden])", timeout=10_000)
    assert page.text_content("#notice") == ('Your token "walt" now has the read scope: what it does not allow is '
                                            "no longer shown.")
    assert count_events(db_url) == 0


def test_a_desk_token_takes_and_resolves_an_alert_with_its_lease_token_across_a_reload(start_app, context, db_url):
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "dora", "desk")
    other = as_admin(app, "POST", "/events", json={"callback": "Addition", "scheduled_for": "2031-01-01T00:00:00Z"})
    alert = as_admin(app, "POST", "/events", json={"callback": "Alert", "payload": {
        "alert_id": 7, "message": "Disk 97% full on db-2", "severity": "critical"}})
    watched = tab(context, app.url + "/#desk", token)
    page = watched.page
    claims: list[dict] = []
    page.on("request", lambda r: claims.append(r.post_data_json) if r.url.endswith("/events/claim") else None)
    # The worker is the token's name: no name to type, and none sent (the server takes it from the token).
    assert page.is_hidden("#desk-name") and page.text_content("#desk-as-name") == "dora"
    assert page.is_hidden("#send-alert")  # sending alerts needs write
    page.click("#desk-start")
    page.wait_for_selector("#desk-alert:not([hidden])")
    assert held(page) == alert["id"] and page.text_content("#desk-alert-msg") == "Disk 97% full on db-2"
    assert claims and all("worker" not in body for body in claims)
    kept = page.evaluate("JSON.parse(sessionStorage.getItem('punctual.desk.leases'))")
    assert kept == {str(alert["id"]): sql(db_url, "SELECT lease_token FROM events WHERE id = %s",
                                          (alert["id"],))[0]["lease_token"]}
    screenshot(page, "desk-token")
    # A reload keeps the alert: the tab still has the lease_token (reads never answer it).
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    page.wait_for_selector("#desk-alert:not([hidden])")
    assert held(page) == alert["id"]
    page.click("#desk-resolve")
    page.wait_for_selector("#desk-idle:not([hidden])")
    done = as_admin(app, "GET", f"/events/{alert['id']}")
    assert (done["state"], done["result"]) == ("finished", {"resolved_by": "dora"})
    assert [h["worker"] for h in done["history"] if h["state"] == "running"] == ["dora"]
    assert page.evaluate("JSON.parse(sessionStorage.getItem('punctual.desk.leases'))") == {}
    # No event writes for a desk token.
    page.goto(app.url + "/#events")
    page.wait_for_selector(f"tr[data-id='{other['id']}']")
    assert page.is_hidden("#schedule")
    page.click(f"tr[data-id='{other['id']}']")
    page.wait_for_selector("#detail[open]")
    assert page.is_hidden("#d-cancel") and page.is_hidden("#d-delete")
    assert not watched.errors, watched.errors


def test_the_live_stream_runs_with_a_token_and_a_revoked_token_is_asked_for_again(start_app, context, db_url):
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "lou", "read")
    assert requests.get(app.url + "/stream", timeout=5).status_code == 401  # the stream is not open either
    watched = tab(context, app.url + "/", token)
    page = watched.page
    page.wait_for_selector("#live.on")
    started = time.monotonic()
    event = as_admin(app, "POST", "/events", json={"callback": "Addition", "scheduled_for": "2031-05-01T12:00:00Z"})
    page.wait_for_selector(f"tr[data-id='{event['id']}'][data-state='scheduled']", timeout=1000)
    assert time.monotonic() - started < 1.0
    # Revoked while the page is open: its next request is refused, and the page asks for a token again.
    sql(db_url, "UPDATE api_tokens SET revoked_at = now() WHERE name = 'lou'")
    as_admin(app, "POST", f"/events/{event['id']}/cancel")
    page.wait_for_selector("#token-dialog[open]")
    assert "no longer accepts" in page.text_content("#t-msg")
    page.fill("#t-token", add_token(db_url, "lou2", "read"))
    page.press("#t-token", "Enter")
    page.wait_for_selector(f"tr[data-id='{event['id']}'][data-state='cancelled']")
    assert page.text_content("#who-name") == "lou2"
    page.wait_for_selector("#live.on")
    second = as_admin(app, "POST", "/events", json={"callback": "Addition", "scheduled_for": "2031-05-01T12:00:00Z"})
    page.wait_for_selector(f"tr[data-id='{second['id']}']", timeout=2000)  # live again, with the new token


def test_a_tab_without_shared_worker_runs_its_own_stream_with_the_token(start_app, context, db_url):
    """Chrome on Android has no SharedWorker: the same live-worker.js runs as this tab's own Worker."""
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "andy", "read")
    page = context.new_page()
    page.add_init_script("delete window.SharedWorker;")
    watched = Watched(page)
    page.add_init_script(f"sessionStorage.setItem('punctual.token', {json.dumps(token)});")
    watched.open(app.url + "/")
    page.wait_for_selector("#live.on")
    assert page.evaluate("typeof SharedWorker") == "undefined"
    event = as_admin(app, "POST", "/events", json={"callback": "Addition", "scheduled_for": "2031-05-01T12:00:00Z"})
    page.wait_for_selector(f"tr[data-id='{event['id']}'][data-state='scheduled']", timeout=2000)
    assert not watched.errors, watched.errors


# -- what the page shows follows the database: no gap at load, counts that catch up -----------------

def pump_until(page, predicate, timeout: float, message: str):
    """Wait for a Python-side condition while Playwright delivers the page's events (route handlers run)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        page.wait_for_timeout(20)


def test_an_event_created_while_the_page_reads_its_list_is_shown_without_a_reload(start_app, context):
    """The page's list is read at one moment and its live stream starts at another: a change committed in
    between must still reach the table, for the first tab (its own new stream) and for a second one
    (joining the stream another tab opened)."""
    app = start_app(**APP_ENV)
    far = {"callback": "Addition", "payload": {"x": 1, "y": 1}, "scheduled_for": "2031-05-01T12:00:00Z"}
    before = requests.post(app.url + "/events", json=far).json()
    for name in ("first", "second"):
        page = context.new_page()
        watched = Watched(page)
        held: list = []  # (route, response) of the page's first list request

        def hold_first_listing(route) -> None:
            if held:
                route.fallback()
                return
            held.append((route, route.fetch()))  # the server has read the list: the new event is not in it

        page.route(lambda url: "/events?" in url, hold_first_listing)
        page.goto(app.url + "/")
        pump_until(page, lambda: held, 10, f"the {name} tab's list request")
        created = requests.post(app.url + "/events", json=far).json()
        route, response = held[0]
        route.fulfill(response=response)
        # The list has landed (the older event is shown) and the new event is there too, and stays.
        page.wait_for_selector(f"tr[data-id='{before['id']}']", timeout=5000)
        page.wait_for_selector(f"tr[data-id='{created['id']}'][data-state='scheduled']", timeout=5000)
        assert page.locator(f"tr[data-id='{before['id']}']").count() == 1
        assert not watched.errors, watched.errors
        before = created


def shown_counts(page) -> dict[str, int]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#counts [data-state]')]
        .map((chip) => [chip.dataset.state, Number(chip.querySelector('.chip-n').textContent.replace(/\\D/g, ''))]))""")


def stored_counts(db_url: str) -> dict[str, int]:
    counts = {state: 0 for state in ("scheduled", "running", "finished", "failed", "cancelled")}
    counts.update({row["state"]: row["n"] for row in sql(db_url, "SELECT state, count(*) AS n FROM events GROUP BY state")})
    counts["all"] = sum(counts.values())
    return counts


# Counts how many GET /stats the page has waiting for an answer at once (the most ever), from the page's side.
COUNT_STATS_READS = """(() => {
  const fetch = window.fetch;
  window.__statsOpen = 0; window.__statsMostOpen = 0;
  window.fetch = function (input, init) {
    if (!String(input).endsWith("/stats")) return fetch.call(this, input, init);
    window.__statsMostOpen = Math.max(window.__statsMostOpen, ++window.__statsOpen);
    return fetch.call(this, input, init).finally(() => { window.__statsOpen -= 1; });
  };
})();"""


def test_the_counts_follow_a_burst_that_runs_while_they_are_read_one_read_at_a_time(start_app, context, db_url):
    """The counts are read (GET /stats) while a burst changes the table: the answer on its way is already
    old. A newer read must wait for it (not overtake it, or the old answer, shown last, stays until the
    next change), and what is shown in the end equals the database, without a reload."""
    app = start_app(**APP_ENV)
    page = context.new_page()
    watched = Watched(page)
    page.add_init_script(COUNT_STATS_READS)
    page.clock.install()  # time runs, and the test can make the page's timers (the 1 s throttle) fire now
    held: list = []  # (route, response) of the page's first /stats request

    def hold_first_stats(route) -> None:
        if held:
            route.fallback()
        else:
            held.append((route, route.fetch()))  # read now: the burst below is not in it

    page.route(lambda url: url.endswith("/stats"), hold_first_stats)
    page.goto(app.url + "/")
    pump_until(page, lambda: held, 10, "the page's first /stats request")
    page.wait_for_selector("#live.on")
    due = [{"callback": "Addition", "payload": {"x": n, "y": 1}} for n in range(150)]
    later = [{"callback": "Addition", "payload": {"x": n, "y": 2}, "scheduled_for": "2031-05-01T12:00:00Z"}
             for n in range(40)]
    waiting: list[int] = []
    for chunk in (due[:50], later[:20], due[50:100], later[20:], due[100:]):
        answer = requests.post(app.url + "/events/batch", json={"events": chunk})
        assert answer.status_code == 201
        waiting += [e["id"] for e in answer.json()["events"] if e["scheduled_for"].startswith("2031")]
    for event_id in waiting[:15]:
        assert requests.post(f"{app.url}/events/{event_id}/cancel").ok
    wait_for(lambda: stored_counts(db_url)["finished"] == 150, 20, message="the burst to run")
    expected = stored_counts(db_url)
    assert expected["cancelled"] == 15 and expected["scheduled"] == 25
    page.wait_for_selector("#events-body tr")  # the page has been told of the burst ...
    page.clock.run_for(2000)  # ... and its throttled reads of the counts are due: the old answer is still out
    assert page.evaluate("window.__statsMostOpen") == 1, "a second read of the counts overtook the first"
    route, response = held[0]
    route.fulfill(response=response)
    deadline = time.monotonic() + 5
    while shown_counts(page) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert shown_counts(page) == expected
    assert not watched.errors, watched.errors


def test_the_api_docs_page_lists_every_operation_with_the_tabs_token_and_tries_one_out(start_app, strict_context,
                                                                                       db_url):
    """/docs under its own policy (strict_context): reached from the web page's header, it reads /openapi.json
    with the token the tab already holds, lists the operations, and "Try it out" sends the token too."""
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "rita", "read")
    watched = tab(strict_context, app.url + "/", token)
    page = watched.page
    page.wait_for_selector("#who:not([hidden])")
    page.click("a[href='/docs']")  # the header's link, in this tab: same sessionStorage, same token
    page.wait_for_selector("body[data-state='reference'][data-ready='true']")
    page.wait_for_selector(".opblock")
    listed = set(page.locator(".opblock-summary-path").all_inner_texts())
    assert {"/events", "/events/{event_id}", "/callbacks", "/whoami", "/health"} <= {p.strip() for p in listed}
    assert page.text_content("#who-name") == "rita" and page.text_content("#who-scope") == "read"

    whoami = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/whoami"))
    whoami.locator(".opblock-summary").click()
    whoami.locator(".try-out__btn").click()
    whoami.locator(".execute").click()
    status = whoami.locator(".live-responses-table .response .response-col_status")
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert '"name": "rita"' in whoami.locator(".live-responses-table .response .microlight").first.inner_text()
    screenshot(page, "api-docs")

    # Everything came from this server; the policy refused nothing (a violation is a console error).
    assert all(r.split(" ", 1)[1].startswith(app.url) for r in watched.requests), watched.requests
    assert not watched.errors, watched.errors

    # A tab without a token is asked for one on the page, and a refused one is said so.
    other = Watched(strict_context.new_page())
    other.page.goto(app.url + "/docs")
    other.page.wait_for_selector("body[data-state='token']")
    assert other.page.locator(".opblock").count() == 0
    other.page.fill("#token", "not-the-token")
    other.page.press("#token", "Enter")
    other.page.wait_for_selector("#token-error:not([hidden])")
    other.page.fill("#token", token)
    other.page.press("#token", "Enter")
    other.page.wait_for_selector(".opblock")
    assert all("status of 401" in e for e in other.errors), other.errors


# -- schedules (issue 12 point 6) --------------------------------------------------------------------

def instants(values) -> list[datetime]:
    return [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in values]


def previewed(page) -> list[str]:
    return page.eval_on_selector_all("#sc-runs li", "items => items.map((li) => li.dataset.utc)")


def wait_preview(page, changed_from: list[str] | None = None, timeout: float = 5000) -> list[str]:
    """Five runs shown and settled (no request pending), and other than `changed_from` when given."""
    page.wait_for_function("""(before) => {
        const runs = [...document.querySelectorAll('#sc-runs li')].map((li) => li.dataset.utc);
        return runs.length === 5 && !document.getElementById('sc-preview').classList.contains('stale')
          && JSON.stringify(runs) !== JSON.stringify(before);
    }""", arg=changed_from, timeout=timeout)
    return previewed(page)


def top_screenshot(page, name: str) -> None:
    """A full-page screenshot from the top: the sticky header is drawn where it belongs."""
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, name)


def test_a_schedule_made_from_the_form_previews_its_next_runs_while_typing_and_lists_them(start_app, context):
    app = start_app(**APP_ENV)
    watched = tab(context, app.url + "/#schedules")
    page = watched.page
    page.wait_for_selector("#view-schedules:not([hidden])")
    assert page.input_value("#sc-timezone") == ZONE  # the browser's zone by default
    assert page.eval_on_selector("#sc-zones", "list => list.options.length") > 300  # every zone the browser knows
    page.fill("#sc-name", "weekly report")
    page.select_option("#sc-callback", "Addition")
    page.fill("#sc-payload", '{"x": 1, "y": ')
    assert "Not valid JSON" in page.text_content("#sc-payload-msg")  # checked as you type
    page.fill("#sc-payload", '{"x": 1, "y": 2}')
    page.fill("#sc-timezone", "Europe/Paris")
    asked = lambda: [r for r in watched.requests if "/schedules/preview?" in r]  # noqa: E731
    page.type("#sc-cron", "30 2 * * *", delay=40)
    first = wait_preview(page)
    # Debounced: one request for the rule as finally typed, not one per key.
    assert 1 <= len(asked()) <= 3, asked()
    paris = ZoneInfo("Europe/Paris")
    assert all(f"{w.astimezone(paris):%H:%M}" in ("02:30", "03:00") for w in instants(first))  # 03:00: the gap
    assert page.text_content("#sc-desc") == "At 02:30 AM (Europe/Paris)"
    # Each run in the person's zone (New York here), with UTC under it and the schedule's zone's time.
    item = page.locator("#sc-runs li").first
    when = instants(first)[:1][0]
    assert item.locator(".utc").text_content() == f"{when:%Y-%m-%d %H:%M:%S} UTC"
    assert item.locator("time").get_attribute("title").endswith(" UTC")
    local = when.astimezone(ZoneInfo(ZONE))
    assert f"{local:%H:%M:%S}" in item.locator("time").text_content()
    assert "in Europe/Paris" in item.locator(".there").text_content()
    # Typing on changes it.
    page.fill("#sc-cron", "0 9 * * 1")
    runs = wait_preview(page, first)
    assert all(f"{w.astimezone(paris):%a %H:%M}" == "Mon 09:00" for w in instants(runs))
    assert page.text_content("#sc-desc") == "At 09:00 AM, only on Monday (Europe/Paris)"
    top_screenshot(page, "schedule-form-preview")

    page.click("#sc-submit")
    page.wait_for_selector("#sc-result.ok")
    row = page.locator("tr[data-name='weekly report']")
    row.wait_for()
    stored = requests.get(app.url + "/schedules").json()["schedules"][0]
    # What the form previewed is what the server made: the same five instants.
    assert instants(runs) == instants(stored["next_runs"])
    assert (stored["cron"], stored["timezone"], stored["payload"]) == ("0 9 * * 1", "Europe/Paris", {"x": 1, "y": 2})
    assert row.locator("td.rule .desc").text_content() == "At 09:00 AM, only on Monday (Europe/Paris)"
    next_run = row.locator("td.next time")
    assert instants([next_run.get_attribute("datetime")]) == instants(stored["next_runs"][:1])
    assert next_run.get_attribute("title").endswith(" UTC")  # UTC on hover, as elsewhere
    assert row.locator(".badge").text_content() == "active"
    assert page.input_value("#sc-name") == "" and page.text_content("#sc-runs") == ""  # ready for the next one
    top_screenshot(page, "schedules")

    # Edit: the form is filled from the schedule; an interval replaces the cron.
    page.click("button[aria-label='Edit weekly report']")
    assert page.input_value("#sc-cron") == "0 9 * * 1" and page.input_value("#sc-timezone") == "Europe/Paris"
    assert page.text_content("#sc-submit") == "Save"
    wait_preview(page)
    page.check("#sc-rule-every")
    page.fill("#sc-every", "2")
    page.select_option("#sc-every-unit", "3600")
    page.select_option("#sc-catchup", "all")
    page.fill("#sc-limit", "7")
    page.wait_for_function("document.getElementById('sc-desc').textContent === 'Every 2 hours'")
    page.click("#sc-submit")
    page.wait_for_selector("tr[data-name='weekly report'] td.rule .desc >> text=Every 2 hours")
    edited = requests.get(f"{app.url}/schedules/{stored['id']}").json()
    assert (edited["cron"], edited["every"], edited["catch_up"], edited["catch_up_limit"]) == (None, 7200, "all", 7)
    assert not watched.errors and not watched.dialogs, (watched.errors, watched.dialogs)


def test_a_bad_cron_shows_the_servers_reason_as_typed_and_when_saved_and_nothing_is_made(start_app, context, db_url):
    app = start_app(**APP_ENV)
    watched = tab(context, app.url + "/#schedules")
    page = watched.page
    page.fill("#sc-name", "broken")
    page.fill("#sc-cron", "61 * * * *")
    page.wait_for_selector("#sc-preview-msg.bad")
    reason = requests.get(app.url + "/schedules/preview", params={"cron": "61 * * * *", "timezone": ZONE})
    assert reason.status_code == 422
    assert page.text_content("#sc-preview-msg") == reason.json()["error"]["message"]
    assert page.get_attribute("#sc-cron", "aria-invalid") == "true"
    assert page.locator("#sc-runs li").count() == 0
    page.click("#sc-submit")
    page.wait_for_selector("#sc-result.bad")
    refused = requests.post(app.url + "/schedules", json={"name": "broken", "callback": "Addition",
                                                          "cron": "61 * * * *", "timezone": ZONE})
    assert page.text_content("#sc-result") == "Not saved: " + refused.json()["error"]["message"]
    top_screenshot(page, "schedule-bad-cron")
    # An unknown zone, the same way; fixed, the preview comes back.
    page.fill("#sc-cron", "0 9 * * *")
    page.fill("#sc-timezone", "Mars/Olympus")
    page.wait_for_selector("#sc-preview-msg.bad >> text=unknown time zone")
    assert page.get_attribute("#sc-timezone", "aria-invalid") == "true"
    page.fill("#sc-timezone", "Asia/Kolkata")
    wait_preview(page)
    assert page.get_attribute("#sc-timezone", "aria-invalid") is None
    assert sql(db_url, "SELECT count(*) AS n FROM schedules") == [{"n": 0}]
    assert count_events(db_url) == 0
    assert all("status of 422" in e for e in watched.errors), watched.errors  # the refusals, logged as loads


def test_pause_resume_and_delete_from_the_list_and_the_events_of_past_occurrences_stay(start_app, context, db_url):
    app = start_app(**APP_ENV)
    made = requests.post(app.url + "/schedules", json={"name": "hourly", "callback": "Addition", "every": 3600})
    assert made.status_code == 201, made.text
    schedule = made.json()
    watched = tab(context, app.url + "/#schedules")
    page = watched.page
    row = f"tr[data-schedule-id='{schedule['id']}']"
    page.wait_for_selector(f"{row}[data-paused='false']")
    page.click("button[aria-label='Pause hourly']")
    page.wait_for_selector(f"{row}[data-paused='true']")
    assert requests.get(f"{app.url}/schedules/{schedule['id']}").json()["paused"] is True
    assert page.text_content(f"{row} td.next") == "— paused"
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Resume hourly"  # focus kept
    top_screenshot(page, "schedule-paused")
    page.click("button[aria-label='Resume hourly']")
    page.wait_for_selector(f"{row}[data-paused='false']")
    assert requests.get(f"{app.url}/schedules/{schedule['id']}").json()["paused"] is False
    assert page.locator(f"{row} td.next time").count() == 1

    # Delete asks first, and says the past stays; "Keep it" keeps it.
    sql(db_url, """INSERT INTO events (callback_id, state, finished_at, schedule_id, source)
                   SELECT id, 'finished', now(), %s, 'schedule' FROM callbacks WHERE name = 'Addition'""",
        (schedule["id"],))
    page.click("button[aria-label='Delete hourly']")
    page.wait_for_selector("#sc-confirm[open]")
    assert "The events of its past occurrences stay" in " ".join(page.text_content("#sc-confirm").split())
    assert page.text_content("#scc-name") == "hourly"
    screenshot(page, "schedule-delete", full_page=False)  # the dialog as seen, not a stretched backdrop
    page.click("#scc-keep")
    page.wait_for_selector("#sc-confirm", state="hidden")
    assert requests.get(f"{app.url}/schedules/{schedule['id']}").status_code == 200
    page.click("button[aria-label='Delete hourly']")
    page.click("#scc-delete")
    page.wait_for_selector(row, state="detached")
    assert "past occurrences stay" in " ".join(page.text_content("#schedules-msg").split())
    assert requests.get(f"{app.url}/schedules/{schedule['id']}").status_code == 404
    # The past occurrence's event stays; the pending one (made again at the resume) was cancelled.
    states = [r["state"] for r in sql(db_url, "SELECT state FROM events ORDER BY id")]
    assert states.count("finished") == 1 and "scheduled" not in states, states
    assert not watched.errors and not watched.dialogs, (watched.errors, watched.dialogs)


def test_an_occurrences_event_links_to_its_schedule(start_app, context):
    app = start_app(**APP_ENV)
    schedule = requests.post(app.url + "/schedules", json={"name": "daily 9", "callback": "Addition",
                                                           "cron": "0 9 * * *", "timezone": "Europe/Paris"}).json()
    other = requests.post(app.url + "/events", json={"callback": "Addition",
                                                     "scheduled_for": "2031-01-01T00:00:00Z"}).json()
    event = requests.get(app.url + "/events", params={"state": "scheduled"}).json()["events"]
    occurrence = next(e for e in event if e["schedule_id"] == schedule["id"])
    watched = tab(context, app.url + "/")
    page = watched.page
    row = f"tr[data-id='{occurrence['id']}']"
    page.wait_for_selector(row)
    # In the row: a small link to the schedule; an ordinary event has none.
    assert page.get_attribute(f"{row} a.from-schedule", "href") == f"#schedules?id={schedule['id']}"
    assert page.locator(f"tr[data-id='{other['id']}'] a.from-schedule").count() == 0
    # In the detail: the schedule by name.
    page.click(f"{row} td.state")
    page.wait_for_selector("#detail[open]")
    link = page.locator("#d-facts a[data-schedule]")
    link.wait_for()
    page.wait_for_function("document.querySelector('#d-facts a[data-schedule]').textContent === 'daily 9'")
    screenshot(page, "event-schedule-link")
    link.click()
    page.wait_for_selector("#detail", state="hidden")
    page.wait_for_selector(f"#view-schedules:not([hidden]) tr[data-schedule-id='{schedule['id']}'].selected")
    assert page.evaluate("location.hash") == f"#schedules?id={schedule['id']}"
    assert page.get_attribute("nav a[data-view='schedules']", "aria-current") == "page"
    # And from the row's own link, without opening the detail.
    page.goto(app.url + "/#events")
    page.wait_for_selector(row)
    page.click(f"{row} a.from-schedule")
    page.wait_for_selector(f"tr[data-schedule-id='{schedule['id']}'].selected")
    assert not page.is_visible("#detail")
    assert not watched.errors, watched.errors


def test_a_read_token_sees_the_schedules_but_cannot_change_them(start_app, context, db_url):
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "rita", "read")
    schedule = as_admin(app, "POST", "/schedules", json={"name": "nightly", "callback": "Addition",
                                                         "cron": "30 2 * * *", "timezone": "Europe/Paris"})
    watched = tab(context, app.url + "/#schedules", token)
    page = watched.page
    row = page.locator(f"tr[data-schedule-id='{schedule['id']}']")
    row.wait_for()
    assert row.locator("td.rule .desc").text_content() == "At 02:30 AM (Europe/Paris)"
    assert row.locator("td.next time").count() == 1
    assert page.locator("#schedules-body button").count() == 0  # no edit, pause, resume or delete
    assert page.is_hidden("#sc-form") and page.is_hidden("#sc-submit")
    assert not [r for r in watched.requests if "/schedules/preview" in r]
    top_screenshot(page, "schedules-read-only")
    assert not watched.errors, watched.errors


# -- health and lateness (issue 14, point 4) --------------------------------------------------------

def test_the_page_warns_when_vacuum_is_held_back_and_charts_the_lateness_of_the_last_hour(
        start_app, strict_context, db_url):
    """Under the page's own policy (strict_context): the scale's labels are placed without inline styles."""
    app = start_app(**APP_ENV, VACUUM_HOLDBACK_WARN_SECONDS="1")
    # Attempts that started 4 and 2 minutes ago, late by known amounts, and a few the engine runs now.
    sql(db_url, """INSERT INTO events (callback_id, scheduled_for, started_at, finished_at, state, attempts)
                   SELECT 1, m.at - make_interval(secs => v.late), m.at, m.at, 'finished', 1
                   FROM unnest(ARRAY[0.002, 0.003, 0.004, 2.5]) AS v(late),
                        (VALUES (4), (2)) AS k(ago),
                        LATERAL (SELECT date_trunc('minute', now()) - make_interval(mins => k.ago)
                                        + interval '30 seconds' AS at) m""")
    for _ in range(5):
        assert requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1}}).ok
    wait_for(lambda: sql(db_url, "SELECT count(*) AS n FROM events WHERE state = 'finished'")[0]["n"] == 13, 10)
    holder = psycopg2.connect(db_url, application_name="forgotten-report")
    try:
        holder.set_session(isolation_level="REPEATABLE READ")  # keeps its snapshot: vacuum is held back
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM events")
        # The server reads the statistics at most every 5 s: wait for a reading that has seen it.
        wait_for(lambda: any("holds vacuum back" in r for r in requests.get(app.url + "/health", timeout=5)
                             .json()["reasons"]), 10, 0.2, "/health to see the transaction held open")
        watched = tab(strict_context, app.url + "/")
        page = watched.page
        page.wait_for_selector("#health-warning:not([hidden])")
        assert "needs attention" in page.text_content("#health-title")
        reasons = page.locator("#health-reasons li").all_text_contents()
        assert any("holds vacuum back" in r and "forgotten-report" in r for r in reasons), reasons
        autovacuum_on = sql(db_url, "SHOW autovacuum")[0]["autovacuum"] == "on"
        assert any("autovacuum is off" in r for r in reasons) is not autovacuum_on, reasons
        # The lateness chart, beside the outcomes chart: a p50 and a p99 bar for each minute with attempts.
        page.wait_for_selector("#lateness svg rect.p50")
        assert page.locator("#lateness rect.p50").count() in (3, 4)  # 4 and 2 minutes ago, now (and maybe the
        assert page.locator("#lateness rect.p99").count() == page.locator("#lateness rect.p50").count()  # minute
        titles = page.locator("#lateness g title").all_text_contents()  # before, if the engine's run crossed it)
        assert sum("4 started; p50 3.5 ms, p99 2.43 s" in t for t in titles) == 2, titles
        assert "worst p99: 2.43 s" in page.text_content("#lateness .chart-axis")
        assert page.locator("#lateness .chart-y span").count() >= 2  # 10 ms, 100 ms, (1 s)
        screenshot(page, "health-warning-and-lateness", full_page=False)
        outcomes, late = (page.locator(".charts > section").nth(i).bounding_box() for i in (0, 1))
        assert abs(outcomes["y"] - late["y"]) < 1 and late["x"] > outcomes["x"] + outcomes["width"]  # side by side
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: one above the other, nothing wider
        outcomes, late = (page.locator(".charts > section").nth(i).bounding_box() for i in (0, 1))
        assert late["y"] > outcomes["y"] + outcomes["height"] - 1
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "health-warning-and-lateness-narrow")
    finally:
        holder.close()
    # Let go: once the server's reading has seen it, a reload says no more than the server does.
    wait_for(lambda: not any("holds vacuum back" in r for r in requests.get(app.url + "/health", timeout=5)
                             .json()["reasons"]), 10, 0.2, "/health to see the transaction gone")
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    if autovacuum_on:
        page.wait_for_selector("#lateness svg")  # read after /health: the page has its answer
        time.sleep(0.5)
        assert page.is_hidden("#health-warning")
    else:
        page.wait_for_selector("#health-warning:not([hidden])")
        assert page.locator("#health-reasons li").all_text_contents() == \
            requests.get(app.url + "/health", timeout=5).json()["reasons"]
    assert not watched.errors and not watched.dialogs, watched.errors


# -- workflows (issue 13, point 5) -------------------------------------------------------------------

def trip_callbacks(app) -> None:
    """The python callbacks examples/trip.py calls (as tests/test_workflows.py::_trip_callbacks makes them)."""
    from examples.trip import CALLBACKS
    for name in CALLBACKS:
        made = requests.post(app.url + "/callbacks", json={"name": name, "kind": "python", "target": f"trip.{name}"},
                             timeout=10)
        assert made.status_code == 201, made.text


def start_workflow(app, name: str, value=None, workflow_id: str | None = None) -> dict:
    body = {"workflow": name, "input": value, **({"id": workflow_id} if workflow_id else {})}
    made = requests.post(app.url + "/workflows", json=body, timeout=10)
    assert made.status_code == 201, made.text
    return made.json()


def read_workflow(app, workflow_id: str, headers: dict | None = None) -> dict:
    answer = requests.get(f"{app.url}/workflows/{workflow_id}", headers=headers or {}, timeout=10)
    assert answer.ok, answer.text
    return answer.json()


def wait_workflow(app, workflow_id: str, until, message: str, headers: dict | None = None) -> dict:
    """The workflow once `until(workflow)` holds (20 s at most)."""
    def read():
        workflow = read_workflow(app, workflow_id, headers)
        return workflow if until(workflow) else None
    return wait_for(read, 20, 0.1, message)


def wf_rows(page) -> list[str]:
    """The list's workflow ids as drawn, read at once (a refresh may redraw it between two reads)."""
    return page.eval_on_selector_all("#wf-body tr", "rows => rows.map((row) => row.dataset.wfId)")


def wf_steps(page) -> list[tuple[str, str, str]]:
    """The timeline as drawn: (step, kind, state) of each item, read at once."""
    return [tuple(step) for step in page.eval_on_selector_all(
        "#wf-steps li", "items => items.map((li) => [li.dataset.step, li.dataset.kind, li.dataset.state])")]


def same_instant(shown: str | None, stored: str) -> bool:
    """A <time datetime> (milliseconds) and the API's instant (microseconds) are the same moment."""
    return shown is not None and abs(instants([shown])[0] - instants([stored])[0]) < timedelta(milliseconds=1)


def test_the_workflows_list_filters_by_name_and_state_and_a_finished_one_shows_its_steps_as_a_timeline(
        start_app, strict_context):
    """Under the page's own policy: nothing the Workflows view does is blocked (no console errors)."""
    app = start_app(**APP_ENV)
    trip_callbacks(app)
    start_workflow(app, "trip", {"trip": "t1", "city": "Lisbon"}, "trip-t1")
    start_workflow(app, "trip", {"trip": "t2", "city": "Oslo", "seat": "none left"}, "trip-t2")
    start_workflow(app, "tour", {"x": 1}, "tour-1")
    start_workflow(app, "hold", {}, "hold-1")
    booked = wait_workflow(app, "trip-t1", lambda w: w["state"] == "completed", "trip-t1 to complete")
    failed = wait_workflow(app, "trip-t2", lambda w: w["state"] == "failed", "trip-t2 to fail and compensate")
    wait_workflow(app, "tour-1", lambda w: (w["waiting_on"] or "").startswith("step 5: signal 'go'"), "tour-1's wait")
    assert requests.post(app.url + "/workflows/tour-1/signals/go", json={"value": "hi"}, timeout=10).status_code == 201
    tour = wait_workflow(app, "tour-1", lambda w: w["state"] == "completed", "tour-1 to complete")
    hold = wait_workflow(app, "hold-1", lambda w: (w["waiting_on"] or "").startswith("step 2: sleep until"),
                         "hold-1's sleep")

    watched = tab(strict_context, app.url + "/#workflows")
    page = watched.page
    page.wait_for_selector("#wf-body tr[data-wf-id='hold-1'][data-state='waiting']")
    assert wf_rows(page) == ["hold-1", "tour-1", "trip-t2", "trip-t1"]  # newest first
    row = page.locator("tr[data-wf-id='trip-t2']")
    assert [row.locator(f"td:nth-child({n})").text_content() for n in (2, 3, 4)] == ["trip", "failed", "—"]
    assert same_instant(row.locator("td:nth-child(5) time").get_attribute("datetime"), failed["created_at"])
    assert same_instant(row.locator("td:nth-child(6) time").get_attribute("datetime"), failed["updated_at"])
    # What a waiting one waits on, in the API's words with its instant in the person's zone (UTC on hover).
    waits = page.locator("tr[data-wf-id='hold-1'] td.wf-on")
    wake = hold["steps"][1]["wake_at"]
    assert waits.text_content().startswith("step 2: sleep until ")
    assert same_instant(waits.locator("time").get_attribute("datetime"), wake)
    assert f"{instants([wake])[0].astimezone(ZoneInfo(ZONE)):%H:%M:%S}" in waits.locator("time").text_content()
    assert waits.locator("time").get_attribute("title").endswith(" UTC")

    page.select_option("#wf-f-state", "failed")
    wait_for(lambda: wf_rows(page) == ["trip-t2"], 5, 0.05, "the failed one only")
    page.select_option("#wf-f-state", "")
    page.fill("#wf-f-name", "trip")
    wait_for(lambda: wf_rows(page) == ["trip-t2", "trip-t1"], 5, 0.05, "the trips only")
    page.select_option("#wf-f-state", "completed")
    wait_for(lambda: wf_rows(page) == ["trip-t1"], 5, 0.05, "the completed trip only")
    assert f"GET {app.url}/workflows?limit=50&workflow=trip&state=completed" in watched.requests
    page.fill("#wf-f-name", "nothing-by-this-name")
    page.wait_for_selector("#wf-empty:not([hidden])")
    page.click("#wf-filters button[type=reset]")
    wait_for(lambda: len(wf_rows(page)) == 4, 5, 0.05, "every workflow again")
    top_screenshot(page, "workflows")

    # A completed trip: its three calls, each with its event and result, and the workflow's result.
    page.click("tr[data-wf-id='trip-t1']")
    page.wait_for_selector("#wf-detail[data-id='trip-t1'][data-state='completed'] #wf-steps li[data-step='3']")
    assert page.evaluate("location.hash") == "#workflows?id=trip-t1"
    assert page.evaluate("document.activeElement.id") == "wf-title"  # the keyboard goes on from the title
    assert wf_steps(page) == [("1", "call", "completed"), ("2", "call", "completed"), ("3", "call", "completed")]
    assert page.locator("#wf-steps .step-name").all_text_contents() == ["reserve_car", "reserve_hotel", "reserve_flight"]
    for step in booked["steps"]:
        item = page.locator(f"#wf-steps li[data-step='{step['step']}']")
        assert item.locator(".step-event a").get_attribute("href") == f"#events?id={step['event_id']}"
        assert json.loads(item.locator(".step-out code").text_content()) == step["result"]
        assert same_instant(item.locator(".step-when time").first.get_attribute("datetime"), step["created_at"])
        assert same_instant(item.locator(".step-when time").nth(1).get_attribute("datetime"), step["finished_at"])
    assert json.loads(page.text_content("#wf-result")) == booked["result"]
    assert page.text_content("#wf-now").startswith("Completed ")
    assert page.is_hidden("#wf-actions")  # it ended: nothing to signal or cancel
    top_screenshot(page, "workflow-trip-completed")

    # A failed trip: the failed step with its reason, then the compensations, newest first, marked as such.
    page.click("#wf-back")
    page.wait_for_selector("#wf-list:not([hidden]) tr[data-wf-id='trip-t2']")
    page.press("tr[data-wf-id='trip-t2']", "Enter")  # the keyboard opens one too
    page.wait_for_selector("#wf-detail[data-id='trip-t2'][data-state='failed'] #wf-steps li[data-step='5']")
    assert [s[2] for s in wf_steps(page)] == ["completed", "completed", "failed", "completed", "completed"]
    assert page.locator("#wf-steps li.compensation .step-name").all_text_contents() == ["cancel_hotel", "cancel_car"]
    assert page.locator("#wf-steps li.compensation .comp").count() == 2
    assert page.text_content("#wf-steps li[data-step='3'] .error") == "no seat to Oslo"
    assert page.text_content("#wf-error") == failed["error"]
    assert page.text_content("#wf-steps-info") == "5 steps, 2 compensations"
    top_screenshot(page, "workflow-trip-failed")
    # A step's event opens over the workflow, and its detail links back to it.
    flight = failed["steps"][2]
    page.click("#wf-steps li[data-step='3'] .step-event a")
    page.wait_for_selector(f"#detail[open] #d-title >> text=Event {flight['event_id']}")
    assert "workflow:trip-t2:3" in page.text_content("#d-facts")
    link = page.locator("#d-facts a[data-workflow='trip-t2']")
    assert link.text_content() == "trip-t2, step 3"
    screenshot(page, "workflow-step-event", full_page=False)
    link.click()
    page.wait_for_selector("#detail", state="hidden")
    assert page.is_visible("#wf-detail[data-id='trip-t2']")
    # From the events page too: an event of a workflow links to it.
    page.goto(app.url + "/#events")
    page.click(f"tr[data-id='{booked['steps'][0]['event_id']}']")
    page.click("#d-facts a[data-workflow='trip-t1']")
    page.wait_for_selector("#view-workflows:not([hidden]) #wf-detail[data-id='trip-t1'][data-state='completed']")
    assert page.get_attribute("nav a[data-view='workflows']", "aria-current") == "page"

    # Every kind of step: calls, a durable timer (until when), a signal (what it received), a recorded time.
    page.goto(app.url + "/#workflows?id=tour-1")
    page.wait_for_selector("#wf-detail[data-id='tour-1'][data-state='completed'] #wf-steps li[data-step='6']")
    assert [s[1] for s in wf_steps(page)] == ["call", "call", "call", "sleep", "signal", "now"]
    sleep = page.locator("#wf-steps li[data-step='4'] .until")
    assert sleep.text_content().startswith(" · slept until ")
    assert same_instant(sleep.locator("time").get_attribute("datetime"), tour["steps"][3]["wake_at"])
    assert page.text_content("#wf-steps li[data-step='5'] .step-out") == 'received "hi"'
    assert same_instant(page.get_attribute("#wf-steps li[data-step='6'] .step-out time", "datetime"),
                        tour["steps"][5]["result"])
    assert page.text_content("#wf-signals li .used") == "taken by step 5"
    top_screenshot(page, "workflow-tour-timeline")
    assert not watched.errors and not watched.dialogs, (watched.errors, watched.dialogs)


def test_a_waiting_workflow_is_signalled_from_the_page_and_completes_without_a_reload(start_app, strict_context):
    app = start_app(**APP_ENV)
    workflow_id = start_workflow(app, "changing")["id"]
    watched = tab(strict_context, f"{app.url}/#workflows?id={workflow_id}")
    page = watched.page
    page.wait_for_selector("#wf-steps li[data-step='2'][data-kind='signal'][data-state='waiting']")
    page.evaluate("window.__sameDocument = true")
    waiting = read_workflow(app, workflow_id)
    now = page.locator("#wf-now")
    assert now.locator(".now-main").text_content() == "Waiting on step 2: signal 'continue'"
    assert now.locator(".now-when").text_content().startswith("since ")  # since the wait began
    assert same_instant(now.locator(".now-when time").get_attribute("datetime"), waiting["steps"][1]["created_at"])
    assert page.input_value("#wf-sig-name") == "continue"  # what it waits for

    # Not JSON: said as it is typed, and nothing is sent.
    page.fill("#wf-sig-value", '{"ok": tru')
    assert "Not valid JSON" in page.text_content("#wf-sig-value-msg")
    page.click("#wf-sig-send")
    page.wait_for_selector("#wf-msg.bad")
    assert page.text_content("#wf-msg") == "Nothing was sent: fix the value first."
    # JSON the server refuses (a NUL, which PostgreSQL cannot store): its reason, in its words.
    page.fill("#wf-sig-value", '"a\\u0000b"')
    assert page.text_content("#wf-sig-value-msg") == "Valid JSON."
    page.click("#wf-sig-send")
    page.wait_for_selector("#wf-msg.bad >> text=Not sent:")
    refused = requests.post(f"{app.url}/workflows/{workflow_id}/signals/continue", json={"value": "a\u0000b"},
                            timeout=10)
    assert refused.status_code == 422
    assert page.text_content("#wf-msg") == "Not sent: " + refused.json()["error"]["message"]
    stored = read_workflow(app, workflow_id)
    assert (stored["state"], stored["signals"]) == ("waiting", [])
    screenshot(page, "workflow-signal-refused")

    page.fill("#wf-sig-value", '{"ok": true}')
    page.click("#wf-sig-send")
    page.wait_for_selector("#wf-msg.ok")
    assert page.text_content("#wf-msg") == 'Signal "continue" sent.'
    # It goes on by itself: the wait takes the signal, the last step runs, it completes; the page follows.
    page.wait_for_selector("#wf-detail[data-state='completed'] #wf-steps li[data-step='3'][data-state='completed']",
                           timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    stored = read_workflow(app, workflow_id)
    assert [(g["name"], g["value"], g["step"]) for g in stored["signals"]] == [("continue", {"ok": True}, 2)]
    assert page.text_content("#wf-steps li[data-step='2'] .step-out") == 'received {"ok":true}'
    assert page.text_content("#wf-signals li .used") == "taken by step 2"
    assert json.loads(page.text_content("#wf-result")) == "done"
    # Nothing is left to signal or cancel; what the person did stays in sight.
    assert page.is_hidden("#wf-signal") and page.is_hidden("#wf-cancel") and page.is_visible("#wf-ended")
    assert page.text_content("#wf-msg") == 'Signal "continue" sent.'
    top_screenshot(page, "workflow-signalled")
    # The refusal is the only thing Chromium logged (as a failed load); no script error.
    assert all("status of 422" in e for e in watched.errors), watched.errors


def test_cancelling_a_sleeping_workflow_from_the_page_asks_first_and_runs_its_compensation(start_app, strict_context):
    app = start_app(**APP_ENV)
    start_workflow(app, "hold", {}, "hold-ui")
    watched = tab(strict_context, app.url + "/#workflows?id=hold-ui")
    page = watched.page
    page.wait_for_selector("#wf-steps li[data-step='2'][data-kind='sleep'][data-state='waiting']")
    stored = read_workflow(app, "hold-ui")
    # Until when: the timer's end, an hour away, on the step and in what it waits on now.
    until = page.locator("#wf-steps li[data-step='2'] .until")
    assert until.text_content().startswith(" · sleeps until ")
    assert same_instant(until.locator("time").get_attribute("datetime"), stored["steps"][1]["wake_at"])
    assert page.text_content("#wf-now .now-when span").endswith("(in 60 min)")
    assert same_instant(page.get_attribute("#wf-now .now-when span time", "datetime"), stored["steps"][1]["wake_at"])
    top_screenshot(page, "workflow-sleeping")

    page.click("#wf-cancel")
    page.wait_for_selector("#wf-confirm[open]")
    assert page.text_content("#wfc-id") == "hold-ui"
    assert "the compensations it registered run" in " ".join(page.text_content("#wf-confirm").split())
    assert page.evaluate("document.activeElement.id") == "wfc-keep"  # the safe choice has the focus
    screenshot(page, "workflow-cancel-confirm", full_page=False)
    page.click("#wfc-keep")
    page.wait_for_selector("#wf-confirm", state="hidden")
    assert read_workflow(app, "hold-ui")["cancel_requested_at"] is None

    page.click("#wf-cancel")
    page.click("#wfc-cancel")
    page.wait_for_selector("#wf-detail[data-state='cancelled'] #wf-steps li[data-step='3'][data-state='completed']",
                           timeout=15_000)
    compensation = page.locator("#wf-steps li[data-step='3']")
    assert compensation.get_attribute("class").split() == ["wf-step", "s-completed", "compensation"]
    assert compensation.locator(".step-name").text_content() == "Subtraction"
    assert compensation.locator(".comp").text_content() == "↩ compensation"
    assert wf_steps(page) == [("1", "call", "completed"), ("2", "sleep", "cancelled"), ("3", "call", "completed")]
    stored = read_workflow(app, "hold-ui")
    assert stored["state"] == "cancelled"
    assert [(s["name"], s["compensation"], s["state"]) for s in stored["steps"]] == [
        ("Addition", False, "completed"), ("", False, "cancelled"), ("Subtraction", True, "completed")]  # once
    assert page.is_hidden("#wf-signal") and page.is_hidden("#wf-cancel") and page.is_visible("#wf-ended")
    assert page.text_content("#wf-msg").startswith("Cancel asked for")
    assert page.text_content("#wf-now").startswith("Cancelled ")
    top_screenshot(page, "workflow-cancelled")
    assert not watched.errors and not watched.dialogs, (watched.errors, watched.dialogs)


def test_a_read_token_sees_workflows_and_their_steps_but_no_signal_or_cancel(start_app, context, db_url):
    app = start_app(**APP_ENV, API_TOKEN=ADMIN)
    token = add_token(db_url, "rita", "read")
    as_admin(app, "POST", "/workflows", json={"workflow": "changing", "input": None, "id": "wait-1"})
    auth = {"Authorization": f"Bearer {ADMIN}"}
    wait_workflow(app, "wait-1", lambda w: w["state"] == "waiting", "wait-1 to wait", auth)
    watched = tab(context, app.url + "/#workflows", token)
    page = watched.page
    page.click("tr[data-wf-id='wait-1']")
    page.wait_for_selector("#wf-steps li[data-step='2'][data-state='waiting']")
    assert page.text_content("#wf-now .now-main") == "Waiting on step 2: signal 'continue'"
    for hidden in ("#wf-actions", "#wf-signal", "#wf-sig-send", "#wf-cancel"):
        assert page.is_hidden(hidden), hidden
    assert page.locator("#view-workflows button:visible").count() == 0
    # Without the actions, the facts take the card's whole width.
    assert len(page.evaluate("getComputedStyle(document.getElementById('wf-top')).gridTemplateColumns").split()) == 1
    top_screenshot(page, "workflow-read-only")
    assert [r for r in watched.requests if not r.startswith("GET ")] == []  # it read, and changed nothing
    assert read_workflow(app, "wait-1", auth)["state"] == "waiting"
    assert not watched.errors, watched.errors


def test_the_workflows_list_and_a_workflow_fit_a_phone_with_nothing_wider_than_the_screen(start_app, context):
    app = start_app(**APP_ENV)
    trip_callbacks(app)
    long_id = "booking-2026-12-02." + "x" * 60  # one long word: it must wrap, not push the page sideways
    start_workflow(app, "trip", {"trip": "t9", "city": "Reykjavik", "seat": "none left"}, long_id)
    start_workflow(app, "tour", {"x": 1}, "tour-phone")
    assert requests.post(app.url + "/workflows/tour-phone/signals/note", json={"value": "y" * 300}, timeout=10).ok
    wait_workflow(app, long_id, lambda w: w["state"] == "failed", "the long trip to fail")
    wait_workflow(app, "tour-phone", lambda w: (w["waiting_on"] or "").startswith("step 5"), "tour-phone's wait")
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    Watched(page).open(app.url + "/#workflows")
    for name, url, ready in (
            ("narrow-workflows", "/#workflows", "#wf-body tr[data-wf-id='tour-phone'][data-state='waiting']"),
            ("narrow-workflow-failed", f"/#workflows?id={long_id}", "#wf-detail[data-state='failed'] #wf-steps li[data-step='5']"),
            ("narrow-workflow-waiting", "/#workflows?id=tour-phone", "#wf-detail[data-state='waiting'] #wf-signals li .kept")):
        page.goto(app.url + url)
        page.wait_for_selector(ready)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{url} scrolls sideways on a phone ({overflow} px)"
        wider = page.evaluate("""() => [...document.querySelectorAll('#view-workflows *')].filter((e) => {
            const r = e.getBoundingClientRect();
            return r.width > 0 && (r.left < -0.5 || r.right > window.innerWidth + 0.5);
        }).map((e) => `${e.tagName}#${e.id}.${e.className}`)""")
        assert wider == [], f"wider than the screen on {url}: {wider}"
        screenshot(page, name)
    assert page.is_visible("#wf-sig-send") and page.is_visible("#wf-cancel")  # the actions fit too
