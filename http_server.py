"""The HTTP front of Punctual: waitress, held to deadlines against idle and slow clients, stopped gracefully.

Waitress alone has three gaps that a hostile or merely careless client can use:

- its `channel_timeout` counts inactivity, so a client that sends one byte every 20 s keeps a
  connection forever, and a thousand of them hold every connection;
- at `connection_limit` it stops accepting, so those connections lock everyone else out, `/health` too;
- `server.close()` closes sockets under channels that are still being written, and the trigger that
  request threads pull when they finish: clients see resets and errors.log an EBADF traceback.

Here a connection is judged by progress, not activity: it must complete a request within
`HTTP_IDLE_TIMEOUT_SECONDS` of opening (or of its last answer), and a request that has begun must be
fully received within `HTTP_REQUEST_TIMEOUT_SECONDS`, whatever trickles in meanwhile. At the connection
limit the oldest connection that is not being served is dropped to make room for the new one. A request
being served (a live `/stream` too) is never cut by these rules: the application owns it. On stop, the
listening sockets close (after accepting what the kernel had already queued), requests in flight are
answered with `Connection: close`, quiet keep-alive connections are closed, and only then are the
threads stopped and the trigger closed. An optional second listener (`HEALTH_PORT`) serves only
`/health` and `/metrics`, with its own loop thread and request threads, for load balancers.
"""
from __future__ import annotations

import errno
import json
import logging
import resource
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

log = logging.getLogger("punctual.http")

MAX_DRAIN_SECONDS = 300.0
"""Upper bound of HTTP_DRAIN_SECONDS: a stop must end, whatever the configuration says."""

DRAIN_QUIET_SECONDS = 1.0
"""While draining, a connection with no request in progress is closed once it has been quiet this long:
a client whose connect() succeeded just before the stop, or a keep-alive client about to send its next
request, gets this window to be answered instead of being cut as it sends."""

LOOP_ROUND_SECONDS = 0.2
"""Longest wait of one round of the event loop: how soon a stop request or a deadline is noticed."""

SUMMARY_SECONDS = 10.0
"""Cut connections are counted and logged as one line at most this often (a flood would log thousands)."""

_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class Limits:
    """What a connection may take from a listener."""

    idle_timeout: float
    """Seconds a connection may stay open without completing a request (from open or its last answer)."""
    request_timeout: float
    """Seconds from a request's first byte to its last (headers and body)."""
    connection_limit: int
    """Open connections; at the limit the oldest one not being served is dropped for a new one."""

    @classmethod
    def from_settings(cls, settings: Any) -> "Limits":
        """The limits HTTP_* settings ask for; a value that would disable a limit stops the start-up."""
        limits = cls(float(settings.http_idle_timeout_seconds), float(settings.http_request_timeout_seconds),
                     int(settings.http_connection_limit))
        if limits.idle_timeout <= 0 or limits.request_timeout <= 0 or limits.connection_limit < 1:
            raise SystemExit("HTTP_IDLE_TIMEOUT_SECONDS and HTTP_REQUEST_TIMEOUT_SECONDS must be above 0 and "
                             "HTTP_CONNECTION_LIMIT at least 1")
        return limits

    @property
    def sweep_every(self) -> float:
        """How often connections are judged: often enough that a deadline is kept within a quarter of it."""
        return min(1.0, max(0.05, min(self.idle_timeout, self.request_timeout) / 4))


class PunctualTask(WSGITask):
    """A request's task: while the server drains, its answer says `Connection: close`."""

    def build_response_header(self) -> bytes:
        if self.channel.server.draining:
            # Without it a keep-alive client would send its next request on a connection about to close.
            self.set_close_on_finish()
        return super().build_response_header()


