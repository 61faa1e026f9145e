"""Fan the engine's change batches out to live pages (Server-Sent Events subscribers).

The engine calls a Broadcaster from its listener thread with every batch of notified changes
(each with id, state and scheduled_for; state None = deleted). That thread also arms timers, so the
broadcaster must never wait on a subscriber: each subscriber has a bounded queue, and one that
falls behind (a slow network, a stalled tab) loses its backlog and is told to "resync" instead,
i.e. to read again what it shows. The browser only ever needs ids: it fetches the rows it shows.

Each open stream holds one waitress thread, so the number of subscribers is capped; beyond the
cap `subscribe()` answers None and the route answers 503.
"""
from __future__ import annotations

import queue
import threading
import time
from datetime import datetime
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

RESYNC = "resync"


class ChangeLike(Protocol):
    """What the engine says of one changed event (engine.queries.Change): no import of the engine here."""

    id: int
    state: Optional[str]
    scheduled_for: Optional[datetime]


class Subscription:
    """One live page's inbox: change batches in order, or RESYNC after an overflow."""

    def __init__(self, size: int) -> None:
        self._queue: queue.Queue[list[dict[str, Any]]] = queue.Queue(maxsize=size)
        self._overflowed = threading.Event()
        self.closed = threading.Event()

    def offer(self, changes: list[dict[str, Any]]) -> None:
        """Called from the listener thread: never blocks; a full inbox turns into one RESYNC."""
        if self._overflowed.is_set():
            return
        try:
            self._queue.put_nowait(changes)
        except queue.Full:
            self._overflowed.set()

    def next(self, timeout: float) -> Optional[list[dict[str, Any]] | str]:
        """The next message: a list of changes (several batches merged, latest per id), RESYNC, or None
        when nothing came within `timeout` seconds (time for a heartbeat, or to notice a shutdown)."""
        if self._overflowed.is_set():
            self._drain()
            self._overflowed.clear()
            return RESYNC
        try:
            batch = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        merged = {change["id"]: change for change in batch}
        while len(merged) < 500:  # what else is already waiting, in one message
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            merged.update((change["id"], change) for change in more)
        if self._overflowed.is_set():  # overflowed while we merged: what we hold is incomplete
            self._drain()
            self._overflowed.clear()
            return RESYNC
        return list(merged.values())

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class Broadcaster:
    """Callable as an engine watcher: `engine.watchers.append(broadcaster)`."""

    def __init__(self, max_subscribers: int = 8, queue_size: int = 256) -> None:
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscription, ...] = ()
        self.closed = threading.Event()

    def __call__(self, changes: Sequence[ChangeLike]) -> None:
        """Hand a batch to every subscriber without waiting on any of them."""
        subscribers = self._subscribers  # a tuple replaced whole under the lock: safe to iterate
        if not changes or not subscribers:
            return  # nobody watching: no work per change (thousands a second under load)
        message = [_plain(change) for change in changes]
        for subscriber in subscribers:
            subscriber.offer(message)

    @property
    def count(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Optional[Subscription]:
        """A new inbox, or None when the cap is reached or the broadcaster is closed."""
        with self._lock:
            if self.closed.is_set() or len(self._subscribers) >= self.max_subscribers:
                return None
            subscription = Subscription(self.queue_size)
            self._subscribers = (*self._subscribers, subscription)
            return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscription)

    def close(self) -> None:
        """Shutdown: every open stream ends at its next wake-up (within a second)."""
        self.closed.set()
        for subscriber in self._subscribers:
            subscriber.closed.set()


def _plain(change: ChangeLike) -> dict[str, Any]:
    """Only what the page needs, JSON-ready."""
    when = change.scheduled_for
    return {"id": change.id, "state": change.state,
            "scheduled_for": when.isoformat() if isinstance(when, datetime) else when}


def sse(event: str, data: str) -> str:
    """One Server-Sent Events message (data is one line of JSON)."""
    return f"event: {event}\ndata: {data}\n\n"


def stream(broadcaster: Broadcaster, subscription: Subscription, alive: Callable[[], bool],
           disconnected: Callable[[], bool], encode: Callable[[Any], str],
           heartbeat_seconds: float = 15.0, tick: float = 1.0,
           watching: Callable[[], None] = lambda: None, watching_seconds: float = 15.0) -> Iterator[bytes]:
    """The body of one SSE answer: hello, then changes/resync messages, a comment as heartbeat, and a
    "bye" when the server stops (the browser reconnects by itself, to this or another instance).

    `watching` is called every `watching_seconds` while the stream is open (the caller calls it once before):
    it tells every instance that a page is open, so claims and final outcomes are notified too (controllers.live)."""
    try:
        # retry: how long the browser waits before reconnecting after the stream ends.
        yield f"retry: 2000\n{sse('hello', encode({'subscribers': broadcaster.count}))}".encode()
        quiet_since = watched_at = time.monotonic()
        while True:
            if broadcaster.closed.is_set() or subscription.closed.is_set() or not alive():
                yield sse("bye", "{}").encode()
                return
            if disconnected():
                return
            if time.monotonic() - watched_at >= watching_seconds:
                watched_at = time.monotonic()
                watching()
            message = subscription.next(tick)
            if message is None:
                if time.monotonic() - quiet_since >= heartbeat_seconds:
                    quiet_since = time.monotonic()
                    yield b": heartbeat\n\n"
                continue
            quiet_since = time.monotonic()
            if message == RESYNC:
                yield sse("resync", "{}").encode()
            else:
                yield sse("changes", encode(message)).encode()
    finally:
        broadcaster.unsubscribe(subscription)
