"""The API reference page (/docs): served by the app itself with every file it loads, under a policy that
allows nothing from elsewhere and no inline script, public like the web client's page, while the document it
reads, /openapi.json, still needs a token once any token exists."""
from __future__ import annotations

import re

import pytest

from tests.helpers import free_port
from tests.test_openapi import DOCS_PAGE_FILES

TOKEN = "docs-reader"


@pytest.fixture(scope="module")
def docs_app(tmp_path_factory):
    """The app on a database nobody listens on, with API_TOKEN set (checking it needs no database)."""
    from app import create_app
    from config import Settings
    from db import Database

    return create_app(Settings(log_dir=str(tmp_path_factory.mktemp("logs")), api_token=TOKEN),
                      Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", pool_size=1))


def page_assets(html: str) -> list[str]:
    return re.findall(r'<(?:script|link)[^>]*?(?:src|href)="([^"]+)"', html)


def test_the_docs_page_and_every_file_it_loads_answer_200_without_a_token_from_this_server(docs_app):
    client = docs_app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = [a for a in page_assets(html) if not a.startswith("data:")]
    assert set(assets) == set(DOCS_PAGE_FILES) - {"/docs"}, assets  # each file it loads is a documented route
    kinds = {".js": "text/javascript", ".css": "text/css"}
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), f"{asset} is not from this server"
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert answer.mimetype == kinds[asset[asset.rindex("."):]], (asset, answer.mimetype)
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert len(client.get("/docs/swagger-ui-bundle.js").data) > 500_000  # Swagger UI itself, not a stub
    assert "SwaggerUIBundle" in client.get("/docs.js").get_data(as_text=True)


def test_the_docs_page_has_no_inline_script_and_a_policy_that_allows_only_this_server(docs_app):
    page = docs_app.test_client().get("/docs")
    html = page.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html), "an inline event handler"
    assert "<style" not in html and "style=" not in html
    policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "http" not in page.headers["Content-Security-Policy"]


def test_the_document_the_page_reads_needs_a_token_when_tokens_exist(settings, db):
    from app import create_app

    client = create_app(settings.with_(api_token=TOKEN), db).test_client()
    assert client.get("/docs").status_code == 200  # the page: public
    refused = client.get("/openapi.json")
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
    assert client.get("/openapi.json", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/whoami").status_code == 401  # what the page asks to know whether it needs a token
    doc = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert doc.status_code == 200 and "/docs" in doc.json["paths"]
    assert doc.json["paths"]["/docs"]["get"]["security"] == [{}]
    assert doc.json["paths"]["/openapi.json"]["get"]["security"] == [{"bearer": ["read"]}]



def test_a_named_read_token_alone_closes_the_document_and_opens_it_to_its_holder(settings, db):
    from app import create_app
    from controllers.access import add_token

    client = create_app(settings.with_(token_check_seconds=0), db).test_client()  # a new token counts at once
    assert client.get("/openapi.json").status_code == 200  # no token exists yet: open
    secret = add_token(db, "reader", "read")
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def test_without_any_token_the_page_and_the_document_are_open(client):
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/whoami").json["tokens_required"] is False  # the page then asks for nothing
