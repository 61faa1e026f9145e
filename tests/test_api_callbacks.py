"""The /callbacks API on a real database: each kind's target rules, unique names, CRUD, and the error bodies."""
from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import sql


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The documented error body with the expected status; returns its `error` object."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.is_json, response.get_data(as_text=True)
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code
    return error


def count_callbacks(db_url: str) -> int:
    return sql(db_url, "SELECT count(*) AS n FROM callbacks")[0]["n"]


# -- create: what each kind accepts -------------------------------------------------------

VALID_BODIES = [
    {"name": "py", "kind": "python", "target": "multiply"},
    {"name": "hook", "kind": "webhook", "target": "http://127.0.0.1:9/hook", "config": {"headers": {"X-A": "b"}}},
    {"name": "hooks", "kind": "webhook", "target": "https://localhost/x"},
    {"name": "topic", "kind": "kafka", "target": "out-topic"},
    {"name": "desk", "kind": "manual"},
]


def test_each_kind_is_created_with_a_valid_target_and_defaults_filled(client, db_url):
    for body in VALID_BODIES:
        response = client.post("/callbacks", json=body)
        assert response.status_code == 201, (body, response.json)
        created = response.json
        assert response.headers.get("Location") in (None, f"/callbacks/{created['id']}")
        assert created["name"] == body["name"] and created["kind"] == body["kind"]
        assert created["target"] == body.get("target", "")
        assert created["max_attempts"] == 3 and created["timeout_seconds"] == 30
        assert created["created_at"].endswith("+00:00")
        stored = sql(db_url, "SELECT name, kind, target, config FROM callbacks WHERE id = %s", (created["id"],))
        assert stored == [{"name": body["name"], "kind": body["kind"], "target": body.get("target", ""),
                           "config": body.get("config", {})}]


def test_a_python_callback_needs_a_registered_handler_and_the_error_lists_them(client, db_url):
    before = count_callbacks(db_url)
    error = assert_error(client.post("/callbacks", json={"name": "x", "kind": "python", "target": "nope"}),
                         422, "invalid")
    assert "nope" in error["message"]
    for builtin in ("add", "subtract", "multiply", "divide"):
        assert builtin in error["message"]
    assert error["details"]["field"] == "target"
    assert count_callbacks(db_url) == before


WEBHOOK_TARGETS_REFUSED = [
    "ftp://127.0.0.1/x",           # not http(s)
    "127.0.0.1:8080/x",            # no scheme
    "http:///nohost",              # no host
    "javascript:alert(1)",
    "http://example.com/hook",     # host not allow-listed
    "http://127.0.0.1.evil.test/", # an allow-listed name as a prefix only
    "",
]


def test_a_webhook_callback_needs_an_http_url_on_an_allowed_host(client, db_url):
    """One database for all cases: each refusal must leave the table as it was."""
    before = count_callbacks(db_url)
    for target in WEBHOOK_TARGETS_REFUSED:
        error = assert_error(client.post("/callbacks", json={"name": "w", "kind": "webhook", "target": target}),
                             422, "invalid")
        assert error["details"]["field"] == "target", target
    assert count_callbacks(db_url) == before


def test_webhook_headers_must_be_strings(client, db_url):
    before = count_callbacks(db_url)
    assert_error(client.post("/callbacks", json={"name": "w", "kind": "webhook", "target": "http://localhost/",
                                                 "config": {"headers": {"X-N": 1}}}), 422)
    assert count_callbacks(db_url) == before


def test_a_kafka_callback_needs_a_topic(client):
    assert_error(client.post("/callbacks", json={"name": "k", "kind": "kafka", "target": "  "}), 422)


INVALID_BODIES = [
    {"kind": "python", "target": "add"},                                     # no name
    {"name": "", "kind": "python", "target": "add"},                         # empty name
    {"name": "x", "kind": "shell", "target": "rm -rf /"},                    # unknown kind
    {"name": "x", "kind": "python", "target": "add", "max_attempts": 0},
    {"name": "x", "kind": "python", "target": "add", "max_attempts": "3"},
    {"name": "x", "kind": "python", "target": "add", "timeout_seconds": -1},
    {"name": "x", "kind": "python", "target": "add", "config": []},
    {"name": 5, "kind": "python", "target": "add"},
    {"name": "x", "kind": "python", "target": "add", "max_attempts": True},
    {"name": "x", "kind": "python", "target": 7},
]


