"""Health, metrics, the OpenAPI document, its reference page (/docs) and the web client."""
from __future__ import annotations

from importlib import util
from pathlib import Path
from typing import Optional

from flask import Response, current_app, g, send_from_directory
from flask_openapi3 import Tag

from errors import Unavailable
from routes import PUBLIC, Blueprint, answer, needs, services
from schemas import ErrorBody, Health, LatenessLastHour, WhoAmI

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"


def _swagger_ui_dir() -> Optional[Path]:
    """Swagger UI's script and style sheet as the flask-openapi3-swagger package ships them (requirements.txt),
    served from here: the reference page loads nothing from a CDN. None when the package is not installed."""
    spec = util.find_spec("flask_openapi3_swagger")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "templates" / "swagger"


SWAGGER_UI_DIR = _swagger_ui_dir()

tag = Tag(name="system", description="Health, metrics, this document")
bp = Blueprint("system", __name__, abp_tags=[tag],
               abp_responses={str(status): ErrorBody for status in (401, 403, 422, 503)})


@bp.get("/health", responses={200: Health, 503: Health}, security=PUBLIC)
def health():
    """Liveness and readiness of the database, listener, scheduler, executor and Kafka, and what holds vacuum
    back. 200 `ok`; 200 `degraded` when this instance serves but something needs attention (`reasons`: vacuum
    held back or off, Kafka down); 503 `down` when a core part is down."""
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
    reasons = [_reason(name, check) for name, check in checks.items() if check["status"] not in ("ok", "off")]
    # Kafka is optional and vacuum is a warning: reported, but neither takes the API out of rotation.
    down = any(check["status"] not in ("ok", "off") for name, check in checks.items() if name != "kafka")
    vacuum: dict = {"status": "unknown", "reasons": []}  # the database is down: nothing to read
    if checks["database"]["status"] == "ok":
        reading = s.vacuum.reading()
        if reading is None:
            reasons.append("the vacuum statistics could not be read (errors.log says why)")
        else:
            reasons += reading.reasons
            vacuum = reading.report
    status = "down" if down else "degraded" if reasons else "ok"
    return answer({"status": status, "reasons": reasons, "checks": checks, "vacuum": vacuum}, 503 if down else 200)


def _reason(name: str, check: dict) -> str:
    """One line for a check that is not ok: "listener is down: <its last error>"; the roles by name."""
    if name == "roles":
        return "; ".join(_reason(role, part) for role, part in check.items()
                         if isinstance(part, dict) and part.get("status") not in ("ok", "off")) or "roles are down"
    error = check.get("last_error") or check.get("reason")
    return f"{name} is {check['status']}" + (f": {error}" if error else "")


@bp.get("/stats/lateness", responses={200: LatenessLastHour}, security=needs("read"))
def lateness():
    """How late attempts started over the last hour: per minute, the median and 99th percentile of started_at -
    scheduled_for, in seconds (the latest attempt of each running or ended event, `manual` callbacks aside)."""
    return answer(services().lateness.last_hour())


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


def _client_file(name: str, mimetype: str, folder: Path = CLIENT_DIR):
    response = send_from_directory(folder, name, mimetype=mimetype, max_age=0)
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


# The API reference page: Swagger UI (from the flask-openapi3-swagger package) started by docs.js, which sends
# the tab's token with every request to this server. flask-openapi3's own UI route (doc_ui) stays off: its
# page starts Swagger UI with an inline script, and its routes would sit outside the access declarations.
# The page and its files are public like the web client's; what it reads, /openapi.json, needs `read`.

def _swagger_file(name: str, mimetype: str):
    if SWAGGER_UI_DIR is None:
        raise Unavailable("the API reference page needs the flask-openapi3-swagger package: "
                          "pip install -r requirements.txt")
    return _client_file(name, mimetype, SWAGGER_UI_DIR)


@bp.get("/docs", responses={200: {"description": "The API reference page: Swagger UI reading /openapi.json",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def docs():
    """The API reference page: every operation of /openapi.json, with "Try it out" (sends the tab's token)."""
    return _client_file("docs.html", "text/html")


@bp.get("/docs.js", responses={200: {"description": "The reference page's start-up script",
                                     "content": {"text/javascript": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def docs_script():
    """The reference page's script: asks for a token when the server needs one, then starts Swagger UI."""
    return _client_file("docs.js", "text/javascript")


@bp.get("/docs.css", responses={200: {"description": "The reference page's style sheet",
                                      "content": {"text/css": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def docs_style():
    """The reference page's own style sheet (its header and token form)."""
    return _client_file("docs.css", "text/css")


@bp.get("/docs/swagger-ui-bundle.js",
        responses={200: {"description": "Swagger UI's script, as flask-openapi3-swagger ships it",
                         "content": {"text/javascript": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def swagger_ui_script():
    """Swagger UI's script (served from the installed flask-openapi3-swagger package)."""
    return _swagger_file("js/swagger-ui-bundle.js", "text/javascript")


@bp.get("/docs/swagger-ui.css",
        responses={200: {"description": "Swagger UI's style sheet, as flask-openapi3-swagger ships it",
                         "content": {"text/css": {"schema": {"type": "string"}}}}},
        security=PUBLIC)
def swagger_ui_style():
    """Swagger UI's style sheet (served from the installed flask-openapi3-swagger package)."""
    return _swagger_file("css/swagger-ui.css", "text/css")
