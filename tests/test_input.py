"""Bad input never corrupts state: every invalid request gets the documented 4xx JSON error body and leaves
every table exactly as it was (rows are counted, and compared, before and after)."""
from __future__ import annotations

import json
from typing import Any, Iterable

import pytest

from tests.helpers import free_port, sql

FAR = "2999-01-01T00:00:00+00:00"
GOOD_EVENT = {"callback": "Addition", "payload": {"x": 1, "y": 2}, "scheduled_for": FAR}


def snapshot(db_url: str) -> dict[str, Any]:
    """Every row of every table Punctual writes, so 'changes nothing' is checked, not assumed."""
    return {
        "callbacks": sql(db_url, "SELECT * FROM callbacks ORDER BY id"),
        "events": sql(db_url, "SELECT * FROM events ORDER BY id"),
        "event_history": sql(db_url, "SELECT * FROM event_history ORDER BY id"),
    }


def assert_error(response: Any, status: int | Iterable[int], what: Any = "") -> dict[str, Any]:
    """The documented error body: {"error": {"code", "message", "details"}} with a 4xx status."""
    allowed = {status} if isinstance(status, int) else set(status)
    body = response.get_data(as_text=True)
    assert response.status_code in allowed, (what, response.status_code, body[:500])
    assert response.mimetype == "application/json", (what, response.mimetype, body[:200])
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}, (what, error)
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


def post_raw(client: Any, path: str, raw: str | bytes, content_type: str = "application/json",
             method: str = "post") -> Any:
    return getattr(client, method)(path, data=raw, content_type=content_type)


def event_body(**fields: Any) -> dict[str, Any]:
    return {**GOOD_EVENT, **fields}


@pytest.fixture
def target(client: Any) -> dict[str, Any]:
    """One scheduled event and one callback of our own, so PUT routes have something to (not) change."""
    event = client.post("/events", json=GOOD_EVENT).json
    callback = client.post("/callbacks", json={"name": "mine", "kind": "python", "target": "add"}).json
    return {"event": event["id"], "callback": callback["id"]}


