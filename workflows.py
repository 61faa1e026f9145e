"""Durable workflows (DESIGN.md "Workflows"): the programming model and its replay, with no database in sight.

A workflow is a function registered with `@workflow("name")` in a handler module (PYTHON_HANDLER_MODULES):

    from workflows import workflow, StepFailed

    @workflow("trip")
    def trip(ctx, order):
        car = ctx.step("reserve_car", order)
        ctx.on_failure("cancel_car", {"reservation": car})
        ...

It is durable by replay: every advance calls the function again from the top with the steps recorded so far
(`Record`s, read from the database by controllers.workflows); a recorded step returns its result at once, and
the first step without one is handed back as a `NewStep` to make, after which the run suspends. So a crash
anywhere loses nothing: the records are the state, and the same records give the same decisions. That is also
why a workflow function must be deterministic (no clock, randomness or I/O outside its steps: `ctx.now()` is a
recorded step) and why code that asks for other steps than those recorded fails instead of going on.

A leaf module like handlers.py: the controllers advance workflows through `replay()` and the engine never
imports user code by another path.
"""
from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, TypeVar

import jsonsafe

__all__ = ["WORKFLOWS", "Context", "Decision", "NewStep", "Record", "Signal", "StepFailed", "WorkflowCancelled",
           "replay", "workflow"]

Workflow = Callable[["Context", Any], Any]
W = TypeVar("W", bound=Workflow)

WORKFLOWS: dict[str, Workflow] = {}  # name -> function, as registered (a later registration replaces)

MAX_ERROR_CHARS = 4000


def workflow(name: str) -> Callable[[W], W]:
    """Register `fn(ctx, input)` as the workflow `name`."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError("a workflow name is 1 to 200 characters")

    def register(fn: W) -> W:
        if len(inspect.signature(fn).parameters) != 2:
            raise TypeError(f"workflow {name!r} must take (ctx, input)")
        WORKFLOWS[name] = fn
        return fn

    return register


class StepFailed(Exception):
    """A step ended without a result: its event failed after its attempts, or was cancelled. Catch it to go on
    another way; let it escape and the workflow fails and runs its compensations."""

    def __init__(self, step: int, callback: str, error: Optional[str]) -> None:
        super().__init__(f"step {step} ({callback}) failed: {error or 'no error message'}")
        self.step = step
        self.callback = callback
        self.error = error


class WorkflowCancelled(BaseException):
    """Raised at the point where a cancelled workflow was waiting. A BaseException, like KeyboardInterrupt,
    so that a workflow's `except Exception` cannot swallow a cancellation and go on as if nothing happened."""


class _Suspend(BaseException):
    """The run reached a step that has not ended: stop here until it does. Never seen by workflow code's
    `except Exception` (a BaseException), or a broad handler would turn 'not yet' into a wrong branch."""


class _Mismatch(BaseException):
    """The code asks for another step than the one recorded at this number."""


# -- what replay reads and what it decides ----------------------------------------------------

@dataclass
class Record:
    """One recorded step, as stored in workflow_steps."""
    step: int
    kind: str                      # call, sleep, signal, now
    name: str                      # the callback, the signal's name, '' for sleep and now
    state: str                     # pending (its event runs), waiting (a timer or a signal), completed, failed,
    result: Any = None             #   cancelled (its event was cancelled)
    error: Optional[str] = None
    wake_at: Optional[datetime] = None
    compensation: bool = False


@dataclass
class Signal:
    """A signal received and not yet consumed by a wait_for, oldest first."""
    id: int
    name: str
    value: Any


@dataclass
class NewStep:
    """A step to record (and, for a call, its event to make)."""
    step: int
    kind: str
    name: str
    state: str
    payload: Any = None
    result: Any = None
    wake_at: Optional[datetime] = None
    signal_id: Optional[int] = None
    compensation: bool = False


@dataclass
class Resolved:
    """A waiting step that has ended now: its timer passed or its signal came."""
    step: int
    result: Any
    signal_id: Optional[int] = None


@dataclass
class Decision:
    """What one replay decided. `outcome`: suspended, completed, failed or cancelled."""
    outcome: str
    new_steps: list[NewStep] = field(default_factory=list)
    resolved: list[Resolved] = field(default_factory=list)
    result: Any = None
    error: Optional[str] = None
    due_at: Optional[datetime] = None        # suspended: when to advance again without being woken
    waiting: bool = False                    # suspended on timers or signals only (state 'waiting')
    waiting_on: Optional[str] = None         # in words, for people
    cancel_step: Optional[int] = None        # where a cancellation interrupted it


# -- the context ----------------------------------------------------------------------------

