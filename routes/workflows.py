"""/workflows: durable multi-step work (DESIGN.md "Workflows"): start, list, read, signal, cancel."""
from __future__ import annotations

from flask import Response
from flask_openapi3 import Tag

from controllers import workflows
from routes import ERRORS, Blueprint, answer, needs, services
from schemas import (
    SignalBody,
    SignalPath,
    Workflow,
    WorkflowCreate,
    WorkflowList,
    WorkflowPath,
    WorkflowQuery,
    WorkflowSignal,
)

tag = Tag(name="workflows", description="Durable workflows: steps, timers, signals and compensation")
bp = Blueprint("workflows", __name__, abp_tags=[tag], abp_responses=ERRORS)


@bp.post("/workflows", responses={201: Workflow, 200: Workflow}, security=needs("write"))
def start_workflow(body: WorkflowCreate) -> Response:
    """Start a workflow; its first step is made at once by the workflow role. 201, or 200 when `id` was already
    used with the same workflow and input."""
    row, created = workflows.start(services().db, body.workflow, body.input, body.id)
    return answer(row, 201 if created else 200)


@bp.get("/workflows", responses={200: WorkflowList}, security=needs("read"))
def list_workflows(query: WorkflowQuery) -> Response:
    """Workflows, newest first, by name and state."""
    return answer(workflows.list_workflows(services().db, query.workflow, query.state, query.limit, query.before))


@bp.get("/workflows/<workflow_id>", responses={200: Workflow}, security=needs("read"))
def get_workflow(path: WorkflowPath) -> Response:
    """A workflow with its steps (each with its event) and the signals it received."""
    return answer(workflows.get(services().db, path.workflow_id))


@bp.post("/workflows/<workflow_id>/signals/<name>", responses={201: WorkflowSignal}, security=needs("write"))
def signal_workflow(path: SignalPath, body: SignalBody) -> Response:
    """Send a signal: a `wait_for(name)` returns its value, also one that begins after the signal came."""
    return answer(workflows.signal(services().db, path.workflow_id, path.name, body.value), 201)


@bp.post("/workflows/<workflow_id>/cancel", responses={200: Workflow}, security=needs("write"))
def cancel_workflow(path: WorkflowPath) -> Response:
    """Cancel: its steps not yet started are cancelled, and where it waits it stops and runs its compensations."""
    return answer(workflows.cancel(services().db, path.workflow_id))
