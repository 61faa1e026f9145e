"""Claims due events, runs them in a bounded worker pool under a lease, and records their outcomes.

Three kinds of thread, each with a clean stop and a bounded wait:
- the dispatcher claims due events (woken by the scheduler, the listener, or its sweep period) and
  runs those of inline handlers itself (the listener may claim a few new ones by id: Executor.take);
- workers run one attempt each of the other kinds, with the callback's timeout;
- the completer writes outcomes in batches (one transaction per batch, history by trigger)
  and enforces timeouts: an attempt past its deadline is recorded as failed and its thread is
  replaced, so a hung callback never shrinks the pool.
"""
from __future__ import annotations

import itertools
from collections import Counter
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import audit
import crashpoints
from config import Settings
from controllers import attempts
from controllers.attempts import Outcome
from db import CONNECTION_ERRORS, Database
from engine import kinds
from engine.planner_stats import PlannerStats
from errors import Unavailable
from metrics import Metrics

log = logging.getLogger("punctual.executor")

DB_ERRORS = (Unavailable, *CONNECTION_ERRORS)
_STOP = object()
PREFETCH_WINDOW = 0.05  # seconds of work claimed ahead of the workers (see Executor.capacity)
MAX_ERROR_CHARS = 4000  # last_error and history keep this much of an error message


