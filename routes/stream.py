"""/stream (Server-Sent Events: which events changed, as it happens) and /stats (counts for the web client)."""
from __future__ import annotations

import json
from typing import Optional

from flask import Response, request
from flask_openapi3 import Tag
from pydantic import BaseModel

import streams
from controllers import live
from errors import Unavailable
from routes import ERRORS, Blueprint, answer, needs, services

tag = Tag(name="live", description="What the web client needs to stay current")
bp = Blueprint("live", __name__, abp_tags=[tag], abp_responses=ERRORS)


class MinuteCount(BaseModel):
    minute: str
    finished: int
    failed: int
    cancelled: int


class Stats(BaseModel):
    counts: dict[str, int]
    per_minute: list[MinuteCount]
    now: str


def broadcaster() -> Optional[streams.Broadcaster]:
    """The live pages' broadcaster; None in a process without the engine (an API-only process)."""
    return services().broadcaster


@bp.get("/stream", responses={200: {"description": "text/event-stream: `hello`, then `changes` (a JSON list of "
                                                   "{id, state, scheduled_for}; state null = deleted), `resync` "
                                                   "(read everything again), `bye` (the server stops) and "
                                                   "`unavailable` (an "
                                                   "API-only process: poll instead) messages; a comment every 15 s",
                                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
        security=needs("read"))
def stream():
    """Live changes of events, pushed from the database's notifications (ids and states, never rows)."""
    hub = broadcaster()
    if hub is None:
        # An API-only process (no engine, no LISTEN): the page is told so in the stream's own terms,
        # and polls instead. A proper answer, not an error: nothing is wrong with this process.
        reason = json.dumps({"reason": "this process does not run the engine, so it has no live changes"})
        return Response(f"retry: 60000\n{streams.sse('unavailable', reason)}", mimetype="text/event-stream")
    subscription = hub.subscribe()
    if subscription is None:
        raise Unavailable(f"too many live pages open ({hub.max_subscribers}); this page will poll instead",
                          {"limit": hub.max_subscribers})
    engine, db = services().engine, services().db
    # Before the page reads anything: from here on every instance notifies claims and final outcomes too
    # (controllers.live).
    live.watching(db, settle=live.SETTLE_SECONDS)
    disconnected = request.environ.get("waitress.client_disconnected") or (lambda: False)
    body = streams.stream(hub, subscription, alive=lambda: engine.started, disconnected=disconnected,
                          encode=lambda value: json.dumps(value, separators=(",", ":")),
                          watching=lambda: live.watching(db), watching_seconds=live.REFRESH_SECONDS)
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy (nginx) must pass messages through at once
    return response


@bp.get("/stats", responses={200: Stats}, security=needs("read"))
def stats():
    """Events per state now, and outcomes per minute over the last hour (the web client's counts and chart)."""
    db = services().db
    counts = {state: 0 for state in ("scheduled", "running", "finished", "failed", "cancelled")}
    for row in db.query("SELECT state, count(*) AS n FROM events GROUP BY state"):
        counts[row["state"]] = row["n"]
    rows = db.query(
        """SELECT to_char(date_trunc('minute', COALESCE(finished_at, updated_at)) AT TIME ZONE 'UTC',
                          'YYYY-MM-DD"T"HH24:MI:00"Z"') AS minute,
                  count(*) FILTER (WHERE state = 'finished') AS finished,
                  count(*) FILTER (WHERE state = 'failed') AS failed,
                  count(*) FILTER (WHERE state = 'cancelled') AS cancelled
           FROM events
           WHERE state IN ('finished', 'failed', 'cancelled')
             AND COALESCE(finished_at, updated_at) >= date_trunc('minute', now()) - interval '59 minutes'
           GROUP BY 1 ORDER BY 1""")
    now = db.query("""SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS now""")[0]["now"]
    return answer({"counts": counts, "per_minute": rows, "now": now})