def test_invalid_callback_fields_and_wrong_types_are_refused_with_422(client, db_url):
    before = count_callbacks(db_url)
    for body in INVALID_BODIES:
        assert_error(client.post("/callbacks", json=body), 422, "invalid")
    assert count_callbacks(db_url) == before


def test_names_are_unique_409(client, db_url):
    assert client.post("/callbacks", json={"name": "twice", "kind": "manual"}).status_code == 201
    before = count_callbacks(db_url)
    error = assert_error(client.post("/callbacks", json={"name": "twice", "kind": "python", "target": "add"}),
                         409, "conflict")
    assert "twice" in error["message"]
    assert count_callbacks(db_url) == before
    # The seeded built-ins are taken names too.
    assert_error(client.post("/callbacks", json={"name": "Addition", "kind": "manual"}), 409)


# -- read, change, delete -----------------------------------------------------------------

def test_list_and_get_show_the_seeded_builtins(client):
    listed = client.get("/callbacks")
    assert listed.status_code == 200
    by_name = {c["name"]: c for c in listed.json["callbacks"]}
    assert {"Addition", "Subtraction", "Multiplication", "Division"} <= set(by_name)
    division = by_name["Division"]
    got = client.get(f"/callbacks/{division['id']}")
    assert got.status_code == 200 and got.json == division
    assert division["kind"] == "python" and division["target"] == "divide"


@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_change_any_subset_and_keep_the_rest(client, db_url, method):
    created = client.post("/callbacks", json={"name": "c", "kind": "python", "target": "add",
                                              "max_attempts": 5}).json
    changed = getattr(client, method)(f"/callbacks/{created['id']}", json={"target": "subtract",
                                                                          "timeout_seconds": 2.5})
    assert changed.status_code == 200, changed.json
    assert changed.json["target"] == "subtract" and changed.json["timeout_seconds"] == 2.5
    assert changed.json["max_attempts"] == 5 and changed.json["name"] == "c"
    assert changed.json["updated_at"] >= created["updated_at"]
    assert sql(db_url, "SELECT target FROM callbacks WHERE id = %s", (created["id"],)) == [{"target": "subtract"}]
    # Changing the kind re-checks the target against the new kind.
    assert_error(getattr(client, method)(f"/callbacks/{created['id']}", json={"kind": "webhook"}), 422)
    moved = getattr(client, method)(f"/callbacks/{created['id']}",
                                    json={"kind": "webhook", "target": "http://localhost:1/x"})
    assert moved.status_code == 200 and moved.json["kind"] == "webhook"


def test_update_refuses_bad_values_taken_names_nulls_and_read_only_fields(client, db_url):
    created = client.post("/callbacks", json={"name": "c", "kind": "python", "target": "add"}).json
    path = f"/callbacks/{created['id']}"
    before = sql(db_url, "SELECT * FROM callbacks WHERE id = %s", (created["id"],))
    assert_error(client.put(path, json={"target": "nope"}), 422)
    assert_error(client.put(path, json={"name": "Addition"}), 409)
    assert_error(client.put(path, json={"name": None}), 422)
    assert_error(client.put(path, json={"max_attempts": 101}), 422)
    for field in ("id", "created_at", "updated_at"):
        assert_error(client.put(path, json={field: 1}), 422)
    assert sql(db_url, "SELECT * FROM callbacks WHERE id = %s", (created["id"],)) == before


def test_delete_removes_a_callback_that_never_had_events(client, db_url):
    created = client.post("/callbacks", json={"name": "gone", "kind": "python", "target": "add"}).json
    response = client.delete(f"/callbacks/{created['id']}")
    assert response.status_code == 204 and response.data == b""
    assert_error(client.get(f"/callbacks/{created['id']}"), 404, "not_found")
    assert sql(db_url, "SELECT count(*) AS n FROM callbacks WHERE id = %s", (created["id"],)) == [{"n": 0}]


