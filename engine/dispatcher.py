"""The dispatcher: claims due events for this instance, in priority order, and starts them.

What wakes it: a timer of the scheduler (an armed event is due), the listener (new due events, handed
over by id), a rescue, the sweeper, its own period; and a free slot in the worker pool or the completer
catching up, when its last claim held back (see freed). What it writes: the claim (state running,
attempt + 1, worker, lease), through queries.

Inline handlers (pure and quick, see engine.kinds.python.handler) run right here, in claim order, right
after their claim; the rest go to the worker pool. Why not everything through the workers: for a call of
microseconds, the queue, the thread switch and the bookkeeping of a pooled attempt cost many times the
call; here a batch of 256 runs back to back while the completer writes the previous batch's outcomes.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import audit
from config import Settings
from db import Database
from engine import queries
from engine.completer import MAX_BATCH, Completer
from engine.inflight import Inflight
from engine.kinds import Kinds
from engine.pace import Pace
from engine.planner_stats import PlannerStats
from engine.queries import Claimed
from engine.role import Role
from engine.running import Runner
from engine.workers import WorkerPool

# Attempts of inline handlers one creating request may insert claimed (see reserve): one batch of the completer's.
INLINE_AT_CREATION = MAX_BATCH
# A handler declared inline whose runs took longer than this on average is not claimed at creation: a batch of it
# would hold this instance's dispatcher for seconds.
INLINE_AT_CREATION_MEAN = 0.001
# Outcomes waiting for the completer above which a creating request first waits, up to ADMIT_SECONDS, for the
# backlog to come down (two of the completer's batches, see admit); past five times that (a completer that cannot
# keep up even so), nothing more is claimed at creation: what it ran would only pile up unrecorded.
INLINE_AT_CREATION_BACKLOG = 2 * MAX_BATCH
ADMIT_SECONDS = 2.0


class Dispatcher(Role):
    name = "dispatcher"

    def __init__(self, db: Database, settings: Settings, inflight: Inflight, pool: WorkerPool, runner: Runner,
                 completer: Completer, pace: Pace, planner_stats: PlannerStats) -> None:
        super().__init__(period=settings.sweep_seconds, retry_cap=settings.reconnect_max_seconds)
        self.db = db
        self.settings = settings
        self.inflight = inflight
        self.pool = pool
        self.runner = runner
        self.completer = completer
        self.pace = pace
        self.planner_stats = planner_stats
        self.worker = settings.instance_name
        self.claiming = True
        self._hinted: list[int] = []  # ids the listener or a timer saw become due, to claim by id (see offer)
        self._general = False  # woken for a claim of everything due (not only for offered ids)
        self._hinted_lock = threading.Lock()
        # Attempts inserted claimed by the transaction that created them (see reserve), committed, to start here;
        # and how many such claims are reserved or handed over but not yet started: they count as held.
        self._handed: list[Claimed] = []
        self._reserved = 0
        # Inline attempts inserted claimed by a large batch, to run here (see hand_over): not counted as held. Kept as
        # the creating request left them, (event, callback) rows, made into Claimed attempts in this role's thread.
        self._handed_inline: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []
        # The last claim of everything due stopped before it ran out of due events: at this instance's capacity,
        # at the completer's backlog, or at the cap of a slow callback. Only then does a freed slot call for a
        # claim (see freed).
        self._held_back = False

    def describe(self) -> str:
        return f"capacity {self.pace.capacity}"

    def offer(self, ids: list[int]) -> None:
        """Events just seen to become due: by the listener (an insert by plain SQL, Kafka or another instance, a
        retry) or by a timer at its event's time. Claim them by id at once.

        Why by id: a claim of these ids is a primary-key lookup, where the claim of everything due sorts the
        backlog; an idle instance would claim them next anyway, so priority order is kept. A batch, or a
        busy instance, goes through the ordinary claim, which orders the whole backlog and applies the
        per-callback caps. Several instances may offer the same id to themselves: SKIP LOCKED gives it to one.
        """
        with self._hinted_lock:
            self._hinted.extend(ids)
        super().wake()

    @property
    def lease_grace(self) -> float:
        return self.settings.lease_grace_seconds

    @staticmethod
    def runs_inline(kind: str, target: str) -> bool:
        """Whether an attempt of this callback runs in the thread that holds it (a pure and quick handler), not in
        the worker pool: one inserted claimed runs in the creating request's thread (see hand_over)."""
        return Kinds.runs_inline(kind, target)

    def reserve(self, pooled: int, inline: list[int]) -> bool:
        """Whether new due events may be inserted claimed by this instance, in the transaction that creates them
        (controllers.events.create_events): `pooled` of callbacks that run in the worker pool, and one of `inline`'s
        callbacks (ids) for each of the others. The creator then hands over what it inserted claimed once its
        transaction commits (hand_over), and withdraws the pooled ones it did not insert claimed.

        Why: the statement claims them only while no other due event waits (controllers.events), so an instance
        would claim them next anyway: claiming them as they are inserted changes nothing of who runs them or in
        which order, and saves the wait for the notification and the claim's own statement, commit and row
        versions (W1, W3 in bench/RESULTS.md).
          - Pooled attempts: only a few, when they fit among the free workers; they count as held until they
            start, so concurrent creations cannot claim more than the free workers.
          - Inline attempts, a whole batch of them, run in the creating request's thread or this role's (see
            hand_over): no worker is used, so they are not counted as held; but not those of a handler known to be
            slow, nor while the completer is far behind.
        """
        if not self.claiming or self.stopping:
            return False
        if inline and not self._inline_at_creation(inline):
            return False
        if not pooled:
            return True
        with self._hinted_lock:
            self._reserved += pooled
        if self._few_and_idle(pooled, reserved=True):
            return True
        self.withdraw(pooled)
        return False

    def admit(self, count: int) -> None:
        """Before a request creates `count` events: wait (bounded) while the completer is too far behind for their
        inline attempts to be run at creation (see reserve).

        Why wait rather than go the ordinary way: a client creating faster than outcomes are written would push its
        events into the backlog, and while any due event waits, no new one is claimed at creation (the order), so
        every later batch would take the slower road too (W1 fell from 14,700 to 8,500 events/s when that
        happened). Slowing the answer is the backpressure a client can act on; the events are the same."""
        if self.claiming and not self.stopping:
            self.completer.wait_below(INLINE_AT_CREATION_BACKLOG - min(count, INLINE_AT_CREATION), ADMIT_SECONDS)

    def _inline_at_creation(self, callbacks: list[int]) -> bool:
        if len(callbacks) > INLINE_AT_CREATION or self.completer.backlog > 5 * INLINE_AT_CREATION_BACKLOG:
            return False
        means = self.pace.means()
        return all(means.get(cid, 0.0) <= INLINE_AT_CREATION_MEAN for cid in set(callbacks))

    def withdraw(self, count: int) -> None:
        """Reserved pooled claims that were not made, or whose transaction rolled back: they never were."""
        with self._hinted_lock:
            self._reserved -= count

    def hand_over(self, created: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Events inserted claimed (see reserve), committed, with their callbacks' rows: started like this role's own
        claims, highest priority first. A few inline ones (pure and quick, see _run_inline) run right here, in the
        creating request's thread, before it answers: handed to another thread, an attempt waited for the
        interpreter until the request had written its answer (W3). A batch's inline ones run in this role's thread,
        so the request answers at once and the client's next batch is inserted while they run (W1); the others go
        to the worker pool through this role's thread. Once a stop has begun they are given back uncounted, like
        any claimed attempt that had not started."""
        quick = {callback["id"]: Kinds.runs_inline(callback["kind"], callback["target"]) for _, callback in created}
        inline = [pair for pair in created if quick[pair[1]["id"]]]
        pooled = _in_claim_order([pair for pair in created if not quick[pair[1]["id"]]])
        # A batch's inline ones are made into attempts in this role's thread too: the request answers sooner (W1).
        batch = len(inline) > max(1, self.settings.worker_threads // 2)
        here = [] if batch else _in_claim_order(inline)
        with self._hinted_lock:
            claiming = self.claiming
            if claiming:
                self._handed.extend(pooled)
                if batch:
                    self._handed_inline.append(inline)
            else:
                self._reserved -= len(pooled)
        if not claiming:
            self.runner.give_back(_in_claim_order(created), "released: instance shutting down before the attempt "
                                                            "started")
            return
        if pooled or batch:
            super().wake()
        if here:
            self._audit_started(here)
            self._run_inline(here)

    def wake(self) -> None:
        """Claim everything due now (something is, or may be, due)."""
        with self._hinted_lock:
            self._general = True
        super().wake()

    def freed(self) -> None:
        """A worker slot came free or the completer wrote outcomes: claim again if the last claim held back.

        Why not always: at a steady rate every attempt frees a slot, and a claim of everything due after each
        one found nothing (the listener's offers claim new events by id) but held the dispatcher, so the next
        offer waited behind it, and cost the database a statement per attempt.
        """
        if self._held_back:
            self.wake()

    def run_once(self) -> None:
        with self._hinted_lock:
            hinted, self._hinted = self._hinted, []
            general, self._general = self._general, False
            handed, self._handed = self._handed, []
            self._reserved -= len(handed)
            batches, self._handed_inline = self._handed_inline, []
        handed_inline = [row for created in batches for row in _in_claim_order(created)]
        if handed or handed_inline:
            self._accept(handed_inline + handed)
        if not hinted:
            # The period ran out, or a wake asked for it; a hand-over alone asks for no claim of everything due.
            general = general or not (handed or handed_inline)
        elif self.claiming and self._few_and_idle(len(hinted)):
            claimed = queries.claim_ids(self.db, self.worker, hinted, self.settings.lease_grace_seconds)
            if claimed:
                self._accept(claimed)
            # An offered id not claimed here was claimed already (by another instance, or by our own claim of
            # everything due before its notification came through), is locked by another transaction (which
            # notifies again if it moves the event), is not due yet by the database's clock, or is gone: a claim
            # of everything due now would find none of them, so none is made; the sweep claims whatever is due
            # every SWEEP_SECONDS, whatever the hints said.
        else:
            general = True
        if general:
            self._claim_available()

    def _few_and_idle(self, count: int, reserved: bool = False) -> bool:
        """`count` new attempts are few, and fit among this instance's free workers with what it holds and what is
        being claimed at creation (`reserved`: `count` is already among those)."""
        held = len(self.inflight) + self._reserved + (0 if reserved else count)
        return count <= max(1, self.settings.worker_threads // 2) and held <= self.settings.worker_threads \
            and not self._throttled()

    def _throttled(self) -> bool:
        # Inline attempts finish faster than outcomes are written: claim more once the completer catches up
        # (it wakes us), so finished-but-unrecorded work stays bounded.
        return self.completer.backlog >= 2 * self.settings.claim_batch

    def _claim_available(self) -> None:
        cap = max(1, self.settings.worker_threads // 2)
        self._held_back = False  # this claim takes what is due and free slots allow; a slot freed meanwhile adds none
        while self.claiming and not self.stopping:
            if self._full():
                # Held back: set before the capacity is read again, so a slot freed after that read finds it set
                # and wakes us (see freed), and one freed before it is seen here.
                self._held_back = True
                if self._full():
                    return
                self._held_back = False
            limit = min(self.pace.capacity - len(self.inflight) - self._reserved, self.settings.claim_batch)
            # Callbacks known to be quick may take every worker; the others (slow, or not yet seen finishing)
            # hold at most half of them, so a burst of slow webhooks cannot make everything else wait.
            quick = self.pace.quick()
            held = self.inflight.per_callback()
            began = time.monotonic()
            rows = queries.claim_due(self.db, self.worker, limit, self.settings.lease_grace_seconds,
                                     held=held, cap=cap, uncapped=quick)
            self.planner_stats.claimed(len(rows), limit, time.monotonic() - began)
            if rows:
                self._accept(rows)
            if not rows or (len(rows) < limit and all(row.callback_id in quick for row in rows)):
                # Nothing more is due, but what this claim held back from slow callbacks at their cap: a slot
                # of theirs coming free must claim again. Set first, then looked at again, as above.
                capped = [cid for cid, n in held.items() if n >= cap and cid not in quick]
                if not capped:
                    return
                self._held_back = True
                now_held = self.inflight.per_callback()
                if all(now_held.get(cid, 0) >= cap for cid in capped):
                    return

    def _full(self) -> bool:
        """No slot free for another claim: every attempt this instance may hold is held, or the completer is
        behind."""
        return self.pace.capacity - len(self.inflight) - self._reserved <= 0 or self._throttled()

    def _audit_started(self, rows: list[Claimed]) -> None:
        with audit.batch():
            for row in rows:
                audit.record("attempt_started", row, worker=self.worker, scheduled_for=row.scheduled_for,
                             started_at=row.started_at)

    def _accept(self, rows: list[Claimed]) -> None:
        self._audit_started(rows)
        inline, pooled = _split_inline(rows)
        if pooled:
            self.pool.submit(pooled)
        if inline:
            self._run_inline(inline)

    def _run_inline(self, rows: list[Claimed]) -> None:
        """What a pooled attempt promises holds here too: nothing starts once a stop began (the rest is given
        back uncounted), and each outcome goes through the completer like any other."""
        self.inflight.inline_began()  # a stop waits for inline runs to end before it stops the completer
        try:
            for index, row in enumerate(rows):
                if not self.claiming:
                    self.runner.give_back(rows[index:], "released: instance shutting down before the attempt "
                                                        "started")
                    return
                started, started_wall = time.monotonic(), time.time()
                self.runner.observe_start(row, started_wall)
                self.completer.put(self.runner.run(row, started, started_wall))
        finally:
            self.inflight.inline_ended()

    def quiesce(self) -> None:
        """The first step of a stop, at once: no new claims or starts; claimed attempts no worker has begun are
        given back uncounted. Attempts already running go on (the engine waits for them)."""
        if not self.claiming:
            return
        self.log.info("dispatcher stopping: no new claims or starts, %d attempts in flight", len(self.inflight))
        with self._hinted_lock:  # from here on, hand_over gives back instead of queueing (see there)
            self.claiming = False
        self.stop(timeout=10)
        with self._hinted_lock:
            handed, self._handed = self._handed, []
            self._reserved -= len(handed)
            batches, self._handed_inline = self._handed_inline, []
        handed_inline = [row for created in batches for row in _in_claim_order(created)]
        self.runner.give_back(handed_inline + handed + self.pool.drain_queued(),
                              "released: instance shutting down before the attempt started")


def _in_claim_order(created: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Claimed]:
    """Events inserted claimed, with their callbacks' rows, as attempts in the order a claim takes them."""
    rows = [queries.claimed_at_creation(event, callback) for event, callback in created]
    rows.sort(key=lambda row: (-row.priority, row.scheduled_for, row.id))
    return rows


def _split_inline(rows: list[Claimed]) -> tuple[list[Claimed], list[Claimed]]:
    """(the attempts run inline, the ones for the worker pool), each in claim order."""
    inline: list[Claimed] = []
    pooled: list[Claimed] = []
    for row in rows:
        (inline if Kinds.runs_inline(row.kind, row.target) else pooled).append(row)
    return inline, pooled
