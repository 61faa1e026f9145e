"""/openapi.json is kept true: it documents exactly the routes the app serves, its request schemas are the
pydantic models that validate requests, its answers' shapes match what the API really sends, and it is a
valid OpenAPI document."""
from __future__ import annotations

import re
from typing import Any

import pytest

import schemas
from tests.helpers import free_port

IGNORED_METHODS = {"HEAD", "OPTIONS"}
# The API reference page and its files: public like the web client's own (what it reads, /openapi.json, is not).
DOCS_PAGE_FILES = ("/docs", "/docs.js", "/docs.css", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css")
FAR = "2999-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory):
    """The app on a database nobody listens on: building and documenting it must not need one (with API_TOKEN
    set, checking the token needs no database either)."""
    from app import create_app
    from config import Settings
    from db import Database

    return create_app(Settings(log_dir=str(tmp_path_factory.mktemp("logs")), api_token="doc-reader"),
                      Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", pool_size=1))


@pytest.fixture(scope="module")
def doc(offline_app) -> dict[str, Any]:
    response = offline_app.test_client().get("/openapi.json", headers={"Authorization": "Bearer doc-reader"})
    assert response.status_code == 200 and response.is_json
    return response.json


def served_routes(app: Any) -> dict[str, set[str]]:
    """{openapi path: methods} from the url_map; `<int:event_id>` becomes `{event_id}`."""
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served.setdefault(path, set()).update(m for m in rule.methods if m not in IGNORED_METHODS)
    return served


def documented_routes(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {path: {m.upper() for m in item if m.upper() not in IGNORED_METHODS}
            for path, item in doc["paths"].items()}


def test_every_served_route_is_documented_and_every_documented_route_is_served(offline_app, doc):
    served, documented = served_routes(offline_app), documented_routes(doc)
    assert ("/events/{event_id}" in served) and ("POST" in served["/events"])  # the conversion worked
    missing = {p: sorted(m - documented.get(p, set())) for p, m in served.items() if m - documented.get(p, set())}
    phantom = {p: sorted(m - served.get(p, set())) for p, m in documented.items() if m - served.get(p, set())}
    assert not missing, f"served but not in /openapi.json: {missing}"
    assert not phantom, f"in /openapi.json but not served: {phantom}"


def test_every_documented_route_answers_something_other_than_404_or_405(offline_app, doc):
    """The comparison above is only as good as the url_map; ask the app itself, too."""
    client = offline_app.test_client()
    for path, methods in documented_routes(doc).items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method in methods:
            response = client.open(url, method=method, json={}, headers={"Authorization": "Bearer doc-reader"})
            assert response.status_code not in (404, 405) or response.json["error"]["code"] == "not_found" \
                and "does not exist" in response.json["error"]["message"], (method, url, response.status_code)


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


REQUEST_MODELS = {
    ("/events", "post"): schemas.EventCreate,
    ("/events/batch", "post"): schemas.EventBatch,
    ("/events/{event_id}", "put"): schemas.EventUpdate,
    ("/events/{event_id}", "patch"): schemas.EventUpdate,
    ("/callbacks", "post"): schemas.CallbackCreate,
    ("/callbacks/{callback_id}", "put"): schemas.CallbackUpdate,
    ("/callbacks/{callback_id}", "patch"): schemas.CallbackUpdate,
}


def test_request_bodies_are_the_pydantic_models_that_validate_them(doc):
    for (path, method), model in REQUEST_MODELS.items():
        body = doc["paths"][path][method]["requestBody"]
        assert body["required"] is True, (path, method)
        schema = _resolve(doc, body["content"]["application/json"]["schema"])
        assert set(schema["properties"]) == set(model.model_fields), (path, method)
        assert schema.get("additionalProperties") is False, (path, method)  # extra="forbid" is documented
        assert set(schema.get("required", [])) == {n for n, f in model.model_fields.items() if f.is_required()}
    create = _resolve(doc, doc["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"])
    assert {"callback", "payload", "scheduled_for", "priority", "max_attempts", "idempotency_key"} \
        <= set(create["properties"])
    assert create["required"] == ["callback"]
    # Routes without a body document none.
    for path, method in (("/events/{event_id}/cancel", "post"), ("/events/{event_id}/retry", "post"),
                         ("/events/{event_id}", "delete"), ("/events", "get")):
        assert "requestBody" not in doc["paths"][path][method], (path, method)


def test_list_query_parameters_are_the_query_model(doc):
    params = {p["name"]: p for p in doc["paths"]["/events"]["get"]["parameters"]}
    assert set(params) == set(schemas.EventQuery.model_fields)
    assert all(p["in"] == "query" for p in params.values())
    path_params = doc["paths"]["/events/{event_id}"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in path_params] == [("event_id", "path", True)]


def test_errors_are_documented_as_the_error_body_and_writes_as_needing_the_token(offline_app, doc):
    served = served_routes(offline_app)
    assert "bearer" in doc["components"]["securitySchemes"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and (path, status) != ("/health", "503"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method, status, schema)
            # Every operation shows what it needs: a scope, or nothing for /health and the page's own files.
            public = path in ("/health", "/", "/app.js", "/app.css", "/live-worker.js", *DOCS_PAGE_FILES)
            security = operation.get("security")
            if public:
                assert security == [{}], (path, method, security)
            else:
                assert security and len(security) == 1 and list(security[0]) == ["bearer"], (path, method)
                (scope,) = security[0]["bearer"]
                assert scope in ("read", "write", "desk", "admin"), (path, method, scope)
                assert (scope == "read") == (method.upper() == "GET"), (path, method, scope)
            assert any(s.startswith("2") for s in operation["responses"]), (path, method)
    assert set(doc["paths"]) == set(served)
    # /health answers its own shape when degraded: monitors read the checks either way.
    assert doc["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] \
        == {"$ref": "#/components/schemas/Health"}


def test_documented_answers_have_the_fields_the_api_really_sends(client):
    """A response model that drifted from the controllers' SELECTs would show here."""
    doc = client.get("/openapi.json").json

    def fields(path: str, method: str, status: str) -> set[str]:
        schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        return set(_resolve(doc, schema)["properties"])

    event = client.post("/events", json={"callback": "Addition", "scheduled_for": FAR})
    assert set(event.json) == fields("/events", "post", "201")
    detail = client.get(f"/events/{event.json['id']}").json
    assert set(detail) == fields("/events/{event_id}", "get", "200")
    history_schema = doc["components"]["schemas"]["HistoryEntry"]
    assert set(detail["history"][0]) == set(history_schema["properties"])
    assert set(client.get("/events").json) == fields("/events", "get", "200")
    callback = client.post("/callbacks", json={"name": "n", "kind": "manual"})
    assert set(callback.json) == fields("/callbacks", "post", "201")
    error = client.get("/events/999999").json
    assert set(error) == set(doc["components"]["schemas"]["ErrorBody"]["properties"])
    assert set(error["error"]) == set(doc["components"]["schemas"]["ErrorDetail"]["properties"])
    health = client.get("/health").json
    assert set(health) == fields("/health", "get", "200")


def test_the_document_is_valid_openapi(doc):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "Punctual"