def unstorable(value: Any) -> str | None:
    """Why PostgreSQL's jsonb could not hold `value` as a result, or None if it can.

    json.dumps alone is not enough: it writes NaN/Infinity and \\u0000, which jsonb rejects, and one
    rejected value would fail the whole batch of outcomes it is written with.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if _has_nul(value):
        return "it contains a NUL character (\\u0000), which PostgreSQL cannot store"
    return None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def clean_error(text: str) -> str:
    """An error message a text column can hold (no NUL, no lone surrogate) and of bounded size (a remote
    answer may be huge)."""
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "\u2026"


@dataclass
class _Running:
    row: dict[str, Any]
    leased: float = 0.0  # monotonic time its lease (timeout + grace) was last set from
    started: float = 0.0
    started_wall: float | None = None  # epoch seconds, written as started_at with the outcome
    deadline: float = float("inf")
    thread: threading.Thread | None = None
    timed_out: bool = False


@dataclass(order=True)
class _Queued:
    sort_key: tuple
    row: dict[str, Any] = field(compare=False)


class Executor:
    def __init__(self, db: Database, settings: Settings, metrics: Metrics) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.worker = settings.instance_name
        # Mean run time of recent attempts (seconds); starts pessimistic, so a new instance claims little
        # ahead until it knows its callbacks are quick.
        self._mean_run = 0.05
        self._callback_mean: dict[int, float] = {}  # callback id -> mean run time of its recent attempts
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._claiming = True
        self._stop_began = 0.0
        self._work: queue.PriorityQueue[_Queued | Any] = queue.PriorityQueue()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._inflight: dict[tuple[int, int], _Running] = {}
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._order = itertools.count()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="punctual-dispatcher", daemon=True)
        self._completer = threading.Thread(target=self._complete_loop, name="punctual-completer", daemon=True)
        self._completer_stop = threading.Event()
        self._next_renewal = 0.0
        self._throttled = False  # the dispatcher waits for the completer (see _claim_available)
        self._inline_runs = 0  # threads inside _run_inline (the dispatcher, or the listener via take)
        self.planner_stats = PlannerStats(db)
        self.last_claim_error: str | None = None

    # -- life cycle ---------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Attempts this instance may hold: one per worker, plus what the workers will get through
        within PREFETCH_WINDOW at the recent pace (at least 1, at most claim_batch).

        Claiming ahead hides the claim's round trip when callbacks are quick (thousands a second);
        with slow callbacks it shrinks to one, so nothing waits long for a worker behind a slow
        webhook and a crash strands few claims that never started.
        """
        ahead = int(self.settings.worker_threads * PREFETCH_WINDOW / max(self._mean_run, 1e-5))
        return self.settings.worker_threads + max(1, min(self.settings.claim_batch, ahead))

    def start(self) -> None:
        for _ in range(self.settings.worker_threads):
            self._spawn_worker()
        self._completer.start()
        self._dispatcher.start()
        log.info("executor started: %d workers, capacity %d", self.settings.worker_threads, self.capacity)

    def wake(self) -> None:
        """Ask the dispatcher to claim now (something is, or may be, due)."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return self._dispatcher.is_alive() and self._completer.is_alive()

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def quiesce(self) -> None:
        """First step of a stop, at once: no new claims, no new starts; claimed-but-not-started
        attempts are given back uncounted. Attempts already running go on (see stop)."""
        if not self._claiming:
            return
        log.info("executor stopping: no new claims or starts, %d attempts in flight", self.inflight)
        self._stop_began = time.monotonic()
        self._claiming = False
        self._stop.set()
        self._wake.set()
        self._dispatcher.join(timeout=10)
        waiting = []
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Queued):
                waiting.append(item.row)
        with self._lock:
            for row in waiting:
                self._inflight.pop((row["id"], row["attempts"]), None)
        self._release(waiting, "released: instance shutting down before the attempt started")

    def stop(self, grace: float) -> None:
        """Stop claiming; let running attempts finish within `grace` of the stop's start, then give
        the rest back. A given-back attempt that had started keeps its number: it may have reached
        the outside world, and receivers deduplicate on (event id, attempt)."""
        self.quiesce()
        deadline = self._stop_began + grace
        while (self.inflight or self._inline_runs) and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._lock:
            left = [entry.row for entry in self._inflight.values()]
            for entry in self._inflight.values():
                entry.timed_out = True  # a late return is not recorded: the attempt was given back
            self._inflight.clear()
        self._release(left, f"released: instance shut down while the attempt ran past {grace:g} s",
                      started=True)
        for _ in list(self._workers):
            self._work.put(_Queued((float("inf"),), _STOP))
        self._completer_stop.set()
        self._completer.join(timeout=30)
        self.planner_stats.stop()
        log.info("executor stopped")

    # -- dispatcher ---------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        log.info("dispatcher started")
        backoff = 0.25
        while not self._stop.is_set():
            self._wake.wait(self.settings.sweep_seconds)
            self._wake.clear()
            try:
                self._claim_available()
                self.last_claim_error = None
                backoff = 0.25
            except DB_ERRORS as exc:
                self.last_claim_error = str(exc)
                log.warning("claim failed (%s); retrying in %.2f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_seconds)
            except Exception:  # noqa: BLE001 - the dispatcher must outlive any single bad round
                log.exception("claim round failed; retrying in %.2f s", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_seconds)
        log.info("dispatcher stopped")

    def _claim_available(self) -> None:
        cap = max(1, self.settings.worker_threads // 2)
        while self._claiming:
            free = self.capacity - self.inflight
            if free <= 0:
                return
            if self._outcomes.qsize() >= 2 * self.settings.claim_batch:
                # Inline attempts finish faster than outcomes are written: claim more once the completer
                # catches up (it wakes us), so finished-but-unrecorded work stays bounded.
                self._throttled = True
                return
            limit = min(free, self.settings.claim_batch)
            with self._lock:
                held = Counter(entry.row["callback_id"] for entry in self._inflight.values())
            # Callbacks known to be quick may take every worker; the others (slow, or not yet seen
            # finishing) hold at most half of them, so a burst of slow webhooks cannot make
            # everything else wait.
            quick = [cid for cid, mean in self._callback_mean.items() if mean <= PREFETCH_WINDOW]
            began = time.monotonic()
            rows = attempts.claim_due(self.db, self.worker, limit, self.settings.lease_grace_seconds,
                                      held=dict(held), cap=cap, uncapped=quick)
            self.planner_stats.claimed(len(rows), limit, time.monotonic() - began)
            if rows:
                self._accept(rows)
            if not rows or (len(rows) < limit and all(r["callback_id"] in quick for r in rows)):
                return

    def take(self, rows: list[dict[str, Any]]) -> set[int]:
        """Claim by id, here and now, the few events just seen to be due; the ids claimed. Only while
        this instance has idle workers, and for a handful at a time (a POST /events, a retry).

        Why: the listener learns of a new event at its commit, before anyone else in this process.
        Claiming there saves the hop to the dispatcher, which under a request's own work took about
        1.5 ms of the 4 from insert to start. An idle instance would claim them next anyway, so order
        by priority is kept; a batch, or a busy instance, goes through the dispatcher, whose claim
        orders the whole backlog and applies the per-callback caps. Several instances may try the
        same id: SKIP LOCKED gives it to one.
        """
        if not self._claiming or self._throttled:
            return set()
        now = time.time()
        due = [row["id"] for row in rows
               if row["state"] == "scheduled" and row["scheduled_for"] is not None
               and row["scheduled_for"].timestamp() <= now]
        if not due or len(due) > max(1, self.settings.worker_threads // 2) or \
                self.inflight + len(due) > self.settings.worker_threads:
            return set()
        try:
            claimed = attempts.claim_ids(self.db, self.worker, due, self.settings.lease_grace_seconds)
        except DB_ERRORS as exc:
            log.warning("claiming %d new events at once failed (%s); the dispatcher will claim them", len(due), exc)
            return set()
        if claimed:
            self._accept(claimed)
        return {row["id"] for row in claimed}

    def _accept(self, rows: list[dict[str, Any]]) -> None:
        with audit.batch():
            for row in rows:
                audit.record("attempt_started", row, worker=self.worker, scheduled_for=row["scheduled_for"],
                             started_at=row["started_at"])
        inline: list[dict[str, Any]] = []
        pooled: list[dict[str, Any]] = []
        for row in rows:
            (inline if kinds.runs_inline(row["kind"], row["target"]) else pooled).append(row)
        if pooled:
            with self._lock:
                for row in pooled:
                    self._inflight[(row["id"], row["attempts"])] = _Running(row, leased=time.monotonic())
            for row in pooled:
                self._work.put(_Queued((-row["priority"], row["scheduled_for"], next(self._order)), row))
            self.metrics.inflight.set(self.inflight)
        if inline:
            self._run_inline(inline)

    def _run_inline(self, rows: list[dict[str, Any]]) -> None:
        """Run attempts of inline handlers (pure and quick, see engine.kinds.python.handler) here, in the
        claim order, right after their claim.

        Why not through the workers: for a call of microseconds, the queue, the thread switch and the
        bookkeeping of a pooled attempt cost many times the call; here a batch of 256 runs back to back
        while the completer writes the previous batch's outcomes. What a pooled attempt promises holds:
        nothing starts once a stop began (the rest is given back uncounted), and each outcome goes
        through the completer like any other.
        """
        with self._lock:
            self._inline_runs += 1  # stop() waits for this to reach 0 before it stops the completer
        try:
            for index, row in enumerate(rows):
                if not self._claiming:
                    self._release(rows[index:], "released: instance shutting down before the attempt started")
                    return
                started, started_wall = time.monotonic(), time.time()
                self.metrics.lateness.observe(max(started_wall - row["scheduled_for"].timestamp(), 0.0))
                crashpoints.reached("after_claim")
                ok, result, error = self._call(row)
                duration = time.monotonic() - started
                self._learn(row, duration)
                crashpoints.reached("before_outcome")
                self._outcomes.put(self._outcome(row, ok, result, error, duration, started_wall))
                self.metrics.run_time.labels(row["kind"]).observe(duration)
        finally:
            with self._lock:
                self._inline_runs -= 1

    # -- workers ------------------------------------------------------------------------

    def _spawn_worker(self) -> None:
        thread = threading.Thread(target=self._worker_loop, name="punctual-worker", daemon=True)
        with self._lock:
            self._workers.add(thread)
        thread.start()

    def _worker_loop(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                item = self._work.get()
                if item.row is _STOP:
                    return
                self._run(item.row)
                with self._lock:
                    if me in self._abandoned:  # timed out; a replacement already took our place
                        self._abandoned.discard(me)
                        return
        finally:
            with self._lock:
                self._workers.discard(me)

    def _run(self, row: dict[str, Any]) -> None:
        key = (row["id"], row["attempts"])
        with self._lock:
            entry = self._inflight.get(key)
            if entry is None:  # released during shutdown before we got to it
                return
            leased = entry.leased
        if not self._keep_lease(row, time.monotonic() - leased):
            with self._lock:
                self._inflight.pop(key, None)
            self._wake.set()
            return
        with self._lock:
            if self._inflight.get(key) is not entry:  # released during shutdown meanwhile
                return
            if not self._claiming:  # stopping: nothing starts after the stop began; give it back
                del self._inflight[key]
                stopping = True
            else:
                stopping = False
                entry.started = time.monotonic()
                entry.started_wall = time.time()
                entry.deadline = entry.started + row["timeout_seconds"]
                # Lateness as the callback sees it: from scheduled_for to a worker beginning it.
                self.metrics.lateness.observe(max(entry.started_wall - row["scheduled_for"].timestamp(), 0.0))
                entry.thread = threading.current_thread()
        if stopping:
            self._release([row], "released: instance shutting down before the attempt started")
            return
        crashpoints.reached("after_claim")
        ok, result, error = self._call(row)
        duration = time.monotonic() - entry.started
        self._learn(row, duration)
        crashpoints.reached("before_outcome")
        outcome = self._outcome(row, ok, result, error, duration, entry.started_wall)
        with self._lock:
            entry = self._inflight.pop(key, None)
            if entry is None or entry.timed_out:
                return  # already recorded as timed out, or given back at shutdown
            # Queued before the attempt leaves _inflight: stop() waits for _inflight to empty and
            # then stops the completer, which must find this outcome still to write.
            self._outcomes.put(outcome)
        self.metrics.run_time.labels(row["kind"]).observe(duration)
        self._wake.set()  # a slot is free

    def _call(self, row: dict[str, Any]) -> tuple[bool, Any, str | None]:
        """Run one attempt's callback: (ok, result, error). Never raises: any error is a failed attempt."""
        attempt = kinds.Attempt(
            event_id=row["id"], attempt=row["attempts"], callback=row["callback"], kind=row["kind"],
            target=row["target"], config=row["config"] or {}, payload=row["payload"],
            timeout=row["timeout_seconds"], secret=row.get("signing_secret"),
        )
        try:
            result = kinds.run(self.settings, attempt)
            problem = unstorable(result)
            if problem:
                raise kinds.AttemptFailed(f"the callback's result is not storable as JSON: {problem}")
            return True, result, None
        except kinds.AttemptFailed as exc:
            return False, None, str(exc)
        except (TypeError, ValueError) as exc:
            return False, None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - any handler error is a failed attempt
            log.warning("callback %s raised on event %s attempt %s", row["callback"], row["id"], row["attempts"],
                        exc_info=True)
            return False, None, f"{type(exc).__name__}: {exc}"

    def _learn(self, row: dict[str, Any], duration: float) -> None:
        """Fold a run time into the means that size the prefetch and decide which callbacks are quick.
        Unlocked: a lost update only blurs a mean."""
        self._mean_run = 0.9 * self._mean_run + 0.1 * duration
        previous = self._callback_mean.get(row["callback_id"])
        self._callback_mean[row["callback_id"]] = duration if previous is None else 0.8 * previous + 0.2 * duration

    def _keep_lease(self, row: dict[str, Any], waited: float) -> bool:
        """Before running an attempt that waited for a worker, make sure its lease still covers it.

        The lease (timeout + grace) is set at the claim and renewed while the attempt waits (see
        _renew_waiting). One that waited more than half the grace since then is renewed once more
        here, so it cannot outlive its lease while it runs; if it is no longer ours (rescued
        meanwhile) it is skipped. Attempts that start at once cost no query.
        """
        if waited <= self.settings.lease_grace_seconds / 2:
            return True
        key = (row["id"], row["attempts"])
        try:
            if attempts.extend_leases(self.db, self.worker,
                                      [(*key, row["timeout_seconds"] + self.settings.lease_grace_seconds)]):
                return True
        except DB_ERRORS as exc:
            # Cannot tell; run it (delivery is at least once) rather than drop a claimed attempt.
            log.warning("could not renew the lease of event %s attempt %s (%s); running it anyway",
                        row["id"], row["attempts"], exc)
            return True
        log.warning("event %s attempt %s lost its lease while waiting %.1f s for a worker; not running it",
                    row["id"], row["attempts"], waited)
        return False

    def _renew_waiting(self) -> None:
        """Renew the leases of claimed attempts still waiting for a worker, before they run out.

        A batch claim may hold more attempts than there are workers; without this, a backlog of
        slow callbacks would let the queued ones' leases expire, and the sweep would hand them
        out again while they are still queued here.
        """
        grace = self.settings.lease_grace_seconds
        now = time.monotonic()
        if now < self._next_renewal:
            return
        self._next_renewal = now + max(grace / 4, 0.05)
        with self._lock:
            waiting = [(key, entry) for key, entry in self._inflight.items()
                       if entry.thread is None and now - entry.leased > grace / 2]
        if not waiting:
            return
        try:
            kept = attempts.extend_leases(self.db, self.worker,
                                          [(*key, entry.row["timeout_seconds"] + grace) for key, entry in waiting])
        except DB_ERRORS as exc:
            log.warning("could not renew the leases of %d waiting attempts (%s)", len(waiting), exc)
            return
        lost = 0
        with self._lock:
            for key, entry in waiting:
                if key in kept:
                    entry.leased = now
                elif entry.thread is None and self._inflight.get(key) is entry:
                    # Not ours any more: the worker that dequeues it will find it gone and skip it.
                    del self._inflight[key]
                    lost += 1
                    log.warning("event %s attempt %s lost its lease while waiting for a worker", *key)
        if lost:
            self._wake.set()

    def _outcome(self, row: dict[str, Any], ok: bool, result: Any, error: str | None, duration: float,
                 started: float | None) -> Outcome:
        delay = attempts.retry_delay(row["attempts"], self.settings.retry_base_seconds,
                                     self.settings.retry_max_seconds)
        return Outcome(row["id"], row["attempts"], ok, result, None if error is None else clean_error(error),
                       0.0 if ok else delay, duration, started)

    # -- completer ----------------------------------------------------------------------

    def _complete_loop(self) -> None:
        log.info("completer started")
        backoff = 0.25
        pending: list[Outcome] = []
        while True:
            if not pending:
                try:
                    pending.append(self._outcomes.get(timeout=0.05))
                except queue.Empty:
                    self._enforce_timeouts()
                    self._renew_waiting()
                    if self._completer_stop.is_set():
                        break
                    continue
            while len(pending) < 1000:
                try:
                    pending.append(self._outcomes.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write_each(pending)
                pending = []
                backoff = 0.25
            except DB_ERRORS as exc:
                if self._completer_stop.is_set() and backoff >= self.settings.reconnect_max_seconds:
                    log.error("giving up on %d outcomes at shutdown (%s); their leases will expire and they "
                              "will be retried", len(pending), exc)
                    break
                log.warning("writing %d outcomes failed (%s); retrying in %.2f s", len(pending), exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_seconds)
            except Exception:  # noqa: BLE001 - the completer must outlive anything; leases cover the loss
                log.exception("dropping %d outcomes that could not be written; their leases will expire and "
                              "they will be retried", len(pending))
                pending = []
            self._enforce_timeouts()
            self._renew_waiting()
        log.info("completer stopped")

    def _write_each(self, outcomes: list[Outcome]) -> None:
        """Write a batch; if a value in it is refused, write them one by one so one bad outcome
        cannot hold up the others, and record the refused one as a failed attempt instead."""
        try:
            self._write(outcomes)
            return
        except DB_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a value PostgreSQL refuses
            log.error("writing %d outcomes failed (%s: %s); writing them one by one", len(outcomes),
                      type(exc).__name__, exc)
        for outcome in outcomes:
            try:
                self._write([outcome])
            except DB_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001
                log.error("outcome of event %s attempt %s refused (%s: %s); recording a failed attempt",
                          outcome.event_id, outcome.attempt, type(exc).__name__, exc)
                delay = attempts.retry_delay(outcome.attempt, self.settings.retry_base_seconds,
                                             self.settings.retry_max_seconds)
                self._write([Outcome(outcome.event_id, outcome.attempt, False, None,
                                     clean_error(f"outcome not recorded: {type(exc).__name__}: {exc}"),
                                     delay, outcome.duration, outcome.started)])

    def _write(self, outcomes: list[Outcome]) -> None:
        rows = attempts.record_outcomes(self.db, self.worker, outcomes)
        by_key = {(o.event_id, o.attempt): o for o in outcomes}
        with audit.batch():
            for row in rows:
                outcome = by_key.pop((row["id"], row["attempts"]))
                if row["state"] == "finished":
                    self.metrics.attempts.labels("succeeded").inc()
                    audit.record("attempt_succeeded", row, duration=outcome.duration, result=outcome.result)
                elif row["state"] == "scheduled":
                    self.metrics.attempts.labels("retry").inc()
                    audit.record("attempt_failed", row, duration=outcome.duration, error=row["last_error"],
                                 next_run=row["next_run"])
                else:
                    self.metrics.attempts.labels("failed").inc()
                    audit.record("event_failed", row, duration=outcome.duration, error=row["last_error"])
        for outcome in by_key.values():
            log.warning("outcome of event %s attempt %s not recorded: its lease was lost to another worker",
                        outcome.event_id, outcome.attempt)
        self.metrics.inflight.set(self.inflight)
        if self._throttled:
            self._throttled = False
            self._wake.set()

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        expired: list[_Running] = []
        with self._lock:
            for key, entry in list(self._inflight.items()):
                if entry.thread is not None and now > entry.deadline:
                    entry.timed_out = True
                    del self._inflight[key]
                    self._abandoned.add(entry.thread)
                    expired.append(entry)
                    # Queued while still under the lock, for the same reason as in _run.
                    self._outcomes.put(self._outcome(entry.row, False, None,
                                                     f"timed out after {entry.row['timeout_seconds']:g} s",
                                                     now - entry.started, entry.started_wall))
        for entry in expired:
            row = entry.row
            self._callback_mean[row["callback_id"]] = float(row["timeout_seconds"])  # hangs: slow by any measure
            log.warning("event %s attempt %s timed out after %g s; its thread is abandoned and replaced",
                        row["id"], row["attempts"], row["timeout_seconds"])
            self.metrics.attempts.labels("timeout").inc()
            self._spawn_worker()
            self._wake.set()

    def _release(self, rows: list[dict[str, Any]], reason: str, started: bool = False) -> None:
        if not rows:
            return
        try:
            released = attempts.release(self.db, self.worker, [(r["id"], r["attempts"]) for r in rows], reason,
                                        started=started)
        except DB_ERRORS as exc:
            log.error("could not release %d attempts (%s); their leases will expire", len(rows), exc)
            return
        for row in released:
            audit.record("attempt_released", row, worker=self.worker, error=reason)