class Context:
    """What a workflow function calls. Every method is a step, numbered in the order the code calls them."""

    def __init__(self, workflow_id: str, records: dict[int, Record], signals: Sequence[Signal], now: datetime,
                 cancel_requested: bool, cancel_step: Optional[int]) -> None:
        self.workflow_id = workflow_id
        self._records = records
        self._signals = list(signals)
        self._now = now
        self._cancel_requested = cancel_requested
        self._cancel_step = cancel_step
        self._counter = 0
        self._compensations: list[tuple[str, Any]] = []
        self._compensating = False
        self.decision = Decision("suspended")
        self._due: list[datetime] = []
        self._waiting_on: list[str] = []
        self._only_timers = True

    # -- the public model --------------------------------------------------------------------

    def step(self, callback: str, payload: Any = None) -> Any:
        """Run `callback` with `payload` as a step (an event of any kind); its result, or StepFailed."""
        return self._calls([(callback, payload)], single=True)[0]

    def all(self, calls: Sequence[tuple[str, Any]]) -> list[Any]:
        """Run several steps at once, given as (callback, payload) pairs; their results in the same order.
        Raises the first StepFailed (in order) once every one of them has ended."""
        calls = [(str(callback), payload) for callback, payload in calls]
        return self._calls(calls, single=False) if calls else []

    def sleep(self, seconds: float) -> None:
        """A durable timer: the run goes on `seconds` after this step was first reached, across restarts."""
        self._timer(lambda start: start + timedelta(seconds=float(seconds)))

    def sleep_until(self, instant: datetime) -> None:
        """A durable timer until `instant` (an aware datetime; a naive one is UTC)."""
        when = instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)
        self._timer(lambda start: when)

    def wait_for(self, signal: str, timeout: Optional[float] = None) -> Any:
        """Wait for the signal `signal` and return its value; None when `timeout` seconds pass first. A signal
        sent before the workflow waits for it is kept for this wait."""
        number = self._next("signal", signal)
        record = self._records.get(number)
        if record is not None:
            if record.state == "completed":
                return record.result
            self._check_cancel(number)
            return self._wait_resolve(number, signal, record.wake_at, new=False)
        self._check_cancel(number)
        wake_at = self._now + timedelta(seconds=float(timeout)) if timeout is not None else None
        return self._wait_resolve(number, signal, wake_at, new=True)

    def now(self) -> datetime:
        """The time, recorded: replays see the instant the first run saw."""
        number = self._next("now", "")
        record = self._records.get(number)
        if record is not None:
            return datetime.fromisoformat(record.result)
        value = self._now.isoformat()
        self._add(NewStep(number, "now", "", "completed", result=value, compensation=self._compensating))
        return self._now

    def on_failure(self, callback: str, payload: Any = None) -> None:
        """Register a compensation: if the workflow fails or is cancelled later, `callback` runs as a step with
        `payload`, the newest registered first (a saga). Not a step itself: registering is replayed."""
        self._compensations.append((str(callback), payload))

    # -- machinery ---------------------------------------------------------------------------

    def _next(self, kind: str, name: str) -> int:
        self._counter += 1
        number = self._counter
        record = self._records.get(number)
        if record is not None and (record.kind != kind or record.name != name):
            asked = f"{kind} {name!r}" if name else kind
            was = f"{record.kind} {record.name!r}" if record.name else record.kind
            raise _Mismatch(f"the workflow's code no longer matches its recorded steps: step {number} was {was}, "
                            f"the code now asks for {asked}")
        return number

    def _add(self, new: NewStep) -> None:
        self.decision.new_steps.append(new)
        self._records[new.step] = Record(new.step, new.kind, new.name, new.state, new.result, None, new.wake_at,
                                         new.compensation)

    def _check_cancel(self, number: int) -> None:
        """A cancelled workflow stops at the first step that has not ended (or where it stopped before)."""
        if self._compensating:
            return
        if self._cancel_step is not None and number >= self._cancel_step:
            raise WorkflowCancelled()
        if self._cancel_requested:
            self.decision.cancel_step = number
            raise WorkflowCancelled()

    def _calls(self, calls: list[tuple[str, Any]], single: bool) -> list[Any]:
        numbers = [self._next("call", callback) for callback, _ in calls]
        # A running step is let finish before a cancellation interrupts the group: its compensation (registered
        # after it returns) must see it, and nothing may end the workflow while one of its steps still runs.
        running = [n for n in numbers if n in self._records and self._records[n].state == "pending"]
        pending = []
        for number, (callback, payload) in zip(numbers, calls):
            record = self._records.get(number)
            if record is None:
                if not running:
                    self._check_cancel(number)
                elif self._cancel_requested and not self._compensating:
                    continue  # not started, and never to be: the cancellation stops the group once it settles
                self._add(NewStep(number, "call", callback, "pending", payload=payload,
                                  compensation=self._compensating))
                pending.append(number)
            elif record.state == "pending":
                pending.append(number)
            elif record.state == "cancelled" and self._cancel_requested and not self._compensating and not running:
                self._check_cancel(number)
        if pending:
            self._only_timers = False
            names = ", ".join(f"{n} ({calls[numbers.index(n)][0]})" for n in pending)
            self._waiting_on.append(f"step {names}" if len(pending) == 1 else f"steps {names}")
            raise _Suspend()
        results = []
        for number, (callback, _) in zip(numbers, calls):
            record = self._records[number]
            if record.state != "completed":
                error = record.error if record.state == "failed" else f"its event was cancelled: {record.error}"
                raise StepFailed(number, callback, error)
            results.append(record.result)
        return results

    def _timer(self, when: Callable[[datetime], datetime]) -> None:
        number = self._next("sleep", "")
        record = self._records.get(number)
        if record is not None and record.state == "completed":
            return
        self._check_cancel(number)
        if record is None:
            wake_at = when(self._now)
            if wake_at <= self._now:
                self._add(NewStep(number, "sleep", "", "completed", wake_at=wake_at, compensation=self._compensating))
                return
            self._add(NewStep(number, "sleep", "", "waiting", wake_at=wake_at, compensation=self._compensating))
        else:
            wake_at = record.wake_at or self._now
            if wake_at <= self._now:
                self._resolve(number, None)
                return
        self._due.append(wake_at)
        self._waiting_on.append(f"step {number}: sleep until {wake_at.isoformat()}")
        raise _Suspend()

    def _wait_resolve(self, number: int, signal: str, wake_at: Optional[datetime], new: bool) -> Any:
        for index, received in enumerate(self._signals):
            if received.name == signal:
                del self._signals[index]
                if new:
                    self._add(NewStep(number, "signal", signal, "completed", result=received.value,
                                      wake_at=wake_at, signal_id=received.id, compensation=self._compensating))
                else:
                    self._resolve(number, received.value, received.id)
                return received.value
        if wake_at is not None and wake_at <= self._now:
            if new:
                self._add(NewStep(number, "signal", signal, "completed", wake_at=wake_at,
                                  compensation=self._compensating))
            else:
                self._resolve(number, None)
            return None
        if new:
            self._add(NewStep(number, "signal", signal, "waiting", wake_at=wake_at, compensation=self._compensating))
        if wake_at is not None:
            self._due.append(wake_at)
        until = f" until {wake_at.isoformat()}" if wake_at else ""
        self._waiting_on.append(f"step {number}: signal {signal!r}{until}")
        raise _Suspend()

    def _resolve(self, number: int, result: Any, signal_id: Optional[int] = None) -> None:
        self.decision.resolved.append(Resolved(number, result, signal_id))
        record = self._records[number]
        record.state, record.result = "completed", result

    def _suspended(self) -> None:
        self.decision.outcome = "suspended"
        self.decision.due_at = min(self._due) if self._due else None
        self.decision.waiting = self._only_timers
        self.decision.waiting_on = "; ".join(self._waiting_on) or None

    def _compensate(self, error: str) -> list[str]:
        """Run the compensations registered so far, newest first, each as a step; a failed one is noted and the
        others still run. Suspends like any step."""
        self._compensating = True
        failures = []
        for callback, payload in reversed(self._compensations):
            try:
                self.step(callback, payload)
            except StepFailed as exc:
                failures.append(str(exc))
        return failures


