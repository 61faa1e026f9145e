"""Running one claimed attempt, the same way whichever role runs it (the dispatcher for inline handlers,
the worker pool for the rest): call its kind, turn what happened into an Outcome, learn its pace; and
giving attempts back when they will not run here."""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

import audit
import crashpoints
import jsonsafe
from config import Settings
from db import Database
from engine import queries
from engine.kinds import Attempt, AttemptFailed, Kinds
from engine.pace import Pace
from engine.queries import Claimed, Outcome
from engine.role import TRANSIENT
from metrics import Metrics

log = logging.getLogger("punctual.running")

MAX_ERROR_CHARS = 4000  # last_error and history keep this much of an error message


def clean_error(text: str) -> str:
    """An error message a text column can hold (no NUL, no lone surrogate) and of bounded size (a remote
    answer may be huge)."""
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "\u2026"


class Runner:
    """Calls attempts and makes their outcomes. Holds no thread: the roles call it."""

    def __init__(self, db: Database, settings: Settings, kinds: Kinds, pace: Pace, metrics: Metrics) -> None:
        self.db = db
        self.settings = settings
        self.kinds = kinds
        self.pace = pace
        self.metrics = metrics
        self.worker = settings.instance_name
        # The run-time histogram's child per kind: labels() looked it up again for every attempt, under a lock.
        self._run_time: dict[str, Any] = {}

    def call(self, row: Claimed) -> tuple[bool, Any, Optional[str]]:
        """Run one attempt's callback: (ok, result, error). Never raises: any error is a failed attempt."""
        attempt = Attempt(event_id=row.id, attempt=row.attempts, callback=row.callback, kind=row.kind,
                          target=row.target, config=row.config or {}, payload=row.payload,
                          timeout=row.timeout_seconds, secret=row.signing_secret)
        try:
            result = self.kinds.run(attempt)
            # One value jsonb refuses would fail the whole batch of outcomes it is written with.
            problem = jsonsafe.problem(result, surrogates=False, max_depth=10_000)
            if problem:
                raise AttemptFailed(f"the callback's result is not storable as JSON: {problem}")
            return True, result, None
        except AttemptFailed as exc:
            return False, None, str(exc)
        except (TypeError, ValueError) as exc:
            return False, None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - any handler error is a failed attempt
            log.warning("callback %s raised on event %s attempt %s", row.callback, row.id, row.attempts,
                        exc_info=True)
            return False, None, f"{type(exc).__name__}: {exc}"

    def run(self, row: Claimed, started: float, started_wall: float) -> Outcome:
        """Call the attempt and make its outcome; `started` (monotonic) and `started_wall` (epoch) are when it
        began, as its worker saw it. The crash points are where tests/faults kill the process."""
        crashpoints.reached("after_claim")
        ok, result, error = self.call(row)
        duration = time.monotonic() - started
        self.pace.learn(row.callback_id, duration)
        run_time = self._run_time.get(row.kind)
        if run_time is None:
            run_time = self._run_time[row.kind] = self.metrics.run_time.labels(row.kind)
        run_time.observe(duration)
        crashpoints.reached("before_outcome")
        return self.outcome(row, ok, result, error, duration, started_wall)

    def outcome(self, row: Claimed, ok: bool, result: Any, error: Optional[str], duration: float,
                started: Optional[float]) -> Outcome:
        delay = 0.0 if ok else queries.retry_delay(row.attempts, self.settings.retry_base_seconds,
                                                    self.settings.retry_max_seconds)
        return Outcome(row.id, row.attempts, ok, result, None if error is None else clean_error(error),
                       delay, duration, started)

    def observe_start(self, row: Claimed, started_wall: float) -> None:
        """Lateness as the callback sees it: from scheduled_for to the moment it begins (for an occurrence of a
        schedule, scheduled_for is its instant)."""
        late = max(started_wall - row.scheduled_for.timestamp(), 0.0)
        self.metrics.lateness.observe(late)
        if row.schedule_id is not None:
            self.metrics.schedule_lateness.labels(str(row.schedule_id)).observe(late)

    def give_back(self, rows: list[Claimed], reason: str, started: bool = False) -> None:
        """Release attempts that will not run (or finish) here: due now for anyone. One that never started is
        not counted; one that started keeps its number (see queries.release)."""
        if not rows:
            return
        try:
            released = queries.release(self.db, self.worker, [row.key for row in rows], reason, started=started)
        except TRANSIENT as exc:
            log.error("could not release %d attempts (%s); their leases will expire", len(rows), exc)
            return
        for row in released:
            audit.record("attempt_released", row, worker=self.worker, error=reason)
