"""/schedules: recurring events (DESIGN.md "Schedules"): create, list, read, change, pause, resume, delete."""
from __future__ import annotations

from flask import Response
from flask_openapi3 import Tag

from controllers import schedules
from routes import ERRORS, Blueprint, answer, needs, services
from schemas import Preview, PreviewQuery, Schedule, ScheduleCreate, ScheduleList, SchedulePath, ScheduleUpdate

tag = Tag(name="schedules", description="Recurring events: a cron or an interval, in any time zone")
bp = Blueprint("schedules", __name__, abp_tags=[tag], abp_responses=ERRORS)


def _stats() -> schedules.Stats:
    m = services().metrics
    return schedules.Stats(m.schedule_made, m.schedule_skipped, m.schedule_caught_up)


@bp.get("/schedules", responses={200: ScheduleList}, security=needs("read"))
def list_schedules() -> Response:
    """List schedules, each with its next runs and its rule in words."""
    return answer({"schedules": schedules.list_schedules(services().db)})


@bp.post("/schedules", responses={201: Schedule}, security=needs("admin"))
def create_schedule(body: ScheduleCreate) -> Response:
    """Create a schedule; its first occurrence exists as an event at once."""
    return answer(schedules.create_schedule(services().db, body, _stats()), 201)


# A GET with the rule in the query: it writes nothing, so it is a read (every read here is a GET).
@bp.get("/schedules/preview", responses={200: Preview}, security=needs("read"))
def preview_schedule(query: PreviewQuery) -> Response:
    """When a rule would run, without making anything: `next_runs` and `description` as a schedule with this
    rule would answer them; 422 with the reason for a rule that POST /schedules would refuse."""
    return answer(schedules.preview(query))


@bp.get("/schedules/<int:schedule_id>", responses={200: Schedule}, security=needs("read"))
def get_schedule(path: SchedulePath) -> Response:
    """Read a schedule, with `next_runs` (the next 5 instants, UTC) and `description`."""
    return answer(schedules.get_schedule(services().db, path.schedule_id))


@bp.put("/schedules/<int:schedule_id>", responses={200: Schedule}, security=needs("admin"))
def put_schedule(path: SchedulePath, body: ScheduleUpdate) -> Response:
    """Change any subset of the fields; the pending occurrence is replaced by the new rule's next one."""
    return answer(schedules.update_schedule(services().db, path.schedule_id, body, _stats()))


@bp.patch("/schedules/<int:schedule_id>", responses={200: Schedule}, security=needs("admin"))
def patch_schedule(path: SchedulePath, body: ScheduleUpdate) -> Response:
    """Same as PUT: change any subset of the fields."""
    return put_schedule(path=path, body=body)


@bp.delete("/schedules/<int:schedule_id>", responses={204: None}, security=needs("admin"))
def delete_schedule(path: SchedulePath) -> tuple[str, int]:
    """Delete a schedule: its pending occurrence is cancelled; the events of past ones stay."""
    schedules.delete_schedule(services().db, path.schedule_id)
    return "", 204


@bp.post("/schedules/<int:schedule_id>/pause", responses={200: Schedule}, security=needs("admin"))
def pause_schedule(path: SchedulePath) -> Response:
    """Pause: nothing is made, and the pending occurrence is cancelled."""
    return answer(schedules.pause_schedule(services().db, path.schedule_id))


@bp.post("/schedules/<int:schedule_id>/resume", responses={200: Schedule}, security=needs("admin"))
def resume_schedule(path: SchedulePath) -> Response:
    """Resume: the catch-up policy applies to what the pause missed, then the next occurrence is made."""
    return answer(schedules.resume_schedule(services().db, path.schedule_id, _stats()))
