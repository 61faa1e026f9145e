"""Access: once any token exists, every route but /health and the page needs one, with a wide enough scope.

The routes are enumerated from the app's url_map, so a route added later is covered without editing this
file; each test is written as the attempt it refuses."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any, Iterator

import pytest

from tests.conftest import ROOT
from tests.helpers import sql

TOKEN = "s3cret"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ALL_METHODS = ("GET",) + WRITE_METHODS
FAR = "2999-01-01T00:00:00+00:00"
# The page's files and the API reference page's (/docs; what it reads, /openapi.json, needs a token).
PUBLIC_PATHS = {"/health", "/", "/app.js", "/app.css", "/live-worker.js",
                "/docs", "/docs.js", "/docs.css", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"}


def add_token(db_url: str, name: str, scope: str, secret: str) -> None:
    """A named token as `python app.py tokens add` stores it: only the hash."""
    sql(db_url, "INSERT INTO api_tokens (name, scope, token_hash) VALUES (%s, %s, %s)",
        (name, scope, hashlib.sha256(secret.encode()).hexdigest()))


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def guarded(settings, db):
    """The API with API_TOKEN configured, and the ids of one event and one callback to aim at."""
    from app import create_app

    app = create_app(settings.with_(api_token=TOKEN), db)
    client = app.test_client()
    event = client.post("/events", json={"callback": "Addition", "payload": {}, "scheduled_for": FAR},
                        headers=bearer(TOKEN))
    callback = client.post("/callbacks", json={"name": "mine", "kind": "manual"}, headers=bearer(TOKEN))
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


def guarded_routes(app: Any, ids: dict[str, int]) -> list[tuple[str, str]]:
    found = [(m, url) for m, url in routes(app, ALL_METHODS, ids) if url not in PUBLIC_PATHS]
    assert len(found) > 20, found  # the enumeration itself works: otherwise every test here passes vacuously
    return found


def snapshot(db_url: str) -> list[list[dict[str, Any]]]:
    return [sql(db_url, f"SELECT * FROM {table} ORDER BY id")
            for table in ("callbacks", "events", "event_history", "api_tokens")]


def test_the_url_map_has_the_routes_we_expect(guarded):
    app, _, ids = guarded
    found = set(routes(app, ALL_METHODS, ids))
    e, c = ids["event"], ids["callback"]
    assert {("POST", "/events"), ("POST", "/events/batch"), ("PUT", f"/events/{e}"), ("PATCH", f"/events/{e}"),
            ("DELETE", f"/events/{e}"), ("POST", f"/events/{e}/cancel"), ("POST", f"/events/{e}/retry"),
            ("POST", "/callbacks"), ("PUT", f"/callbacks/{c}"), ("PATCH", f"/callbacks/{c}"),
            ("DELETE", f"/callbacks/{c}"), ("GET", "/events"), ("GET", f"/events/{e}"), ("GET", "/stream"),
            ("GET", "/rejected-messages"), ("GET", "/metrics"), ("GET", "/openapi.json")} <= found


def test_every_operation_declares_its_scope_and_the_openapi_document_shows_it(guarded):
    app, client, _ = guarded
    scopes = app.extensions["punctual.scopes"]
    undeclared = sorted(key for key, scope in scopes.items() if scope is None)
    assert not undeclared, f"operations without a declared scope (they default to admin): {undeclared}"
    doc = client.get("/openapi.json", headers=bearer(TOKEN)).json
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    shown = {}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            shown[(method.upper(), path)] = operation.get("security")
    assert shown[("GET", "/health")] == [{}] and shown[("GET", "/")] == [{}]
    assert shown[("GET", "/events")] == [{"bearer": ["read"]}]
    assert shown[("POST", "/events")] == [{"bearer": ["write"]}]
    assert shown[("POST", "/events/claim")] == [{"bearer": ["desk"]}]
    assert shown[("POST", "/callbacks")] == [{"bearer": ["admin"]}]
    assert all(security for security in shown.values()), [k for k, v in shown.items() if not v]


WRONG_AUTHORIZATIONS = [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Basic {TOKEN}", TOKEN,
                        f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer S3CRET", f"Token {TOKEN}",
                        f"Bearer {TOKEN} {TOKEN}"]


def test_every_route_without_the_right_token_is_401_and_changes_nothing(guarded, db_url):
    app, client, ids = guarded
    before = snapshot(db_url)
    for authorization in WRONG_AUTHORIZATIONS:
        headers = {} if authorization is None else {"Authorization": authorization}
        for method, url in guarded_routes(app, ids):
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
    # Paths that match no route do not tell an anonymous client which exist.
    assert client.get("/no/such/thing").status_code == 401
    assert client.open("/events", method="TRACE").status_code == 401
    assert snapshot(db_url) == before


def test_reading_without_a_token_shows_nothing(guarded):
    """Payloads, results, callback configs, the live stream and rejected Kafka messages are all closed."""
    _, client, ids = guarded
    for url in ("/events", f"/events/{ids['event']}", "/callbacks", f"/callbacks/{ids['callback']}", "/stream",
                "/stats", "/rejected-messages", "/openapi.json", "/metrics", "/whoami"):
        response = client.get(url)
        assert response.status_code == 401, (url, response.status_code)
        assert b"payload" not in response.data and b"Addition" not in response.data


def test_health_and_the_page_stay_open(guarded):
    _, client, _ = guarded
    for url in PUBLIC_PATHS:
        assert client.get(url).status_code == 200, url


def test_metrics_public_opens_metrics_only(settings, db):
    from app import create_app

    client = create_app(settings.with_(api_token=TOKEN, metrics_public=True), db).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/events").status_code == 401


def test_the_right_token_opens_every_route(guarded, db_url):
    app, client, ids = guarded
    for method, url in guarded_routes(app, ids):
        if url == "/stream":
            continue  # an endless body in an engine-less app answers 'unavailable'; covered elsewhere
        response = client.open(url, method=method, json={}, headers=bearer(TOKEN))
        # Past the guard: the route itself answers (an empty body may well be invalid for it).
        assert response.status_code not in (401, 403), (method, url, response.get_data(as_text=True))
    event = client.post("/events", json={"callback": "Addition", "scheduled_for": FAR}, headers=bearer(TOKEN))
    assert event.status_code == 201
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert client.patch(f"/events/{event.json['id']}", json={"priority": 4}, headers=lower).status_code == 200
    assert client.post(f"/events/{event.json['id']}/cancel", headers=bearer(TOKEN)).json["state"] == "cancelled"
    assert client.delete(f"/events/{event.json['id']}", headers=bearer(TOKEN)).status_code == 204
    assert sql(db_url, "SELECT count(*) AS n FROM events WHERE id = %s", (event.json["id"],)) == [{"n": 0}]


# (method, path template, scope needed) for a sample of each family; the declaration drives them all.
def allowed(scope: str, needed: str) -> bool:
    return needed == "read" or scope == "admin" or scope == needed


def test_each_scope_may_do_exactly_what_the_contract_says(guarded, db_url):
    app, client, ids = guarded
    declared = app.extensions["punctual.scopes"]
    adapter = app.url_map.bind("localhost")
    for scope in ("read", "write", "desk", "admin"):
        add_token(db_url, f"t-{scope}", scope, f"secret-{scope}")
    for scope in ("read", "write", "desk", "admin"):
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static" or rule.rule in PUBLIC_PATHS:
                continue
            values = {arg: ids["callback"] if "callback" in arg else ids["event"] for arg in rule.arguments}
            for method in sorted(rule.methods & set(ALL_METHODS)):
                needed = declared[(rule.endpoint, method)]
                url = adapter.build(rule.endpoint, values, method=method)
                before = snapshot(db_url) if not allowed(scope, needed) else None
                if url == "/stream" and allowed(scope, needed):
                    continue
                response = client.open(url, method=method, json={}, headers=bearer(f"secret-{scope}"))
                if allowed(scope, needed):
                    assert response.status_code not in (401, 403), (scope, method, url, response.status_code)
                else:
                    assert response.status_code == 403, (scope, method, url, response.status_code)
                    assert response.json["error"]["code"] == "forbidden"
                    assert response.json["error"]["details"] == {"scope": scope, "needed": needed}
                    assert snapshot(db_url) == before
    who = client.get("/whoami", headers=bearer("secret-desk")).json
    assert who == {"name": "t-desk", "scope": "desk", "tokens_required": True}


def test_named_tokens_close_an_open_api_and_revocation_needs_no_restart(settings, db, db_url):
    from app import create_app

    client = create_app(settings.with_(token_check_seconds=0), db).test_client()
    assert client.get("/events").status_code == 200  # no token anywhere: open
    assert client.get("/whoami").json == {"name": "anonymous", "scope": "admin", "tokens_required": False}
    add_token(db_url, "ann", "read", "ann-secret")
    assert client.get("/events").status_code == 401
    assert client.get("/events", headers=bearer("ann-secret")).status_code == 200
    sql(db_url, "UPDATE api_tokens SET revoked_at = now() WHERE name = 'ann'")
    assert client.get("/events", headers=bearer("ann-secret")).status_code == 401
    # Revoking the last token does not reopen the API.
    assert client.get("/events").status_code == 401


def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    env.pop("API_TOKEN", None)
    return subprocess.run([sys.executable, "app.py", "tokens", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_tokens_from_the_command_line_are_stored_hashed_and_revoked_at_once(settings, db, db_url):
    from app import create_app

    made = run_cli(db_url, "add", "ann", "--scope", "desk")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("pct_") and len(secret) > 40
    stored = sql(db_url, "SELECT name, scope, token_hash FROM api_tokens")
    assert stored == [{"name": "ann", "scope": "desk", "token_hash": hashlib.sha256(secret.encode()).hexdigest()}]
    listed = run_cli(db_url, "list")
    assert listed.returncode == 0 and "ann\tdesk" in listed.stdout and secret not in listed.stdout
    assert run_cli(db_url, "add", "ann", "--scope", "read").returncode == 1  # the name is taken
    assert run_cli(db_url, "add", "bob", "--scope", "root").returncode == 2  # no such scope

    client = create_app(settings, db).test_client()
    assert client.get("/whoami", headers=bearer(secret)).json["name"] == "ann"
    assert client.post("/events", json={"callback": "Addition"}, headers=bearer(secret)).status_code == 403
    revoked = run_cli(db_url, "revoke", "ann")
    assert revoked.returncode == 0, revoked.stderr
    assert client.get("/whoami", headers=bearer(secret)).status_code == 401
    assert "revoked" in run_cli(db_url, "list").stdout
    assert run_cli(db_url, "revoke", "ann").returncode == 1  # nothing active left to revoke


def test_without_any_token_configured_the_api_is_open(client):
    response = client.post("/events", json={"callback": "Addition", "scheduled_for": FAR})
    assert response.status_code == 201
    assert client.post("/events", json={"callback": "Addition"}, headers={"Authorization": "Bearer x"}) \
        .status_code == 201
