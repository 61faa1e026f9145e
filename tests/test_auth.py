"""API_TOKEN: every write route needs `Authorization: Bearer <token>`; reads do not. The write routes are
enumerated from the app's url_map, so a route added later is covered without editing this file."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.helpers import sql

TOKEN = "s3cret"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
FAR = "2999-01-01T00:00:00+00:00"


@pytest.fixture
def guarded(settings, db):
    """The API with a token configured, and the ids of one event and one callback to aim at."""
    from app import create_app

    app = create_app(settings.with_(api_token=TOKEN), db)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    event = client.post("/events", json={"callback": "Addition", "payload": {}, "scheduled_for": FAR}, headers=auth)
    callback = client.post("/callbacks", json={"name": "mine", "kind": "manual"}, headers=auth)
    assert event.status_code == 201 and callback.status_code == 201
    return app, client, {"event": event.json["id"], "callback": callback.json["id"]}


def routes(app: Any, methods: tuple[str, ...], ids: dict[str, int]) -> Iterator[tuple[str, str]]:
    """(method, url) of every registered route with one of these methods; path arguments get real ids."""
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        values = {arg: ids["callback"] if "callback" in arg else ids["event"] for arg in rule.arguments}
        for method in sorted(rule.methods & set(methods)):
            yield method, adapter.build(rule.endpoint, values, method=method)


def snapshot(db_url: str) -> list[list[dict[str, Any]]]:
    return [sql(db_url, f"SELECT * FROM {table} ORDER BY id") for table in ("callbacks", "events", "event_history")]


def test_the_url_map_has_the_write_routes_we_expect(guarded):
    """Guards the enumeration itself: if it found nothing, every other test here would pass vacuously."""
    app, _, ids = guarded
    found = set(routes(app, WRITE_METHODS, ids))
    e, c = ids["event"], ids["callback"]
    assert {("POST", "/events"), ("POST", "/events/batch"), ("PUT", f"/events/{e}"), ("PATCH", f"/events/{e}"),
            ("DELETE", f"/events/{e}"), ("POST", f"/events/{e}/cancel"), ("POST", f"/events/{e}/retry"),
            ("POST", "/callbacks"), ("PUT", f"/callbacks/{c}"), ("PATCH", f"/callbacks/{c}"),
            ("DELETE", f"/callbacks/{c}")} <= found


WRONG_AUTHORIZATIONS = [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Basic {TOKEN}", TOKEN,
                        f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer S3CRET", f"Token {TOKEN}",
                        f"Bearer {TOKEN} {TOKEN}"]


def test_every_write_route_without_the_right_token_is_401_and_changes_nothing(guarded, db_url):
    app, client, ids = guarded
    before = snapshot(db_url)
    for authorization in WRONG_AUTHORIZATIONS:
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, url in routes(app, WRITE_METHODS, ids):
            # A valid-looking body: the 401 must come from the token, not from validation.
            response = client.open(url, method=method, json={"callback": "Addition"}, headers=headers)
            assert response.status_code == 401, (authorization, method, url, response.status_code,
                                                 response.get_data(as_text=True))
            error = response.json["error"]
            assert error["code"] == "unauthorized" and set(error) == {"code", "message", "details"}
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            # Nor may an unauthenticated client learn anything from how its body is parsed.
            garbage = client.open(url, method=method, data="{not json", content_type="text/plain",
                                  headers=headers)
            assert garbage.status_code == 401, (authorization, method, url, garbage.status_code)
    assert snapshot(db_url) == before


def test_the_right_bearer_token_opens_every_write_route(guarded, db_url):
    app, client, ids = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, url in routes(app, WRITE_METHODS, ids):
        response = client.open(url, method=method, json={}, headers=auth)
        # Past the guard: the route itself answers (an empty body may well be invalid for it).
        assert response.status_code != 401, (method, url, response.get_data(as_text=True))
    # And the writes take effect.
    event = client.post("/events", json={"callback": "Addition", "scheduled_for": FAR}, headers=auth)
    assert event.status_code == 201
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert client.patch(f"/events/{event.json['id']}", json={"priority": 4}, headers=lower).status_code == 200
    assert client.post(f"/events/{event.json['id']}/cancel", headers=auth).json["state"] == "cancelled"
    assert client.delete(f"/events/{event.json['id']}", headers=auth).status_code == 204
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE id = %s", (event.json["id"],)) == [{"n": 0}]


def test_reads_need_no_token(guarded):
    app, client, ids = guarded
    gets = list(routes(app, ("GET",), ids))
    assert ("GET", "/events") in gets and ("GET", "/health") in gets
    for _, url in gets:
        response = client.get(url)
        assert response.status_code not in (401, 403), (url, response.status_code)
        assert response.status_code < 500 or url == "/health", (url, response.status_code)


def test_without_a_configured_token_writes_are_open(client):
    response = client.post("/events", json={"callback": "Addition", "scheduled_for": FAR})
    assert response.status_code == 201
    assert client.post("/events", json={"callback": "Addition"}, headers={"Authorization": "Bearer x"}) \
        .status_code == 201
