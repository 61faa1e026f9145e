"""The lease keeper: keeps this instance's leases and rescues the leases of others.

What it owns:
- renewal: a batch claim may hold more attempts than there are workers; the leases of those still waiting
  for a worker are pushed forward before they run out, or the sweep of another instance would hand them
  out again while they are still queued here. A waiting attempt whose lease is no longer ours is dropped.
- liveness: it heartbeats this instance in the `instances` table every fifth of INSTANCE_DEAD_SECONDS.
- rescue: the running attempts of an instance whose heartbeat is older than INSTANCE_DEAD_SECONDS (killed,
  or its host gone) go back to the queue at once; running events whose lease ran out go back too, or fail
  when no attempts are left; manual events whose holder's lease ran out go back to the queue for anyone
  (controllers.claims). Every instance rescues: SKIP LOCKED keeps them from fighting over a row.

What wakes it: its period (the shortest of the heartbeat, a quarter of the lease grace, SWEEP_SECONDS).
"""
from __future__ import annotations

import time
from typing import Callable

import audit
from config import Settings
from controllers import claims
from db import Database
from engine import queries
from engine.inflight import Inflight
from engine.queries import Claimed, Rescued
from engine.role import TRANSIENT, Role
from metrics import Metrics

# Before a waiting attempt starts: does its lease still cover it? (the row, seconds since its lease was set)
LeaseCheck = Callable[[Claimed, float], bool]


class LeaseKeeper(Role):
    name = "lease-keeper"

    def __init__(self, db: Database, settings: Settings, inflight: Inflight, metrics: Metrics,
                 on_rescued: Callable[[], None]) -> None:
        grace = settings.lease_grace_seconds
        super().__init__(period=min(settings.sweep_seconds, max(grace / 4, 0.05), settings.instance_dead_seconds / 5),
                         retry_cap=settings.reconnect_max_seconds)
        self.db = db
        self.settings = settings
        self.inflight = inflight
        self.metrics = metrics
        self.worker = settings.instance_name
        self._on_rescued = on_rescued  # rescued events are due now: the dispatcher may claim them
        self._next_rescue = 0.0

    def describe(self) -> str:
        return f"renewals every {self.period:g} s, rescues every {self.settings.sweep_seconds:g} s"

    def run_once(self) -> None:
        queries.heartbeat(self.db, self.worker)
        self.rescue_dead()
        self.renew_waiting()
        if time.monotonic() >= self._next_rescue:
            self.rescue()
            self._next_rescue = time.monotonic() + self.settings.sweep_seconds

    def rescue_dead(self) -> None:
        rescued = queries.rescue_dead(self.db, self.settings.instance_dead_seconds)
        self._rescued(rescued, "instance_dead", "attempts of instances that stopped heartbeating (%s)" %
                      ", ".join(sorted({str(row.worker) for row in rescued})), with_worker=True)

    def close(self) -> None:
        """A clean stop: this instance's attempts were given back, so it need not look dead to anyone."""
        try:
            queries.forget_instance(self.db, self.worker)
        except self.transient:
            pass  # the database is away: the row goes when someone sees it silent

    def rescue(self) -> None:
        self._rescued(queries.rescue_expired(self.db), "lease_expired", "events whose lease expired")
        claims.expire_leases(self.db)  # manual events whose holder ran out of time

    def _rescued(self, rows: list[Rescued], action: str, what: str, with_worker: bool = False) -> None:
        """Count, audit and log rescued attempts, and wake the dispatcher: they are due now."""
        if not rows:
            return
        self.metrics.lease_rescues.inc(len(rows))
        with audit.batch():
            for row in rows:
                extra = {"worker": row.worker} if with_worker else {}
                audit.record(action, row, error=row.last_error, **extra)
        self.log.warning("rescued %d %s", len(rows), what)
        self._on_rescued()

    def renew_waiting(self) -> None:
        grace = self.settings.lease_grace_seconds
        waiting = self.inflight.waiting(older_than=grace / 2)
        if not waiting:
            return
        now = time.monotonic()
        kept = queries.extend_leases(self.db, self.worker,
                                     [(*entry.row.key, entry.row.timeout_seconds + grace) for entry in waiting])
        lost = 0
        for entry in waiting:
            if entry.row.key in kept:
                entry.leased = now
            elif self.inflight.drop_if_waiting(entry):
                # Not ours any more: the worker that dequeues it finds it gone and skips it.
                lost += 1
                self.log.warning("event %s attempt %s lost its lease while waiting for a worker", *entry.row.key)
        if lost:
            self._on_rescued()

    def check(self, row: Claimed, waited: float) -> bool:
        """Before an attempt that waited for a worker starts, make sure its lease still covers it.

        One that waited more than half the grace since its lease was last set is renewed once more here, so
        it cannot outlive its lease while it runs; if it is no longer ours (rescued meanwhile) it is skipped.
        Attempts that start at once cost no query. Called from worker threads.
        """
        if waited <= self.settings.lease_grace_seconds / 2:
            return True
        try:
            if queries.extend_leases(self.db, self.worker,
                                     [(*row.key, row.timeout_seconds + self.settings.lease_grace_seconds)]):
                return True
        except TRANSIENT as exc:
            # Cannot tell; run it (delivery is at least once) rather than drop a claimed attempt.
            self.log.warning("could not renew the lease of event %s attempt %s (%s); running it anyway",
                             row.id, row.attempts, exc)
            return True
        self.log.warning("event %s attempt %s lost its lease while waiting %.1f s for a worker; not running it",
                         row.id, row.attempts, waited)
        return False
