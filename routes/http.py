"""What every request goes through: the token and its scope, strict JSON in, the JSON error body out."""
from __future__ import annotations

import json
import logging
from datetime import date, datetime
from typing import Any, Optional

import orjson
from flask import Flask, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

import jsonsafe
from controllers.access import Access
from errors import AppError, BadRequest, Invalid, Unauthorized, Unavailable
from routes import SECURITY_SCHEMES, Blueprint, answer, services

log = logging.getLogger("punctual.http")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSON(DefaultJSONProvider):
    """JSON as the RFC has it: no NaN/Infinity (jsonb refuses them), ISO 8601 times in answers.

    orjson first, the standard library when orjson declines: bodies and answers are the API's hot path (a batch
    of 1,000 events is parsed and answered in a few milliseconds instead of tens). What orjson refuses and the
    standard library takes (a lone surrogate in a string, an integer past 64 bits) gets the standard library's
    handling and error messages, unchanged."""

    sort_keys = False
    ensure_ascii = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            if kwargs:
                return json.loads(s, parse_constant=_reject_constant, **kwargs)
            # orjson, or the standard library where orjson would read otherwise (jsonsafe.loads says when).
            return jsonsafe.loads(s, parse_constant=_reject_constant)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if set(kwargs) <= {"separators"} and kwargs.get("separators", (",", ":")) == (",", ":"):
            try:
                return orjson.dumps(obj, default=self.default).decode()
            except (orjson.JSONEncodeError, TypeError):
                pass
        return super().dumps(obj, **kwargs)

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, (datetime, date)):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


def scope_needed(scopes: dict[tuple[str, str], Optional[str]], endpoint: Optional[str], method: str,
                 metrics_public: bool) -> str:
    """The scope a request needs: what its operation declares; `admin` when it declares nothing (a route
    added without a declaration is closed, not open); `read` for paths that match no route, so that an
    anonymous client cannot map the API by its 404s and 405s."""
    if endpoint is None:
        return "read"
    if method == "HEAD":
        method = "GET"
    elif method == "OPTIONS":
        declared = {scope for (ep, _), scope in scopes.items() if ep == endpoint}
        return "public" if declared == {"public"} else "read"
    if metrics_public and endpoint == "system.metrics":
        return "public"
    return scopes.get((endpoint, method)) or "admin"


def check_access() -> None:
    """401 without a valid token, 403 when its scope is too small: before the body is even parsed, so an
    unauthenticated client learns nothing from how its request would have been read."""
    s = services()
    needed = scope_needed(current_scopes(), request.endpoint, request.method, s.settings.metrics_public)
    if needed == "public":
        return
    assert s.access is not None
    principal = s.access.authenticate(request.headers.get("Authorization"))
    Access.require(principal, needed)
    g.principal = principal


def current_scopes() -> dict[tuple[str, str], Optional[str]]:
    return current_app.extensions["punctual.scopes"]


def check_body() -> None:
    """Parse a request body once, strictly; the route's model then validates the same object."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.content_length and not request.data:
        return
    body = request.get_json()  # 415 for another content type, 400 for malformed JSON (cached for the route)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", {"got": type(body).__name__})
    problem = jsonsafe.problem(body)
    if problem:
        raise Invalid(problem)


def check_query() -> None:
    """A query parameter given twice is refused: which of the two wins is a guess the client never sees.
    Values PostgreSQL cannot take as text (NUL, lone surrogates) are refused before any query sees them."""
    repeated = sorted(key for key in request.args if len(request.args.getlist(key)) > 1)
    if repeated:
        raise Invalid(f"query parameters given more than once: {', '.join(repeated)}", {"repeated": repeated})
    for key, value in request.args.items():
        problem = jsonsafe.problem(key) or jsonsafe.problem(value)
        if problem:
            raise Invalid(f"query parameter {key[:40]!r}: {problem.removeprefix('$: ')}", {"parameter": key[:40]})


def _validation_error(exc: ValidationError):
    """Pydantic's complaint as our JSON error body (422), one entry per field."""
    fields = [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", ""),
         "type": err.get("type", "")}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields[:5])
    return answer(Invalid(f"invalid request: {summary}", {"fields": fields}).body(), 422)


def install(app: Flask, blueprints: list[Blueprint]) -> None:
    """Hook the JSON provider, the guards and the error mapping onto the app."""
    app.json_provider_class = StrictJSON
    app.security_schemes = {**SECURITY_SCHEMES, **(app.security_schemes or {})}  # documented in /openapi.json
    app.extensions["punctual.scopes"] = {key: scope for bp in blueprints for key, scope in bp.scopes.items()}
    app.json = StrictJSON(app)
    app.before_request(check_access)
    app.before_request(check_body)
    app.before_request(check_query)

    @app.errorhandler(AppError)
    def app_error(exc: AppError):
        response = answer(exc.body(), exc.status)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="punctual"'  # RFC 9110: a 401 names its scheme
        elif isinstance(exc, Unavailable):
            response.headers["Retry-After"] = "1"  # nothing was written; the same request may simply be sent again
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.response is not None:  # a ready answer, e.g. flask-openapi3's validation error
            return exc.response
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 400 and "JSON" in (message or ""):
            code = "bad_request"
        response = answer({"error": {"code": code, "message": message, "details": {}}}, exc.code or 500)
        if exc.code == 405:
            valid = getattr(exc, "valid_methods", None)
            if valid:
                response.headers["Allow"] = ", ".join(valid)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return answer({"error": {"code": "internal_error", "message": "internal error; see errors.log",
                                 "details": {}}}, 500)

    @app.after_request
    def count(response):
        metrics = services().metrics
        metrics.http_requests.labels(f"{response.status_code // 100}xx").inc()
        return response


validation_error_callback = _validation_error