def write_routes(ids: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a JSON body."""
    return [("post", "/events"), ("post", "/events/batch"), ("put", f"/events/{ids['event']}"),
            ("patch", f"/events/{ids['event']}"), ("post", "/callbacks"), ("put", f"/callbacks/{ids['callback']}"),
            ("patch", f"/callbacks/{ids['callback']}")]


# -- the body as a whole ------------------------------------------------------------------

MALFORMED = ['{"callback": ', "{'callback': 'Addition'}", '{"callback": "Addition",}', "{", "", " ", "nul",
             '{"a": 1} {"b": 2}', '{"a": 01}']
NON_OBJECTS = ["[]", "null", '"str"', "1", "true", '[{"callback": "Addition"}]']


def test_malformed_json_and_non_object_bodies_are_400_on_every_write_route(client, db_url, target):
    before = snapshot(db_url)
    for method, path in write_routes(target):
        for raw in MALFORMED:
            # An empty body is "no JSON object" for a route that needs one: 400 or 422, never a 2xx.
            status = (400, 422) if not raw.strip() else 400
            assert_error(post_raw(client, path, raw, method=method), status, (method, path, raw))
        for raw in NON_OBJECTS:
            error = assert_error(post_raw(client, path, raw, method=method), 400, (method, path, raw))
            assert error["code"] == "bad_request"
    assert snapshot(db_url) == before


def test_invalid_utf8_is_400(client, db_url):
    before = snapshot(db_url)
    assert_error(post_raw(client, "/events", b'{"callback": "Addition", "payload": {"x": "\xff\xfe"}}'), 400)
    assert snapshot(db_url) == before


def test_a_body_that_is_not_declared_json_is_415(client, db_url, target):
    before = snapshot(db_url)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                         "application/xml", "application/jsonp", ""):
        for method, path in write_routes(target):
            error = assert_error(post_raw(client, path, json.dumps(GOOD_EVENT), content_type=content_type,
                                          method=method), 415, (path, content_type))
            assert error["code"] == "unsupported_media_type"
    assert snapshot(db_url) == before


def test_json_with_a_charset_or_a_json_suffix_is_accepted(client, db_url):
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = post_raw(client, "/events", json.dumps(GOOD_EVENT), content_type=content_type)
        assert response.status_code == 201, (content_type, response.json)


def test_a_body_over_the_limit_is_413_and_one_under_it_is_accepted(settings, db, db_url):
    from app import create_app

    client = create_app(settings.with_(max_body_bytes=2000), db).test_client()
    before = snapshot(db_url)
    big = json.dumps(event_body(payload={"blob": "x" * 3000}))
    for path in ("/events", "/events/batch", "/callbacks"):
        error = assert_error(post_raw(client, path, big), 413, path)
        assert error["code"] == "request_entity_too_large" or "large" in error["message"].lower()
    # The limit is on the bytes, whatever the content type claims.
    assert_error(post_raw(client, "/events", big, content_type="text/plain"), (413, 415))
    assert snapshot(db_url) == before
    fits = json.dumps(event_body(payload={"blob": "x" * 1500}))
    assert post_raw(client, "/events", fits).status_code == 201


# -- values -------------------------------------------------------------------------------

BAD_SCHEDULED_FOR = [
    "2030-01-01T12:00:00",         # naive
    "2030-01-01 12:00:00",         # naive, space
    "2030-01-01",                  # a date: naive midnight
    "2026-02-30T00:00:00Z",        # impossible day
    "2030-13-01T00:00:00Z",        # impossible month
    "2030-01-01T24:00:01Z",
    "2030-01-01T12:00:00+25:00",   # impossible offset
    "0001-01-01T00:00:00+01:00",   # before year 1 in UTC
    "9999-12-31T23:59:59-01:00",   # after year 9999 in UTC
    "tomorrow", "now", "", " ", "0", "1700000000",
    1700000000, 1.5, -1, True, [], {}, ["2030-01-01T00:00:00Z"],
]


def test_scheduled_for_must_be_an_iso_instant_with_an_offset(client, db_url, target):
    before = snapshot(db_url)
    for value in BAD_SCHEDULED_FOR:
        error = assert_error(client.post("/events", json=event_body(scheduled_for=value)), 422, value)
        assert error["code"] == "invalid"
        assert "scheduled_for" in json.dumps(error), (value, error)
        assert_error(client.put(f"/events/{target['event']}", json={"scheduled_for": value}), 422, value)
        assert_error(client.post("/events/batch", json={"events": [GOOD_EVENT, event_body(scheduled_for=value)]}),
                     422, value)
    assert snapshot(db_url) == before


WRONG_TYPES = [
    {"callback": None}, {"callback": []}, {"callback": {}}, {"callback": True}, {"callback": 1.5},
    {"callback": ""}, {"callback": "x" * 201},
    {"payload": [1, 2]}, {"payload": "str"}, {"payload": 1}, {"payload": None}, {"payload": True},
    {"priority": "1"}, {"priority": 1.5}, {"priority": True}, {"priority": 2 ** 31}, {"priority": -2 ** 31 - 1},
    {"priority": None},
    {"max_attempts": 0}, {"max_attempts": 101}, {"max_attempts": "3"}, {"max_attempts": 2.0},
    {"max_attempts": False},
    {"idempotency_key": 5}, {"idempotency_key": ""}, {"idempotency_key": ["a"]}, {"idempotency_key": "k" * 201},
]


def test_wrong_types_and_out_of_range_values_are_422(client, db_url, target):
    before = snapshot(db_url)
    for change in WRONG_TYPES:
        error = assert_error(client.post("/events", json=event_body(**change)), 422, change)
        assert error["code"] == "invalid"
        assert_error(client.post("/events/batch", json={"events": [event_body(**change)]}), 422, change)
        editable = {k: v for k, v in change.items() if k in ("payload", "priority", "max_attempts")}
        if editable:
            assert_error(client.put(f"/events/{target['event']}", json=editable), 422, change)
    missing = dict(GOOD_EVENT)
    del missing["callback"]
    assert_error(client.post("/events", json=missing), 422)
    assert snapshot(db_url) == before


def test_an_unknown_callback_is_422_naming_it(client, db_url):
    before = snapshot(db_url)
    for ref in ("Nope", 999999, "999999", 2 ** 63 - 1, 2 ** 63, 10 ** 30, -1, 0, "²", "١", str(2 ** 63)):
        error = assert_error(client.post("/events", json=event_body(callback=ref)), 422, ref)
        assert error["code"] == "invalid" and str(ref) in error["message"], (ref, error)
    assert snapshot(db_url) == before


def test_nan_and_infinity_are_refused(client, db_url, target):
    before = snapshot(db_url)
    for token in ("NaN", "Infinity", "-Infinity"):
        raw = '{"callback": "Addition", "payload": {"x": %s, "y": 1}}' % token
        assert_error(post_raw(client, "/events", raw), 400, token)
        assert_error(post_raw(client, f"/events/{target['event']}", '{"payload": {"a": [%s]}}' % token,
                              method="put"), 400, token)
        assert_error(post_raw(client, "/events", '{"callback": "Addition", "priority": %s}' % token), 400, token)
    # Numbers JSON allows but a double cannot hold become infinite: refused, not stored as null.
    assert_error(post_raw(client, "/events", '{"callback": "Addition", "payload": {"x": 1e400}}'), (400, 422))
    assert snapshot(db_url) == before


UNSTORABLE_STRINGS = [r"\u0000", r"a\u0000b", r"\ud800", r"\udfff", r"x\udbff", r"\ud800\u0000"]


def test_nul_and_lone_surrogates_are_refused_in_values_and_keys_everywhere(client, db_url, target):
    """PostgreSQL's jsonb and text cannot hold them; the API must say so, not answer 500."""
    before = snapshot(db_url)
    for s in UNSTORABLE_STRINGS:
        bodies = [
            ("post", "/events", '{"callback": "Addition", "payload": {"k": "%s"}}' % s),
            ("post", "/events", '{"callback": "Addition", "payload": {"%s": 1}}' % s),
            ("post", "/events", '{"callback": "Addition", "payload": {"a": [{"b": ["%s"]}]}}' % s),
            ("post", "/events", '{"callback": "Addition%s"}' % s),
            ("post", "/events", '{"callback": "Addition", "idempotency_key": "%s"}' % s),
            ("post", "/events", '{"callback": "Addition", "%s": 1}' % s),
            ("post", "/events/batch", '{"events": [{"callback": "Addition", "payload": {"%s": "%s"}}]}' % (s, s)),
            ("put", f"/events/{target['event']}", '{"payload": {"k": "%s"}}' % s),
            ("post", "/callbacks", '{"name": "n%s", "kind": "manual"}' % s),
            ("post", "/callbacks", '{"name": "n", "kind": "kafka", "target": "t%s"}' % s),
            ("post", "/callbacks", '{"name": "n", "kind": "manual", "config": {"%s": "v"}}' % s),
            ("patch", f"/callbacks/{target['callback']}", '{"config": {"k": "%s"}}' % s),
        ]
        for method, path, raw in bodies:
            error = assert_error(post_raw(client, path, raw, method=method), range(400, 500), raw)
            assert error["code"] != "internal_error"
    assert snapshot(db_url) == before


def test_deep_nesting_is_refused_without_a_500(client, db_url, target):
    before = snapshot(db_url)
    for depth in (100, 1000, 100_000):
        for opener, closer in (("[", "]"), ('{"a":', "}")):
            payload = opener * depth + "1" + closer * depth
            raw = '{"callback": "Addition", "payload": {"deep": %s}}' % payload
            assert_error(post_raw(client, "/events", raw), range(400, 500), (depth, opener))
            assert_error(post_raw(client, f"/events/{target['event']}", '{"payload": {"d": %s}}' % payload,
                                  method="put"), range(400, 500), (depth, opener))
            assert_error(post_raw(client, "/callbacks", '{"name": "n", "kind": "manual", "config": {"d": %s}}'
                                  % payload), range(400, 500), (depth, opener))
    assert snapshot(db_url) == before
    # Moderate nesting is fine.
    moderate = {"a": [[[{"b": [[1]]}]]]}
    assert client.post("/events", json=event_body(payload=moderate)).json["payload"] == moderate


READ_ONLY_EVENT_FIELDS = {"id": 1, "state": "finished", "attempts": 3, "result": 42,
                          "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
                          "last_error": "x", "source": "kafka", "worker": "me", "lease_until": FAR,
                          "started_at": FAR, "finished_at": FAR, "history": [], "callback_id": 1}


def test_read_only_fields_cannot_be_mass_assigned(client, db_url, target):
    before = snapshot(db_url)
    for field, value in READ_ONLY_EVENT_FIELDS.items():
        error = assert_error(client.post("/events", json=event_body(**{field: value})), 422, field)
        assert field in json.dumps(error["details"]), (field, error)
        assert_error(client.post("/events/batch", json={"events": [event_body(**{field: value})]}), 422, field)
        assert_error(client.put(f"/events/{target['event']}", json={field: value}), 422, field)
        assert_error(client.patch(f"/events/{target['event']}", json={"priority": 5, field: value}), 422, field)
    for field, value in (("id", 1), ("created_at", FAR), ("updated_at", FAR)):
        assert_error(client.post("/callbacks", json={"name": "n", "kind": "manual", field: value}), 422, field)
        assert_error(client.put(f"/callbacks/{target['callback']}", json={field: value}), 422, field)
    assert snapshot(db_url) == before


# -- query strings ------------------------------------------------------------------------

INVALID_QUERIES = [
    {"state": "bogus"}, {"state": "SCHEDULED"}, {"state": ""},
    {"limit": "0"}, {"limit": "abc"}, {"limit": "-1"}, {"limit": "1001"}, {"limit": "1.5"}, {"limit": ""},
    {"cursor": "-1"}, {"cursor": "x"}, {"cursor": "1 OR 1=1"},
    {"order": "sideways"}, {"order": "id; DROP TABLE events"},
    {"scheduled_after": "2030-01-01T00:00:00"}, {"scheduled_before": "yesterday"},
    {"scheduled_after": "2026-02-30T00:00:00Z"}, {"scheduled_before": "9999-12-31T23:59:59-01:00"},
    {"callback": ""}, {"callback": "x" * 201},
    {"sort": "id"}, {"offset": "10"},
]


def test_invalid_query_parameters_are_422(client, db_url):
    for params in INVALID_QUERIES:
        error = assert_error(client.get("/events", query_string=params), 422, params)
        assert error["code"] == "invalid"
    # A parameter given twice is ambiguous, not silently resolved.
    for query in ("state=scheduled&state=failed", "limit=5&limit=6", "callback=a&callback=b"):
        error = assert_error(client.get(f"/events?{query}"), 422, query)
        assert error["details"]["repeated"] == [query.split("=")[0]]


# -- SQL metacharacters -------------------------------------------------------------------

NASTY = ["Robert'); DROP TABLE events;--", "' OR '1'='1", '"; DELETE FROM callbacks; --', "\\", "%s", "%(x)s",
         "$1", "$$; DROP TABLE callbacks; $$", "*/ SELECT pg_sleep(5) /*", "O'Brien \"quoted\" `tick` ;"]


def test_sql_metacharacters_are_stored_verbatim_and_tables_stay_intact(client, db_url):
    callbacks_before = sql(db_url, "SELECT count(*) AS n FROM callbacks")[0]["n"]
    created_events, created_callbacks = [], []
    for i, text in enumerate(NASTY):
        callback = client.post("/callbacks", json={"name": f"{text}{i}", "kind": "kafka", "target": text,
                                                   "config": {text: text, "key": text}})
        assert callback.status_code == 201, (text, callback.json)
        assert callback.json["name"] == f"{text}{i}" and callback.json["target"] == text
        created_callbacks.append(callback.json)
        event = client.post("/events", json={"callback": f"{text}{i}", "payload": {text: text, "list": [text]},
                                             "idempotency_key": f"{text}{i}", "scheduled_for": FAR})
        assert event.status_code == 201, (text, event.json)
        created_events.append(event.json)
        edited = client.patch(f"/events/{event.json['id']}", json={"payload": {"edited": text}})
        assert edited.status_code == 200 and edited.json["payload"] == {"edited": text}
        # Every query parameter: they filter or are refused, never run.
        listed = client.get("/events", query_string={"callback": f"{text}{i}"})
        assert [e["id"] for e in listed.json["events"]] == [event.json["id"]], text
        assert client.get("/events", query_string={"callback": text}).json["events"] == [], text
        for param in ("state", "limit", "cursor", "order", "scheduled_after", "scheduled_before"):
            assert_error(client.get("/events", query_string={param: text}), 422, (param, text))
        assert_error(client.get(f"/events/{text}"), (404, 405), text)
    for text, callback, event in zip(NASTY, created_callbacks, created_events):
        row = sql(db_url, "SELECT c.name, c.target, c.config, e.payload, e.idempotency_key FROM events e "
                          "JOIN callbacks c ON c.id = e.callback_id WHERE e.id = %s", (event["id"],))
        assert row == [{"name": callback["name"], "target": text, "config": {text: text, "key": text},
                        "payload": {"edited": text}, "idempotency_key": event["idempotency_key"]}]
    tables = {r["tablename"] for r in sql(db_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"callbacks", "events", "event_history"} <= tables
    assert sql(db_url, "SELECT count(*) AS n FROM callbacks")[0]["n"] == callbacks_before + len(NASTY)
    assert sql(db_url, "SELECT count(*) AS n FROM events")[0]["n"] == len(NASTY)


def test_a_batch_stores_each_payload_exactly_with_its_own_time_and_fields(client, db_url, target):
    """Batches travel to PostgreSQL as one JSON document: integers past 64 bits (written by the standard library,
    not orjson), unicode, JSON-looking strings and instants must reach each event's row as sent, in order."""
    later = "2031-05-06T07:08:09.123456+02:00"
    payloads = [{"big": 10 ** 30, "neg": -(2 ** 70)}, {"text": "é ü \u2028 日本 😀"}, {"s": '{"not": "json"}', "n": None},
                {"nested": [[1, 2.5, True, False, None], {"k": "v"}]}, {}]
    events = [{"callback": target["callback"], "payload": p, "scheduled_for": later, "priority": i - 2,
               "max_attempts": i + 1, "idempotency_key": f"exact-{i}" if i % 2 else None}
              for i, p in enumerate(payloads)]
    answer = client.post("/events/batch", json={"events": events})
    assert answer.status_code == 201, answer.json
    ids = [e["id"] for e in answer.json["events"]]
    assert ids == sorted(ids)
    rows = sql(db_url, "SELECT payload, scheduled_for, priority, max_attempts, idempotency_key FROM events "
                       "WHERE id = ANY(%s) ORDER BY id", (ids,))
    for i, (row, sent) in enumerate(zip(rows, answer.json["events"])):
        assert row["payload"] == payloads[i] == sent["payload"]
        assert row["scheduled_for"].isoformat() == "2031-05-06T05:08:09.123456+00:00"
        assert (row["priority"], row["max_attempts"]) == (i - 2, i + 1)
        assert row["idempotency_key"] == (f"exact-{i}" if i % 2 else None)


def test_ids_beyond_bigint_are_404_not_500(client, db_url):
    before = snapshot(db_url)
    for big in (2 ** 63, 10 ** 30):
        assert_error(client.get(f"/events/{big}"), 404, big)
        assert_error(client.put(f"/events/{big}", json={"priority": 1}), 404, big)
        assert_error(client.delete(f"/callbacks/{big}"), 404, big)
        assert_error(client.post(f"/events/{big}/cancel"), 404, big)
        assert client.get("/events", query_string={"cursor": str(big)}).status_code in (200, 422)
        assert client.get("/events", query_string={"callback": str(big)}).status_code == 200
    for odd_digits in ("²", "١٢"):  # str.isdigit() is true for these, int() of the first is not
        assert client.get("/events", query_string={"callback": odd_digits}).json["events"] == []
    assert snapshot(db_url) == before


# -- the database away --------------------------------------------------------------------

def test_an_unreachable_database_answers_503_json_not_500(settings):
    from app import create_app
    from db import Database

    down = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", pool_size=2)
    # API_TOKEN is checked without the database; a named token could not be, nor could "no token exists".
    client = create_app(settings.with_(api_token="t"), down).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer t"
    for method, path, body in [("get", "/events", None), ("get", "/events/1", None), ("get", "/callbacks", None),
                               ("post", "/events", GOOD_EVENT), ("post", "/events/batch", {"events": [GOOD_EVENT]}),
                               ("post", "/callbacks", {"name": "n", "kind": "manual"}),
                               ("put", "/events/1", {"priority": 1}), ("delete", "/events/1", None),
                               ("post", "/events/1/cancel", None), ("post", "/events/1/retry", None)]:
        kwargs = {"json": body} if body is not None else {}
        error = assert_error(getattr(client, method)(path, **kwargs), 503, (method, path))
        assert error["code"] == "unavailable"
    health = client.get("/health")
    assert health.status_code == 503 and health.json["checks"]["database"]["status"] == "down"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200  # a scrape during an outage still answers
    # Without API_TOKEN, whether any token exists cannot be known: closed (503), not open.
    unknown = create_app(settings, down).test_client()
    assert_error(unknown.get("/events"), 503, "no token store")
    assert unknown.get("/health").status_code == 503  # /health needs no token: it reports the outage
    public = create_app(settings.with_(metrics_public=True), down).test_client()
    assert public.get("/metrics").status_code == 200
    down.close()


# -- races with other writers -------------------------------------------------------------

def _waiting_on_a_lock(db_url: str) -> bool:
    return sql(db_url, """SELECT count(*) AS n FROM pg_stat_activity
                          WHERE datname = current_database() AND wait_event_type = 'Lock'""")[0]["n"] > 0


def test_an_event_for_a_callback_deleted_meanwhile_is_422_not_500(client, db_url):
    """The callback is found, then its DELETE commits while our INSERT waits on the row: a clean 422."""
    import threading

    import psycopg2

    from tests.helpers import wait_for

    callback = client.post("/callbacks", json={"name": "doomed", "kind": "manual"}).json
    deleter = psycopg2.connect(db_url)
    try:
        deleter.cursor().execute("DELETE FROM callbacks WHERE id = %s", (callback["id"],))
        answers: list[Any] = []
        thread = threading.Thread(target=lambda: answers.append(
            client.post("/events", json={"callback": "doomed", "scheduled_for": FAR})))
        thread.start()
        wait_for(lambda: _waiting_on_a_lock(db_url), timeout=5, message="the insert to wait on the callback row")
        deleter.commit()
        thread.join(10)
    finally:
        deleter.close()
    error = assert_error(answers[0], 422)
    assert error["details"]["field"] == "callback"
    assert sql(db_url, "SELECT count(*) AS n FROM events") == [{"n": 0}]


def test_a_row_locked_past_lock_timeout_answers_409_and_keeps_the_connection(settings, db_url, monkeypatch):
    """Another transaction holds the event (as a claim would): the API gives up cleanly with 409, changing nothing."""
    import psycopg2

    import db as db_module
    from app import create_app
    from db import Database

    monkeypatch.setattr(db_module, "_SESSION_OPTIONS", "-c timezone=UTC -c lock_timeout=200")
    database = Database(db_url, pool_size=2)
    client = create_app(settings, database).test_client()
    event = client.post("/events", json=GOOD_EVENT).json
    holder = psycopg2.connect(db_url)
    try:
        holder.cursor().execute("SELECT 1 FROM events WHERE id = %s FOR UPDATE", (event["id"],))
        before = snapshot(db_url)
        for method, path, body in [("put", f"/events/{event['id']}", {"priority": 9}),
                                   ("post", f"/events/{event['id']}/cancel", None),
                                   ("delete", f"/events/{event['id']}", None)]:
            kwargs = {"json": body} if body is not None else {}
            response = getattr(client, method)(path, **kwargs)
            error = assert_error(response, 409, (method, path))
            assert error["code"] == "conflict" and error["details"]["reason"] == "lock_timeout"
        assert snapshot(db_url) == before
    finally:
        holder.close()
    assert client.put(f"/events/{event['id']}", json={"priority": 9}).json["priority"] == 9
    database.close()


def test_query_parameters_postgres_cannot_hold_are_422_not_500(client):
    """Found by schemathesis: a NUL in a query string used to reach psycopg2 and answer 500."""
    for query in ("callback=a%00b", "state=%00", "scheduled_before=2030-01-01T00:00:00%00Z"):
        answer = client.get(f"/events?{query}")
        assert answer.status_code == 422, (query, answer.status_code, answer.json)
        assert answer.json["error"]["code"] == "invalid"
    assert client.get("/rejected-messages?limit=5&x%00=1").status_code == 422
