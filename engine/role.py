"""The one lifecycle every background role shares: a thread that runs `run_once()` in a loop.

Each role of the engine (listener, dispatcher, worker pool, completer, lease keeper, sweeper) and of
the Kafka bridge (consumer, outbox relay) is a subclass. What they have in common is written here once:
start, stop with a bounded wait, liveness, the last error, capped backoff with jitter after a failure,
and a log line when a role starts, stops and retries. A new role (schedules, retention, workflows) is
one more subclass with its own `run_once()`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import psycopg2

from backoff import Backoff
from errors import Unavailable

# Failures that say "a dependency is away right now", logged as one warning line; anything else is a bug
# and is logged with its traceback. Both are retried after a backoff: a role never dies of one round.
TRANSIENT: tuple[type[BaseException], ...] = (Unavailable, psycopg2.OperationalError, psycopg2.InterfaceError)


class Role:
    """A background role: one daemon thread that calls `run_once()` until stopped.

    `period` is how long to wait between rounds unless woken (`wake()`); a role whose `run_once()`
    waits by itself (on a socket, a queue) uses 0. After a failed round, the role waits a backoff that
    doubles from `retry_initial` up to `retry_cap`, and calls `reset()` so that the next round starts
    from a clean state (e.g. reconnects).
    """

    name = "role"
    transient: tuple[type[BaseException], ...] = TRANSIENT

    def __init__(self, period: float, retry_initial: float = 0.25, retry_cap: float = 10.0,
                 logger: Optional[logging.Logger] = None) -> None:
        self.period = period
        self.log = logger or logging.getLogger(f"punctual.{self.name}")
        self.last_error: Optional[str] = None
        self.last_success = 0.0  # monotonic time of the last round that did not fail
        self._backoff = Backoff(retry_initial, retry_cap)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- what a role implements ---------------------------------------------------------

    def run_once(self) -> None:
        """One round of the role's work. Raise to have it retried after a backoff."""
        raise NotImplementedError

    def reset(self) -> None:
        """After a failed round: drop whatever state the failure may have broken (a connection, say)."""

    def close(self) -> None:
        """On the role's own thread, once, after its last round: release what it holds."""

    def describe(self) -> str:
        """What the start-up log line says about this role's configuration."""
        return ""

    # -- the lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name=f"punctual-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the role to stop and wait at most `timeout` seconds; whether it stopped."""
        self._stop.set()
        self._wake.set()
        self._interrupt()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            self.log.error("%s did not stop within %.1f s", self.name, timeout)
            return False
        return True

    def wake(self) -> None:
        """Run the next round now instead of at the end of the period."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> dict[str, object]:
        return {"status": "ok" if self.alive else "down", "last_error": self.last_error}

    def _interrupt(self) -> None:
        """Cut a wait that `run_once()` does by itself, so that stop() is honoured at once."""

    def _main(self) -> None:
        described = self.describe()
        self.log.info("%s started%s", self.name, f" ({described})" if described else "")
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except BaseException as exc:  # noqa: BLE001 - a role outlives any single bad round
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    self._failed(exc)
                    continue
                if self.last_error is not None:
                    self.log.info("%s recovered", self.name)
                self.last_error = None
                self.last_success = time.monotonic()
                self._backoff.reset()
                if self.period > 0 and not self._stop.is_set():
                    self._wake.wait(self.period)
                self._wake.clear()
        finally:
            try:
                self.close()
            except Exception:  # noqa: BLE001 - stopping must finish
                self.log.exception("%s failed while closing", self.name)
            self.log.info("%s stopped", self.name)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        delay = self._backoff.next()
        if isinstance(exc, self.transient):
            self.log.warning("%s failed (%s); retrying in %.2f s", self.name, self.last_error, delay)
        else:
            self.log.exception("%s failed; retrying in %.2f s", self.name, delay)
        try:
            self.reset()
        except Exception:  # noqa: BLE001 - a reset that fails is retried with the next round
            self.log.exception("%s could not reset", self.name)
        self._stop.wait(delay)
