"""HTTP routes: parse the request, call a controller, answer. No rules live here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from flask import current_app, jsonify

from config import Settings
from db import Database
from metrics import Metrics
from schemas import ErrorBody

# The error answers every JSON route may give, all in the one error body. Naming 422 here also keeps
# flask-openapi3 from documenting its own validation-error shape, which this API never sends.
ERRORS = {str(status): ErrorBody for status in (400, 401, 404, 409, 413, 415, 422, 503)}

# Writes need `Authorization: Bearer <API_TOKEN>` when API_TOKEN is set (routes/http.py enforces it);
# the scheme itself is declared on the app by http.install.
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer",
                               "description": "API_TOKEN; required on POST/PUT/PATCH/DELETE when it is set"}}

if TYPE_CHECKING:
    from bridge.service import Bridge
    from engine import Engine


@dataclass
class Services:
    """What the routes may use, hung on the Flask app (one per app, so tests can build several)."""

    settings: Settings
    db: Database
    metrics: Metrics
    engine: Optional["Engine"] = None
    bridge: Optional["Bridge"] = None


def services() -> Services:
    return current_app.extensions["punctual"]


def answer(body: Any, status: int = 200, **headers: str):
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response
