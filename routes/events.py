"""/events: schedule, list, read, reschedule, cancel, retry and delete events."""
from __future__ import annotations

from flask import request
from flask_openapi3 import Tag

from controllers import events
from routes import ERRORS, Blueprint, answer, needs, services
from schemas import (
    Event,
    EventBatch,
    EventBatchResult,
    EventCreate,
    EventDetail,
    EventList,
    EventPath,
    EventQuery,
    EventUpdate,
)

tag = Tag(name="events", description="Scheduled runs of callbacks")
bp = Blueprint("events", __name__, abp_tags=[tag], abp_responses=ERRORS)


@bp.get("/events", responses={200: EventList}, security=needs("read"))
def list_events(query: EventQuery):
    """List events, newest first, filtered by state, callback and scheduled time; page with next_cursor."""
    return answer(events.list_events(services().db, query))


@bp.post("/events", responses={200: Event, 201: Event}, security=needs("write"))
def create_event(body: EventCreate):
    """Schedule one event. A repeated idempotency_key answers 200 with the first event."""
    s = services()
    event, created = events.create_event(s.db, body, starter=s.engine.starter if s.engine else None)
    if created:
        return answer(event, 201, Location=f"/events/{event['id']}")
    return answer(event, 200, **{"Idempotent-Replayed": "true"})


@bp.post("/events/batch", responses={201: EventBatchResult}, security=needs("write"))
def create_batch(body: EventBatch):
    """Schedule many events in one transaction: all or none. With `Prefer: return=minimal` the answer is their
    ids only, in the order sent (`{"ids": [...]}`), and says so in `Preference-Applied`."""
    s = services()
    minimal = _prefers_minimal(request.headers.get("Prefer", ""))
    result = events.create_events(s.db, body.events, starter=s.engine.starter if s.engine else None,
                                  minimal=minimal)
    if minimal:
        return answer({"ids": [event["id"] for event, _ in result]}, 201, **{"Preference-Applied": "return=minimal"})
    return answer({"events": [event for event, _ in result]}, 201)


def _prefers_minimal(prefer: str) -> bool:
    """RFC 7240: preferences separated by commas, each a token with an optional value and parameters."""
    return any(part.split(";")[0].strip().replace(" ", "").lower() == "return=minimal" for part in prefer.split(","))


@bp.get("/events/<int:event_id>", responses={200: EventDetail}, security=needs("read"))
def get_event(path: EventPath):
    """Read an event with its history, oldest first."""
    return answer(events.get_event(services().db, path.event_id))


@bp.put("/events/<int:event_id>", responses={200: Event}, security=needs("write"))
def put_event(path: EventPath, body: EventUpdate):
    """Edit or reschedule a scheduled event (payload, scheduled_for, priority, max_attempts)."""
    return answer(events.update_event(services().db, path.event_id, body))


@bp.patch("/events/<int:event_id>", responses={200: Event}, security=needs("write"))
def patch_event(path: EventPath, body: EventUpdate):
    """Same as PUT."""
    return put_event(path=path, body=body)


@bp.delete("/events/<int:event_id>", responses={204: None}, security=needs("write"))
def delete_event(path: EventPath):
    """Delete an event that is not running."""
    events.delete_event(services().db, path.event_id)
    return "", 204


@bp.post("/events/<int:event_id>/cancel", responses={200: Event}, security=needs("write"))
def cancel_event(path: EventPath):
    """Cancel a scheduled event."""
    return answer(events.cancel_event(services().db, path.event_id))


@bp.post("/events/<int:event_id>/retry", responses={200: Event}, security=needs("write"))
def retry_event(path: EventPath):
    """Run a failed or cancelled event again, now, with a fresh set of attempts."""
    return answer(events.retry_event(services().db, path.event_id))