def replay(fn: Workflow, workflow_id: str, input_value: Any, records: dict[int, Record], signals: Sequence[Signal],
           now: datetime, cancel_requested: bool = False, cancel_step: Optional[int] = None) -> Decision:
    """Run `fn` from the top against the records and decide what happens next. Never raises for what the
    workflow's code does: its errors are the workflow's failure."""
    ctx = Context(workflow_id, dict(records), signals, now, cancel_requested, cancel_step)
    decision = ctx.decision
    try:
        try:
            result = fn(ctx, input_value)
        except _Suspend:
            ctx._suspended()
            return decision
        except _Mismatch as exc:
            decision.outcome, decision.error = "failed", str(exc)  # no compensations: the code is not the one
            return decision                                           # that registered them
        except WorkflowCancelled:
            failures = ctx._compensate("cancelled")
            decision.outcome = "cancelled"
            decision.error = "cancelled" + (f"; compensations failed: {'; '.join(failures)}" if failures else "")
            return decision
        except BaseException as exc:  # noqa: BLE001 - the workflow's own error (even sys.exit()): it fails, and
            error = _describe(exc)     # its compensations run; the runner's thread must never die of it
            failures = ctx._compensate(error)
            decision.outcome = "failed"
            decision.error = _clip(error + (f"; compensations failed: {'; '.join(failures)}" if failures else ""))
            return decision
    except _Suspend:
        ctx._suspended()  # a compensation step has not ended yet
        return decision
    except _Mismatch as exc:
        decision.outcome, decision.error = "failed", str(exc)
        return decision
    problem = jsonsafe.problem(result, surrogates=False, max_depth=10_000)
    if problem:
        decision.outcome, decision.error = "failed", f"the workflow's result is not storable as JSON: {problem}"
        return decision
    decision.outcome, decision.result = "completed", result
    return decision


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StepFailed):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1:]
    at = f" (at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno})" if where else ""
    return _clip(f"{type(exc).__name__}: {exc}{at}")


def _clip(text: str) -> str:
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "\u2026"
