"""The workflow runner: advances workflows, on every instance (controllers.workflows.advance_one).

What wakes it: the listener, on a notification of the workflows channel (a step's event ended, a signal came,
a workflow was made or cancelled; sent on commit by the same transaction); the end of the nearest durable
timer; and at most a second without either, in case a notification was missed (the listener reconnecting).
What it owns: a few threads that advance the workflows due at once. An advance is about ten statements, so
its time is the database's round trips, not this process's CPU: one at a time topped out near 145 advances/s
(bench/workflows.py). Each workflow is advanced under its row lock with SKIP LOCKED, so threads and instances
share the work and never advance one workflow twice at once.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from config import Settings
from controllers import workflows
from db import Database
from engine.role import Role
from metrics import Metrics

POLL_SECONDS = 1.0      # the longest it goes without looking, whatever the notifications say
BATCH = 200
BUSY_PAUSE = 0.05       # every due one was held by another instance: let that one finish before looking again
SET_ASIDE_SECONDS = 5.0  # an advance that failed is tried again this much later, not at once
THREADS = 4             # advances at once; each holds a database connection while it runs


class WorkflowRunner(Role):
    name = "workflow-runner"

    def __init__(self, db: Database, settings: Settings, metrics: Metrics) -> None:
        super().__init__(period=POLL_SECONDS, retry_cap=settings.reconnect_max_seconds)
        self.db = db
        self.metrics = metrics
        self.threads = max(1, min(THREADS, settings.db_pool_size // 4))
        self._pool: Optional[ThreadPoolExecutor] = None

    def describe(self) -> str:
        return (f"{self.threads} threads, woken by notifications and timers, looks at least every "
                f"{POLL_SECONDS:g} s")

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="punctual-workflow")
        super().start()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def run_once(self) -> None:
        ids = workflows.due(self.db, BATCH)
        if not ids:
            until = workflows.seconds_to_next(self.db)
            self.period = POLL_SECONDS if until is None else min(POLL_SECONDS, max(until, 0.001))
            return
        assert self._pool is not None
        outcomes = list(self._pool.map(self._advance, ids))  # a transient error re-raises here: the role retries
        busy = outcomes.count("busy")
        # Something moved: look again at once (its next step may be due now). All held elsewhere: pause briefly.
        self.period = 0.0 if busy < len(ids) else BUSY_PAUSE

    def _advance(self, workflow_id: str) -> str:
        if self.stopping:
            return "busy"
        try:
            advanced = workflows.advance_one(self.db, workflow_id)
        except self.transient:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a result PostgreSQL refuses: the others go on
            self.log.exception("advancing workflow %s failed; retrying it in %g s", workflow_id, SET_ASIDE_SECONDS)
            workflows.set_aside(self.db, workflow_id, f"{type(exc).__name__}: {exc}", SET_ASIDE_SECONDS)
            self.metrics.workflow_advances.labels("error").inc()
            return "error"
        self.metrics.workflow_advances.labels(advanced.outcome).inc()
        if advanced.outcome in ("completed", "failed", "cancelled"):
            self.log.debug("workflow %s %s", workflow_id, advanced.outcome)
        return advanced.outcome
