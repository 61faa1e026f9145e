"""The workflow runner: advances workflows, on every instance (controllers.workflows.advance_one).

What wakes it: the listener, on a notification of the workflows channel (a step's event ended, a signal came,
a workflow was made or cancelled; sent on commit by the same transaction); the end of the nearest durable
timer; and at most a second without either, in case a notification was missed (the listener reconnecting).
What it owns: nothing in memory. Each workflow is advanced under its row lock with SKIP LOCKED, so instances
share the work and never advance one workflow twice at once.
"""
from __future__ import annotations

from config import Settings
from controllers import workflows
from db import Database
from engine.role import Role
from metrics import Metrics

POLL_SECONDS = 1.0      # the longest it goes without looking, whatever the notifications say
BATCH = 200
BUSY_PAUSE = 0.05       # every due one was held by another instance: let that one finish before looking again
SET_ASIDE_SECONDS = 5.0  # an advance that failed is tried again this much later, not at once


class WorkflowRunner(Role):
    name = "workflow-runner"

    def __init__(self, db: Database, settings: Settings, metrics: Metrics) -> None:
        super().__init__(period=POLL_SECONDS, retry_cap=settings.reconnect_max_seconds)
        self.db = db
        self.metrics = metrics

    def describe(self) -> str:
        return f"woken by notifications and timers, looks at least every {POLL_SECONDS:g} s"

    def run_once(self) -> None:
        ids = workflows.due(self.db, BATCH)
        busy = 0
        for workflow_id in ids:
            if self.stopping:
                return
            try:
                advanced = workflows.advance_one(self.db, workflow_id)
            except self.transient:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a result PostgreSQL refuses: the others go on
                self.log.exception("advancing workflow %s failed; retrying it in %g s", workflow_id, SET_ASIDE_SECONDS)
                workflows.set_aside(self.db, workflow_id, f"{type(exc).__name__}: {exc}", SET_ASIDE_SECONDS)
                self.metrics.workflow_advances.labels("error").inc()
                continue
            self.metrics.workflow_advances.labels(advanced.outcome).inc()
            if advanced.outcome == "busy":
                busy += 1
            elif advanced.outcome in ("completed", "failed", "cancelled"):
                self.log.info("workflow %s %s", workflow_id, advanced.outcome)
        if ids and busy < len(ids):
            self.period = 0.0           # something moved: look again at once (its next step may be due now)
            return
        if ids:
            self.period = BUSY_PAUSE
            return
        until = workflows.seconds_to_next(self.db)
        self.period = POLL_SECONDS if until is None else min(POLL_SECONDS, max(until, 0.001))