class PunctualChannel(HTTPChannel):
    """One client connection, with the times the server judges it by."""

    task_class = PunctualTask

    def __init__(self, server: "PunctualServer", sock: socket.socket, addr: Any, adj: Adjustments,
                 map: Optional[dict] = None) -> None:
        now = time.monotonic()
        # Set before waitress's __init__, which registers the channel where the server sweeps.
        self.opened_at = now
        self.quiet_since = now  # opened, or last answer finished: the idle clock starts here
        self.last_sent = now
        self.request_started: Optional[float] = None  # first byte of the request being received
        self.last_received = now
        self.served = 0
        self.serving = False  # a request thread is in service(): waitress empties `requests` before it returns
        super().__init__(server, sock, addr, adj, map=map)

    def received(self, data: bytes) -> bool:
        if data:
            self.last_received = time.monotonic()
            if self.request is None:
                self.request_started = self.last_received
        result = super().received(data)
        if self.request is None:
            self.request_started = None
        return result

    def _flush_some(self, do_close: bool = True) -> bool:
        sent = super()._flush_some(do_close=do_close)
        if sent:
            self.last_sent = time.monotonic()
        return sent

    def service(self) -> None:
        self.serving = True
        try:
            super().service()
        finally:
            # In this order: a sweep between waitress's pop of the request and here must not judge the
            # connection by clocks that stopped when the request began (a 70 s request is not 70 s idle).
            self.served += 1
            self.quiet_since = time.monotonic()
            self.serving = False

    def verdict(self, now: float, limits: Limits, draining: bool) -> Optional[str]:
        """Why this connection should be closed now ("idle", "slow", "stalled", "drained"), or None.

        Never while a request is being served: a slow handler or a live stream is the application's own."""
        if self.will_close or self.requests or self.serving:
            return None
        if self.total_outbufs_len:  # an answer the client does not read (it holds a buffer and a slot)
            return "stalled" if now - max(self.last_sent, self.quiet_since) > limits.idle_timeout else None
        if self.request is not None:  # a request has begun: slowloris trickles bytes to keep it open
            started = self.request_started if self.request_started is not None else self.quiet_since
            if now - started > limits.request_timeout:
                return "slow"
            # While draining, a request still arriving is waited for only while its bytes keep coming: a
            # trickling client must not hold the stop to its deadline.
            return "drained" if draining and now - self.last_received >= DRAIN_QUIET_SECONDS else None
        quiet = now - max(self.quiet_since, self.last_sent)
        if draining:
            return "drained" if quiet >= DRAIN_QUIET_SECONDS and not self._bytes_waiting() else None
        return "idle" if quiet > limits.idle_timeout else None

    def evictable(self) -> bool:
        """Whether dropping it costs nobody an answer in progress."""
        return not (self.will_close or self.requests or self.serving or self.total_outbufs_len)

    def _bytes_waiting(self) -> bool:
        """A request already sent but not read yet (this loop round has not come to it): not idle."""
        try:
            return bool(self.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False  # reset or closed by the client: nothing to answer

    def cut(self) -> None:
        """Close at the next loop round, from the loop thread (waitress's own way: nothing is mid-write)."""
        self.will_close = True


class PunctualServer(TcpWSGIServer):
    """One listening socket: accepts within the limit, judges its connections, drains on stop."""

    channel_class = PunctualChannel

    def __init__(self, application: Callable, *, map: dict, dispatcher: ThreadedTaskDispatcher,
                 adj: Adjustments, sockinfo: tuple, limits: Limits, counts: "CutCounter") -> None:
        self.limits = limits
        self.counts = counts
        self.draining = False
        self._next_sweep = 0.0
        self._accept_paused_until = 0.0
        super().__init__(application, map=map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)

    # -- the loop calls readable() on every round: judge connections here, at the sweep's pace --------

    def readable(self) -> bool:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.limits.sweep_every
            self.sweep(now)
        # Paused after accept() failed for want of descriptors, or at the limit with every connection being
        # served: the pending connection would make poll() return at once, in a busy loop.
        if not self.accepting or now < self._accept_paused_until:
            return False
        return True  # at the limit too: handle_accept makes room by dropping a connection not being served

    def maintenance(self, now: float) -> None:
        """Replaced by sweep(): waitress's channel_timeout counts activity, which a trickle defeats."""

    def sweep(self, now: float) -> None:
        for channel in list(self.active_channels.values()):
            why = channel.verdict(now, self.limits, self.draining)
            if why is not None:
                channel.cut()
                self.counts.add(why)

    # -- accepting ------------------------------------------------------------------------------------

    def handle_accept(self) -> None:
        if len(self.active_channels) >= self.limits.connection_limit and not self._make_room("evicted"):
            self._accept_paused_until = time.monotonic() + 0.1
            self.counts.warn_once("limit", "%s: %d connections open, all being served: new ones wait in the "
                                  "backlog", self.counts.name, len(self.active_channels))
            return
        self._accept_one()

    def _make_room(self, why: str) -> bool:
        """Drop the connection that costs least: never served before, oldest first; then the oldest idle."""
        victim: Optional[PunctualChannel] = None
        best: tuple = ()
        for channel in self.active_channels.values():
            if channel.evictable():
                key = (channel.served > 0, channel.opened_at)
                if victim is None or key < best:
                    victim, best = channel, key
        if victim is None:
            return False
        victim.handle_close()  # from the loop thread, on a connection no request thread touches
        self.counts.add(why)
        return True

    def _accept_one(self) -> bool:
        """Accept one queued connection; False when none is queued (or none can be taken now)."""
        try:
            conn, addr = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                # accept() would fail again at once, in a busy loop: free a descriptor or wait a little.
                self.counts.warn_once("fds", "%s: accept failed (%s); dropping an idle connection", self.counts.name,
                                      exc.strerror)
                if not self._make_room("evicted"):
                    self._accept_paused_until = time.monotonic() + 0.1
                return False
            return True  # ECONNABORTED, EPROTO...: that client gave up before we took it; try the next
        try:
            self.set_socket_options(conn)
        except OSError:  # the client closed before we got to it
            conn.close()
            return True
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        return True

    # -- stopping -------------------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Close the listening socket, after taking every connection the kernel already completed.

        Those clients' connect() has succeeded and their request may be on its way; closing the socket
        with them still queued would reset them. New clients are refused from now on (not reset)."""
        self.draining = True
        if not self.accepting:
            return
        while self._accept_one():
            pass
        wasyncore.dispatcher.close(self)  # the listening socket only: the trigger stays for request threads


class CutCounter:
    """Counts connections cut, per reason, and logs them as one line every SUMMARY_SECONDS."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.total: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._logged_at = time.monotonic()
        self._warned: dict[str, float] = {}

    def add(self, why: str) -> None:
        self.total[why] = self.total.get(why, 0) + 1
        self._pending[why] = self._pending.get(why, 0) + 1

    def flush(self, now: float, force: bool = False) -> None:
        if self._pending and (force or now - self._logged_at >= SUMMARY_SECONDS):
            log.info("%s: connections closed: %s", self.name,
                     ", ".join(f"{n} {why}" for why, n in sorted(self._pending.items())))
            self._pending = {}
            self._logged_at = now

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        """A warning at most once a minute per kind: an attack must not fill errors.log."""
        now = time.monotonic()
        if now - self._warned.get(key, -60.0) >= 60.0:
            self._warned[key] = now
            log.warning(message, *args)


class Listener:
    """One address (one or more sockets, e.g. IPv4 and IPv6 of a name) with its event loop and threads."""

    def __init__(self, application: Callable, *, name: str, host: str, port: int, threads: int,
                 limits: Limits, **adjustments: Any) -> None:
        self.name = name
        self.limits = limits
        self.map: dict = {}
        self.adj = Adjustments(
            host=host, port=port, threads=threads, connection_limit=limits.connection_limit,
            channel_timeout=max(1, int(limits.idle_timeout)),
            # select() fails past file descriptor 1024, which a thousand connections plus the database reach.
            asyncore_use_poll=True,
            **adjustments)
        self.dispatcher = ThreadedTaskDispatcher()
        self.dispatcher.set_thread_count(threads)
        self.counts = CutCounter(name)
        self.servers = [PunctualServer(application, map=self.map, dispatcher=self.dispatcher, adj=self.adj,
                                       sockinfo=sockinfo, limits=limits, counts=self.counts)
                        for sockinfo in self.adj.listen]

    @property
    def addresses(self) -> list[str]:
        return [f"http://{s.effective_host}:{s.effective_port}" for s in self.servers]

    @property
    def port(self) -> int:
        return int(self.servers[0].effective_port)

    def open_connections(self) -> int:
        return sum(len(s.active_channels) for s in self.servers)

    def _round(self) -> None:
        wasyncore.loop(timeout=LOOP_ROUND_SECONDS, map=self.map, use_poll=True, count=1)
        self.counts.flush(time.monotonic())

    def serve_until(self, stop: threading.Event) -> None:
        """Run the loop in short rounds until `stop` is set.

        A signal handler must not raise into waitress: an exception raised while waitress is inside a
        channel's handler is caught and logged as "uncaptured python exception, closing channel", and the
        server keeps running (the stop would be lost). So the handler only sets `stop`, and this loop looks
        at it between rounds (at most LOOP_ROUND_SECONDS apart; poll() returns early on a signal)."""
        while not stop.is_set():
            self._round()

    def drain(self, seconds: float) -> int:
        """Stop accepting, answer what is in flight within `seconds`, close the rest; the number cut at the end.

        Returns when no connection is left (at once if none was open)."""
        deadline = time.monotonic() + max(0.0, min(seconds, MAX_DRAIN_SECONDS))
        for server in self.servers:
            server.stop_accepting()
        next_sweep = 0.0
        while self.open_connections() and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_sweep:  # the servers are out of the loop's map now: sweep here, often
                next_sweep = now + 0.05
                for server in self.servers:
                    server.sweep(now)
            self._round()
        left = 0
        for server in self.servers:
            for channel in list(server.active_channels.values()):
                # handle_close takes the channel's output lock, so a request thread is never mid-write on a
                # closed socket; it sees ClientDisconnected instead.
                channel.handle_close()
                left += 1
        self.counts.flush(time.monotonic(), force=True)
        return left

    def close(self, timeout: float) -> None:
        """Stop the request threads, then the triggers they pull when they finish a request.

        Closing a trigger while a thread may still pull it is the EBADF traceback (or a write into
        whatever file reuses that descriptor number): if a thread outlives `timeout`, the triggers stay open
        and go with the process."""
        stopped = self.dispatcher.shutdown(cancel_pending=True, timeout=timeout)
        if not stopped or self.dispatcher.threads:
            log.warning("%s: %d request thread(s) still running after %.0f s", self.name,
                        len(self.dispatcher.threads), timeout)
            return
        for server in self.servers:
            server.trigger.close()


def only_paths(application: Callable, paths: Iterable[str]) -> Callable:
    """A WSGI app that passes `paths` to `application` and answers 404 (the API's JSON error) to the rest."""
    allowed = frozenset(paths)
    body = json.dumps({"error": {"code": "not_found", "message": "this port serves only " + ", ".join(sorted(allowed)),
                                 "details": {}}}).encode()

    def filtered(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in allowed:
            return application(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return filtered


def raise_open_file_limit(needed: int) -> None:
    """Raise the soft limit on open files towards `needed` (up to the hard limit).

    At 1024, the default of many systems, a thousand connections plus the database pool and logs make
    accept() fail with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning("open files limited to %d (hard limit), below the %d that HTTP_CONNECTION_LIMIT needs: "
                    "past it, idle connections are dropped for new ones", target, needed)


class HttpServer:
    """The API's listener and, when `health_port` is set, a second one serving only /health and /metrics."""

    def __init__(self, application: Callable, *, host: str, port: int, threads: int, limits: Limits,
                 health_host: str = "", health_port: int = 0, **adjustments: Any) -> None:
        raise_open_file_limit(limits.connection_limit + 512)
        self.main = Listener(application, name="http", host=host, port=port, threads=threads, limits=limits,
                             **adjustments)
        self.health: Optional[Listener] = None
        self._health_stop = threading.Event()
        self._health_thread: Optional[threading.Thread] = None
        self._health_left = 0
        if health_port:
            # Few connections and threads: a load balancer's probes, not clients; its own threads, so a main
            # pool busy with slow requests does not delay them.
            health_limits = Limits(limits.idle_timeout, limits.request_timeout, 100)
            self.health = Listener(only_paths(application, ("/health", "/metrics")), name="http-health",
                                   host=health_host or host, port=health_port, threads=2, limits=health_limits,
                                   **adjustments)

    def serve_until(self, stop: threading.Event, drain_seconds: float) -> None:
        """Serve until `stop` is set (the health listener in a thread of its own), then stop accepting."""
        if self.health is not None:
            self._health_thread = threading.Thread(target=self._run_health, args=(drain_seconds,),
                                                   name="http-health", daemon=True)
            self._health_thread.start()
        self.main.serve_until(stop)

    def _run_health(self, drain_seconds: float) -> None:
        assert self.health is not None
        log.info("health listener started on %s", ", ".join(self.health.addresses))
        try:
            self.health.serve_until(self._health_stop)
            self._health_left = self.health.drain(drain_seconds)
        except Exception:  # noqa: BLE001 - a dead health loop must be seen, not take the process down
            log.exception("health listener failed")
        log.info("health listener stopped")

    def stop(self, drain_seconds: float, on_drain: Callable[[], None] = lambda: None) -> None:
        """Stop accepting on both listeners, answer the requests in flight within `drain_seconds`, then stop
        the request threads. `on_drain` runs first: it tells long answers (live streams) to end."""
        seconds = max(0.0, min(drain_seconds, MAX_DRAIN_SECONDS))
        started = time.monotonic()
        self._health_stop.set()
        on_drain()
        log.info("http: draining %d connection(s), up to %.1f s", self.main.open_connections(), seconds)
        left = self.main.drain(seconds)
        if self._health_thread is not None:
            self._health_thread.join(timeout=max(0.0, seconds - (time.monotonic() - started)) + 5)
        left += self._health_left
        if left:
            log.warning("http: %d connection(s) still open after %.1f s: closed", left, seconds)
        else:
            log.info("http: drained in %.2f s", time.monotonic() - started)
        self.main.close(timeout=5)
        if self.health is not None and not (self._health_thread and self._health_thread.is_alive()):
            self.health.close(timeout=5)
