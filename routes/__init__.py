"""HTTP routes: parse the request, call a controller, answer. No rules live here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint

from config import Settings
from db import Database
from metrics import Metrics
from schemas import ErrorBody

# The error answers every JSON route may give, all in the one error body. Naming 422 here also keeps
# flask-openapi3 from documenting its own validation-error shape, which this API never sends.
ERRORS = {str(status): ErrorBody for status in (400, 401, 403, 404, 409, 413, 415, 422, 503)}

# Access (DESIGN.md "Access"): every operation declares the scope it needs, and that one declaration is both
# what /openapi.json shows (OpenAPI 3.1 lets a bearer requirement list role names) and what routes/http.py
# enforces. An operation that declares nothing needs `admin`: a route added without thought is closed, not open.
SCOPES = ("read", "write", "desk", "admin")
PUBLIC: list[dict[str, list[str]]] = [{}]  # OpenAPI's "no credentials needed": /health and the page only


def needs(scope: str) -> list[dict[str, list[str]]]:
    """The security requirement of an operation that needs a token with `scope` (or a wider one)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return [{"bearer": [scope]}]


SECURITY_SCHEMES = {"bearer": {
    "type": "http", "scheme": "bearer",
    "description": "A token: API_TOKEN (scope admin) or one made with `python app.py tokens add NAME --scope "
                   "read|write|desk|admin`. Each operation lists the scope it needs; admin covers all, write and "
                   "desk cover read. Needed once any token exists; without one, the API is open."}}


class Blueprint(APIBlueprint):
    """An APIBlueprint that remembers each operation's declared scope, keyed by (endpoint, method)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scopes: dict[tuple[str, str], Optional[str]] = {}

    def _collect_openapi_info(self, rule: str, func: Any, *, security: Any = None, method: str = "GET",
                              **kwargs: Any) -> Any:
        declared: Optional[str] = None
        if security == PUBLIC:
            declared = "public"
        elif security:
            declared = next(iter(security[0].get("bearer") or []), None)
        self.scopes[(f"{self.name}.{func.__name__}", str(method).upper())] = declared
        return super()._collect_openapi_info(rule, func, security=security, method=method, **kwargs)

if TYPE_CHECKING:
    from bridge.service import Bridge
    from controllers.access import Access
    from controllers.lateness import Lateness
    from controllers.maintenance import VacuumWatch
    from engine import Engine
    from streams import Broadcaster


@dataclass
class Services:
    """What the routes may use, hung on the Flask app (one per app, so tests can build several)."""

    settings: Settings
    db: Database
    metrics: Metrics
    engine: Optional["Engine"] = None
    bridge: Optional["Bridge"] = None
    access: Optional["Access"] = None
    broadcaster: Optional["Broadcaster"] = None  # live pages' changes; None in a process without the engine
    vacuum: Optional["VacuumWatch"] = None  # what holds vacuum back, read at most every few seconds (/health)
    lateness: Optional["Lateness"] = None  # the last hour's lateness per minute (/stats/lateness)


def services() -> Services:
    return current_app.extensions["punctual"]


def answer(body: Any, status: int = 200, **headers: str):
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response