def test_delete_of_a_callback_with_finished_events_is_409_with_the_count_and_keeps_their_history(client, db_url):
    """Issue 10: DELETE used to cascade to finished events and their history, silently. Events are audit data."""
    created = client.post("/callbacks", json={"name": "kept", "kind": "python", "target": "add"}).json
    ids = [client.post("/events", json={"callback": "kept", "payload": {}}).json["id"] for _ in range(2)]
    for event_id in ids:
        assert client.post(f"/events/{event_id}/cancel").status_code == 200
    before = sql(db_url, "SELECT count(*) AS n FROM event_history WHERE event_id = ANY(%s)", (ids,))
    error = assert_error(client.delete(f"/callbacks/{created['id']}"), 409, "conflict")
    assert error["details"] == {"events": 2, "pending_events": 0}
    assert "2 events" in error["message"]
    assert client.get(f"/callbacks/{created['id']}").status_code == 200
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE id = ANY(%s)", (ids,)) == [{"n": 2}]
    assert sql(db_url, "SELECT count(*) AS n FROM event_history WHERE event_id = ANY(%s)", (ids,)) == before
    # Once the events themselves are deleted (explicitly, each leaving its audit line), the callback may go.
    for event_id in ids:
        assert client.delete(f"/events/{event_id}").status_code == 204
    assert client.delete(f"/callbacks/{created['id']}").status_code == 204


def test_plain_sql_cannot_cascade_a_callbacks_events_away(client, db_url):
    import psycopg2

    created = client.post("/callbacks", json={"name": "kept", "kind": "python", "target": "add"}).json
    event = client.post("/events", json={"callback": "kept", "payload": {}}).json
    client.post(f"/events/{event['id']}/cancel")
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        sql(db_url, "DELETE FROM callbacks WHERE id = %s", (created["id"],))
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE id = %s", (event["id"],)) == [{"n": 1}]
    assert sql(db_url, """SELECT confdeltype FROM pg_constraint WHERE conrelid = 'events'::regclass
                          AND confrelid = 'callbacks'::regclass AND contype = 'f'""") == [{"confdeltype": "r"}]


def test_delete_with_pending_events_is_409_and_keeps_everything(client, db_url):
    created = client.post("/callbacks", json={"name": "busy", "kind": "python", "target": "add"}).json
    client.post("/events", json={"callback": "busy", "payload": {}, "scheduled_for": "2999-01-01T00:00:00Z"})
    error = assert_error(client.delete(f"/callbacks/{created['id']}"), 409, "conflict")
    assert error["details"] == {"events": 1, "pending_events": 1}
    assert client.get(f"/callbacks/{created['id']}").status_code == 200
    assert sql(db_url, "SELECT count(*) AS n FROM events")[0]["n"] == 1


def test_missing_callback_ids_are_404(client):
    for method, body in [("get", None), ("put", {"target": "add"}), ("patch", {"target": "add"}),
                         ("delete", None)]:
        kwargs = {"json": body} if body is not None else {}
        error = assert_error(getattr(client, method)("/callbacks/999999", **kwargs), 404, "not_found")
        assert "999999" in error["message"]


def test_non_numeric_callback_ids_are_404_json(client):
    for path in ["/callbacks/abc", "/callbacks/1.5", "/callbacks/-1", "/callbacks/1/x", "/callbacks/1%27"]:
        assert_error(client.get(path), 404)


def test_wrong_methods_are_405_with_an_allow_header(client):
    for method, path, allowed in [("post", "/callbacks/1", {"GET", "PUT", "PATCH", "DELETE"}),
                                  ("delete", "/callbacks", {"GET", "POST"}),
                                  ("put", "/callbacks", {"GET", "POST"})]:
        response = getattr(client, method)(path)
        assert_error(response, 405)
        assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}, (method, path)
