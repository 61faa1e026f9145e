"""The engine of one instance: listener -> scheduler -> executor, plus the sweep that covers lost hints.

Start order matters: the scheduler and executor first (so wake-ups have somewhere to go), then
the listener, which LISTENs and then catches up from the table. Stop order is the reverse, and
the executor gives back whatever it could not finish.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import audit
from config import Settings
from controllers import attempts, claims
from db import Database
from engine.executor import DB_ERRORS, Executor
from engine.listener import Listener
from engine.scheduler import Scheduler
from metrics import Metrics

log = logging.getLogger("punctual.engine")

MAX_ARMED = 50_000  # a hard bound on timers in memory (~1 KB each in APScheduler), whatever the horizon holds


class Engine:
    def __init__(self, db: Database, settings: Settings, metrics: Metrics) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.executor = Executor(db, settings, metrics)
        self.scheduler = Scheduler(settings.horizon_seconds, on_due=self.executor.wake, max_armed=MAX_ARMED)
        self.listener = Listener(db, metrics, settings.listen_timeout_seconds, settings.reconnect_max_seconds,
                                 on_ids=self._on_notified, on_connect=self.catch_up)
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="punctual-sweeper", daemon=True)
        self.started = False
        self.last_sweep = 0.0
        # Called from the listener thread with each batch of changes ({"id", "state", "scheduled_for"};
        # state None = deleted); used to push live updates (Server-Sent Events). Must return quickly.
        self.watchers: list[Callable[[list[dict[str, Any]]], None]] = []

    def start(self) -> None:
        self.scheduler.start()
        self.executor.start()
        self.listener.start()
        self._sweeper.start()
        self.started = True
        log.info("engine started as %s", self.settings.instance_name)

    def stop(self) -> None:
        if not self.started:
            return
        log.info("engine stopping")
        # The executor first: from now on nothing is claimed or started, and queued claims go back
        # at once; the listener, timers and sweep only feed it, so they can go while it finishes.
        self.executor.quiesce()
        self._stop.set()
        self.listener.stop()
        self.scheduler.stop()
        self._sweeper.join(timeout=self.settings.sweep_seconds + 5)
        self.executor.stop(self.settings.shutdown_grace_seconds)
        self.started = False
        log.info("engine stopped")

    # -- hints and catch-up -------------------------------------------------------------

    def _on_notified(self, hints: dict[int, dict[str, Any] | None]) -> None:
        """Arm, move or drop timers from the notifications' hints; read back only ids without one."""
        rows = [hint for hint in hints.values() if hint is not None]
        unknown = sorted(event_id for event_id, hint in hints.items() if hint is None)
        missing: set[int] = set()
        if unknown:
            fetched = attempts.armable(self.db, unknown)
            rows += fetched
            missing = set(unknown) - {row["id"] for row in fetched}
        # A few events due now, on an idle instance: claimed right here (see Executor.take); the rest
        # arm, move or drop timers, and due ones wake the dispatcher.
        taken = self.executor.take(rows)
        self.scheduler.sync([row for row in rows if row["id"] not in taken] if taken else rows, missing=missing)
        self.metrics.armed.set(self.scheduler.armed_count)
        changes = rows + [{"id": event_id, "state": None, "scheduled_for": None} for event_id in missing]
        for watcher in list(self.watchers):
            try:
                watcher(changes)
            except Exception:  # noqa: BLE001 - a watcher (e.g. a live page) must never stall the listener
                log.exception("change watcher failed")

    def catch_up(self) -> None:
        """Claim what is due and arm what falls within the horizon, straight from the table."""
        self.executor.wake()
        rows = attempts.within_horizon(self.db, self.settings.horizon_seconds, self.scheduler.max_armed)
        self.scheduler.sync(rows)
        self.metrics.armed.set(self.scheduler.armed_count)

    # -- the safety net -----------------------------------------------------------------

    def _sweep_loop(self) -> None:
        """Every sweep period: claim anything due, rescue expired leases; refill the horizon now and then."""
        log.info("sweeper started (every %.1f s)", self.settings.sweep_seconds)
        refill_every = max(self.settings.horizon_seconds / 10, self.settings.sweep_seconds)
        next_refill = time.monotonic() + refill_every
        while not self._stop.wait(self.settings.sweep_seconds):
            try:
                self.executor.wake()
                rescued = attempts.rescue_expired(self.db)
                if rescued:
                    self.metrics.lease_rescues.inc(len(rescued))
                    for row in rescued:
                        audit.record("lease_expired", row, error=row["last_error"])
                    log.warning("rescued %d events whose lease expired", len(rescued))
                    self.executor.wake()
                claims.expire_leases(self.db)  # manual events whose holder ran out of time
                if time.monotonic() >= next_refill:
                    self.catch_up()
                    next_refill = time.monotonic() + refill_every
                self.last_sweep = time.monotonic()
            except DB_ERRORS as exc:
                log.warning("sweep failed (%s); next try in %.1f s", exc, self.settings.sweep_seconds)
            except Exception:  # noqa: BLE001 - the safety net must not fall
                log.exception("sweep failed; next try in %.1f s", self.settings.sweep_seconds)
        log.info("sweeper stopped")

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        listener_ok = self.listener.connected.is_set() and now - self.listener.last_heartbeat < \
            self.settings.listen_timeout_seconds * 3 + 5
        return {
            "listener": {
                "status": "ok" if listener_ok else "down",
                "connected": self.listener.connected.is_set(),
                "seconds_since_heartbeat": round(now - self.listener.last_heartbeat, 3)
                if self.listener.last_heartbeat else None,
                "reconnects": self.listener.reconnects,
                "last_error": self.listener.last_error,
            },
            "scheduler": {
                "status": "ok" if self.scheduler.running else "down",
                "armed": self.scheduler.armed_count,
                "horizon_seconds": self.settings.horizon_seconds,
            },
            "executor": {
                "status": "ok" if self.executor.alive else "down",
                "inflight": self.executor.inflight,
                "workers": self.settings.worker_threads,
                "last_error": self.executor.last_claim_error,
                "seconds_since_sweep": round(now - self.last_sweep, 3) if self.last_sweep else None,
            },
        }
