"""The engine of one instance: its roles, wired together. docs/architecture.md has a paragraph per role.

    listener ──changes──▶ engine._on_changes ──▶ scheduler (timers) ──due──▶ dispatcher
                                   └──── a few new due ids ──── offer ────▶ dispatcher
    dispatcher ──claims──▶ inline handlers (here) | worker pool ──outcomes──▶ completer
    lease keeper: renews waiting leases, rescues expired ones;  sweeper: claims due, refills timers

Start order: what receives work before what sends it (completer, workers, dispatcher, then the timers,
the listener, which catches up from the table, and the keepers). Stop order: the dispatcher first (no
new claims or starts), then what feeds it, then running attempts finish within the grace or are given
back, and the completer writes the last outcomes.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from config import Settings
from db import Database
from engine import queries
from engine.completer import Completer
from engine.dispatcher import Dispatcher
from engine.inflight import Inflight
from engine.kinds import Kinds
from engine.lease_keeper import LeaseKeeper
from engine.listener import Listener
from engine.pace import Pace
from engine.planner_stats import PlannerStats
from engine.queries import Change
from engine.retention import Retention
from engine.role import Role
from engine.running import Runner
from engine.schedule_keeper import ScheduleKeeper
from engine.scheduler import Scheduler
from engine.sweeper import Sweeper
from engine.workers import WorkerPool
from engine.workflow_runner import WorkflowRunner
from metrics import Metrics

log = logging.getLogger("punctual.engine")

MAX_ARMED = 50_000  # a hard bound on timers in memory (~1 KB each in APScheduler), whatever the horizon holds

# Called with each batch of changes (state None = deleted), from the listener's thread: e.g. live pages.
Watcher = Callable[[list[Change]], None]


class Engine:
    def __init__(self, db: Database, settings: Settings, metrics: Metrics, kinds: Optional[Kinds] = None,
                 watchers: Optional[list[Watcher]] = None) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.watchers: list[Watcher] = list(watchers or [])
        self.inflight = Inflight()
        self.pace = Pace(settings.worker_threads, settings.claim_batch)
        self.runner = Runner(db, settings, kinds or Kinds(settings), self.pace, metrics)
        self.planner_stats = PlannerStats(db)
        self.completer = Completer(db, settings, metrics, on_written=self._freed)
        self.lease_keeper = LeaseKeeper(db, settings, self.inflight, metrics, on_rescued=self._claim_due)
        self.pool = WorkerPool(settings, self.inflight, self.runner, self.completer, self.pace, metrics,
                               lease_check=self.lease_keeper.check, on_free=self._freed)
        self.dispatcher = Dispatcher(db, settings, self.inflight, self.pool, self.runner, self.completer,
                                     self.pace, self.planner_stats)
        # A timer names its event: claimed by id, a primary-key lookup, like a new event's offer (W2's lateness).
        self.scheduler = Scheduler(settings.horizon_seconds, on_due=self.dispatcher.offer, max_armed=MAX_ARMED)
        self.workflow_runner = WorkflowRunner(db, settings, metrics)
        self.listener = Listener(db, metrics, settings.listen_timeout_seconds, settings.reconnect_max_seconds,
                                 on_changes=self._on_changes, on_connect=self._caught_up,
                                 on_workflows=self.workflow_runner.wake)
        self.sweeper = Sweeper(settings, claim_due=self._claim_due, refill=self.catch_up)
        self.schedule_keeper = ScheduleKeeper(db, settings, metrics)
        self.retention = Retention(db, settings, metrics)
        self.started = False

    @property
    def roles(self) -> list[Role]:
        return [self.completer, self.pool, self.dispatcher, self.listener, self.lease_keeper, self.sweeper,
                self.schedule_keeper, self.retention, self.workflow_runner]

    def start(self) -> None:
        # Schedules' missed occurrences get their catch-up policy before anything can claim them.
        try:
            self.schedule_keeper.catch_up_now()
        except Exception as exc:  # noqa: BLE001 - the keeper's first round catches up instead
            log.warning("schedule catch-up at start failed (%s); the schedule keeper will retry", exc)
        self.completer.start()
        self.pool.start()
        self.dispatcher.start()
        self.scheduler.start()
        self.listener.start()
        self.lease_keeper.start()
        self.sweeper.start()
        self.schedule_keeper.start()
        self.retention.start()
        self.workflow_runner.start()
        self.started = True
        log.info("engine started as %s", self.settings.instance_name)

    @property
    def starter(self) -> Dispatcher:
        """What the API offers the events it creates to: those it reserves are inserted claimed and started once
        their transaction commits (Dispatcher.reserve)."""
        return self.dispatcher

    def wake(self) -> None:
        """Something may be due now (e.g. events just made from Kafka): claim it."""
        self._claim_due()

    def stop(self) -> None:
        if not self.started:
            return
        log.info("engine stopping")
        began = time.monotonic()
        # The dispatcher first: from now on nothing is claimed or started, and queued claims go back at
        # once; the listener, timers and keepers only feed it, so they can go while attempts finish.
        self.dispatcher.quiesce()
        self.schedule_keeper.stop()
        self.retention.stop()
        self.workflow_runner.stop()
        self.listener.stop()
        self.scheduler.stop()
        self.sweeper.stop(self.settings.sweep_seconds + 5)
        deadline = began + self.settings.shutdown_grace_seconds
        while self.inflight.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        grace = self.settings.shutdown_grace_seconds
        # A given-back attempt that had started keeps its number: it may have reached the outside world, and
        # receivers deduplicate on (event id, attempt).
        self.runner.give_back(self.inflight.take_all(),
                              f"released: instance shut down while the attempt ran past {grace:g} s", started=True)
        self.lease_keeper.stop()
        self.pool.stop()
        self.completer.stop(timeout=self.settings.reconnect_max_seconds * 2 + 1)
        self.planner_stats.stop()
        self.started = False
        log.info("engine stopped")

    @property
    def last_sweep(self) -> float:
        """Monotonic time of the last sweep (0 before the first)."""
        return self.sweeper.last_success

    def _claim_due(self) -> None:
        self.dispatcher.wake()

    def _freed(self) -> None:
        """A worker slot came free, or outcomes were written: the dispatcher claims again if it held back."""
        self.dispatcher.freed()

    # -- hints and catch-up -------------------------------------------------------------

    def _on_changes(self, hints: dict[int, Optional[Change]]) -> None:
        """Arm, move or drop timers from the notifications' hints; read back only ids without one. A few events
        due now are offered to the dispatcher to claim by id (see Dispatcher.offer)."""
        rows = [hint for hint in hints.values() if hint is not None]
        unknown = sorted(event_id for event_id, hint in hints.items() if hint is None)
        missing: set[int] = set()
        if unknown:
            fetched = queries.armable(self.db, unknown)
            rows += fetched
            missing = set(unknown) - {row.id for row in fetched}
        now = datetime.now(timezone.utc)
        due = [row.id for row in rows
               if row.state == "scheduled" and row.scheduled_for is not None and row.scheduled_for <= now]
        if due and len(due) <= max(1, self.settings.worker_threads // 2):
            self.dispatcher.offer(due)
            offered = set(due)
            self.scheduler.sync([row for row in rows if row.id not in offered], missing=missing)
        else:
            self.scheduler.sync(rows, missing=missing)
        self.metrics.armed.set(self.scheduler.armed_count)
        if self.watchers:
            changes = rows + [Change(event_id, None, None) for event_id in missing]
            for watcher in list(self.watchers):
                try:
                    watcher(changes)
                except Exception:  # noqa: BLE001 - a watcher (e.g. a live page) must never stall the listener
                    log.exception("change watcher failed")

    def _caught_up(self) -> None:
        """The listener (re)connected: what changed while it was away is read from the tables."""
        self.catch_up()
        self.workflow_runner.wake()

    def catch_up(self) -> None:
        """Claim what is due and arm what falls within the horizon, straight from the table."""
        self._claim_due()
        rows = queries.within_horizon(self.db, self.settings.horizon_seconds, self.scheduler.max_armed)
        self.scheduler.sync(rows)
        self.metrics.armed.set(self.scheduler.armed_count)

    # -- health -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        listener = self.listener
        listener_ok = listener.connected.is_set() and now - listener.last_heartbeat < \
            self.settings.listen_timeout_seconds * 3 + 5
        sweep = self.sweeper.last_success
        return {
            "listener": {
                "status": "ok" if listener_ok else "down",
                "connected": listener.connected.is_set(),
                "seconds_since_heartbeat": round(now - listener.last_heartbeat, 3) if listener.last_heartbeat
                else None,
                "reconnects": listener.reconnects,
                "last_error": listener.last_error,
            },
            "scheduler": {
                "status": "ok" if self.scheduler.running else "down",
                "armed": self.scheduler.armed_count,
                "horizon_seconds": self.settings.horizon_seconds,
            },
            "executor": {
                "status": "ok" if self.dispatcher.alive and self.completer.alive and self.pool.alive else "down",
                "inflight": len(self.inflight),
                "workers": self.settings.worker_threads,
                "last_error": self.dispatcher.last_error or self.completer.last_error,
                "seconds_since_sweep": round(now - sweep, 3) if sweep else None,
            },
            "roles": {"status": "ok" if all(role.alive for role in self.roles) else "down",
                      **{role.name: role.health() for role in self.roles}},
        }
