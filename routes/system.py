"""Health, metrics, the OpenAPI document and the web client."""
from __future__ import annotations

from pathlib import Path

from flask import Response, current_app, g, send_from_directory
from flask_openapi3 import Tag

from routes import PUBLIC, Blueprint, answer, needs, services
from schemas import ErrorBody, Health, WhoAmI

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"

tag = Tag(name="system", description="Health, metrics, this document")
bp = Blueprint("system", __name__, abp_tags=[tag],
               abp_responses={str(status): ErrorBody for status in (401, 403, 422, 503)})


@bp.get("/health", responses={200: Health, 503: Health}, security=PUBLIC)
def health():
    """Liveness and readiness of the database, listener, scheduler, executor and Kafka."""
    s = services()
    checks = {"database": {"status": "ok" if s.db.ping() else "down"}}
    if s.engine is not None:
        checks.update(s.engine.health())
    else:
        checks["engine"] = {"status": "off", "reason": "this process serves the API only"}
    if s.bridge is not None:
        checks["kafka"] = s.bridge.health()
    else:
        checks["kafka"] = {"status": "off", "reason": "KAFKA_BOOTSTRAP_SERVERS is not set"}
    # Kafka is optional: reported, but a broker outage does not take the API out of rotation.
    healthy = all(check["status"] in ("ok", "off") for name, check in checks.items() if name != "kafka")
    return answer({"status": "ok" if healthy else "degraded", "checks": checks}, 200 if healthy else 503)


@bp.get("/whoami", responses={200: WhoAmI}, security=needs("read"))
def whoami():
    """The token this request carries: its name and scope (the web client shows only what the scope allows)."""
    principal = g.principal
    return answer({"name": principal.name, "scope": principal.scope,
                   "tokens_required": principal.authenticated})


@bp.get("/metrics", responses={200: {"description": "Prometheus text exposition format 0.0.4",
                                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
        security=needs("read"))
def metrics():
    """Prometheus text metrics."""
    return Response(services().metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.get("/openapi.json", responses={200: {"description": "This OpenAPI document",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}},
        security=needs("read"))
def openapi():
    """This API, described from the same models that validate its requests."""
    return answer(current_app.api_doc)


# The page loads only its own files and talks only to this server; user text is set with textContent, and
# this policy is the second lock: no inline script, no script from elsewhere, even if a bug slipped in.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")


def _client_file(name: str, mimetype: str):
    response = send_from_directory(CLIENT_DIR, name, mimetype=mimetype, max_age=0)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/", responses={200: {"description": "The web client's page",
                              "content": {"text/html": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def index():
    """The web client: live events, scheduling, callbacks, the alert desk."""
    return _client_file("index.html", "text/html")


@bp.get("/app.js", responses={200: {"description": "The web client's script (no build step)",
                                    "content": {"text/javascript": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def client_script():
    """The web client's script."""
    return _client_file("app.js", "text/javascript")


@bp.get("/live-worker.js", responses={200: {"description": "The shared worker that holds one live stream for all tabs",
                                           "content": {"text/javascript": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def client_worker():
    """The web client's shared worker: one /stream connection per browser, however many tabs."""
    return _client_file("live-worker.js", "text/javascript")


@bp.get("/app.css", responses={200: {"description": "The web client's style sheet",
                                     "content": {"text/css": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def client_style():
    """The web client's style sheet."""
    return _client_file("app.css", "text/css")
