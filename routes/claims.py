"""/events/claim and the lease routes: people and external workers pull events of manual callbacks."""
from __future__ import annotations

from flask import g
from flask_openapi3 import Tag

from controllers import claims
from controllers.access import worker_for
from routes import ERRORS, Blueprint, answer, needs, services
from schemas import ClaimedEvent, ClaimRequest, CompleteRequest, Event, EventPath, ExtendRequest, ReleaseRequest

tag = Tag(name="claims", description="Pull work of manual callbacks under a lease")
bp = Blueprint("claims", __name__, abp_tags=[tag], abp_responses=ERRORS)


@bp.post("/events/claim", responses={200: ClaimedEvent, 204: None}, security=needs("desk"))
def claim(body: ClaimRequest):
    """Lease the next due event of a manual callback to this worker; 204 when nothing waits.

    The answer's `lease_token` is the proof of holding the lease: extend, complete and release need it."""
    event = claims.claim(services().db, worker_for(g.principal, body.worker), body.callback, body.lease_seconds)
    if event is None:
        return "", 204
    return answer(event)


@bp.post("/events/<int:event_id>/extend", responses={200: Event}, security=needs("desk"))
def extend(path: EventPath, body: ExtendRequest):
    """More time: the holder's lease runs `seconds` (default: the callback's) from now."""
    return answer(claims.extend(services().db, path.event_id, worker_for(g.principal, body.worker),
                                body.lease_token, body.seconds))


@bp.post("/events/<int:event_id>/complete", responses={200: Event}, security=needs("desk"))
def complete(path: EventPath, body: CompleteRequest):
    """The holder finished it; `result` is stored."""
    return answer(claims.complete(services().db, path.event_id, worker_for(g.principal, body.worker),
                                  body.lease_token, body.result))


@bp.post("/events/<int:event_id>/release", responses={200: Event}, security=needs("desk"))
def release(path: EventPath, body: ReleaseRequest):
    """The holder gives it back at once (e.g. logs out); anyone may claim it now."""
    return answer(claims.release(services().db, path.event_id, worker_for(g.principal, body.worker),
                                 body.lease_token))
