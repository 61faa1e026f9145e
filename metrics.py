"""Prometheus metrics of one instance; event counts by state are read from the database at scrape time."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas import STATES

log = logging.getLogger("punctual.metrics")

_LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RUN_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)


class _StateCollector(Collector):
    def __init__(self, count_by_state: Callable[[], dict[str, int]]) -> None:
        self._count = count_by_state

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("punctual_events", "Events in the database, by state", labels=["state"])
        try:
            counts = self._count()
        except Exception:  # noqa: BLE001 - a scrape during an outage reports what it can
            log.warning("could not count events for /metrics", exc_info=True)
            return
        for state in STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family


class _BridgeCollector(Collector):
    """The Kafka bridge's state, read from it at scrape time."""

    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self._health = health

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = self._health()
        consumer, outbox = state["consumer"], state["outbox"]
        values = [
            ("punctual_kafka_consumer_connected", "1 while the bridge's consumer is connected",
             1 if consumer["connected"] else 0),
            ("punctual_kafka_consumer_lag", "Messages on the bridged topics not yet consumed", consumer["lag"]),
            ("punctual_kafka_ingested_events", "Events made from Kafka messages by this instance",
             consumer["ingested_events"]),
            ("punctual_kafka_rejected_messages", "Kafka messages recorded as rejected by this instance",
             consumer["rejected"]),
            ("punctual_outbox_pending", "Outcomes waiting in the outbox for the history topic", outbox["pending"]),
            ("punctual_outbox_sent", "Outbox rows published by this instance", outbox["sent"]),
        ]
        for name, documentation, value in values:
            if value is not None:
                yield GaugeMetricFamily(name, documentation, value=value)


class _VacuumCollector(Collector):
    """What holds vacuum back, from the latest reading (controllers/maintenance.py, read at most every few
    seconds): per table its size, dead rows and the time since its last autovacuum; autovacuum's switch; the age of
    the oldest open and oldest idle-in-transaction transactions. Nothing while the reading is unknown."""

    def __init__(self, report: Callable[[], Optional[dict[str, Any]]]) -> None:
        self.report = report

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            report = self.report()
        except Exception:  # noqa: BLE001 - a scrape during an outage reports what it can
            log.warning("could not read the vacuum report for /metrics", exc_info=True)
            return
        if report is None:
            return
        per_table = [
            ("punctual_table_size_bytes", "Size of each of Punctual's tables, with indexes and TOAST", "size_bytes"),
            ("punctual_table_live_rows", "Live rows of each table (PostgreSQL's estimate)", "live_rows"),
            ("punctual_table_dead_rows", "Dead row versions of each table, waiting for vacuum", "dead_rows"),
            ("punctual_table_seconds_since_autovacuum",
             "Seconds since autovacuum last vacuumed each table (absent: never since the statistics reset)",
             "seconds_since_autovacuum"),
        ]
        for name, documentation, key in per_table:
            family = GaugeMetricFamily(name, documentation, labels=["table"])
            for table, stats in report["tables"].items():
                if stats[key] is not None:
                    family.add_metric([table], stats[key])
            yield family
        yield GaugeMetricFamily("punctual_autovacuum_on", "1 while the server's autovacuum (and track_counts) is on",
                                value=1 if report["autovacuum"] else 0)
        yield GaugeMetricFamily("punctual_oldest_transaction_seconds",
                                "Age of the oldest open transaction in the database (0: none)",
                                value=report["oldest_transaction_seconds"] or 0)
        yield GaugeMetricFamily("punctual_oldest_idle_in_transaction_seconds",
                                "Age of the oldest transaction whose session is idle in it (0: none)",
                                value=report["oldest_idle_in_transaction_seconds"] or 0)
        yield GaugeMetricFamily("punctual_vacuum_warnings",
                                "Reasons /health gives for vacuum being held back or off (0: none)",
                                value=len(report["reasons"]))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._vacuum: Optional[_VacuumCollector] = None
        self.attempts = Counter("punctual_attempts", "Attempts finished by this instance, by outcome",
                                ["outcome"], registry=self.registry)
        self.lateness = Histogram("punctual_lateness_seconds", "Claim time minus scheduled_for",
                                  buckets=_LATENESS_BUCKETS, registry=self.registry)
        self.run_time = Histogram("punctual_run_seconds", "Time a callback took", ["kind"],
                                  buckets=_RUN_BUCKETS, registry=self.registry)
        self.armed = Gauge("punctual_armed_events", "Events held by the in-memory scheduler",
                           registry=self.registry)
        self.inflight = Gauge("punctual_inflight_attempts", "Attempts claimed and not yet recorded",
                              registry=self.registry)
        self.listener_connected = Gauge("punctual_listener_connected", "1 while LISTEN is established",
                                        registry=self.registry)
        self.listener_reconnects = Counter("punctual_listener_reconnects", "LISTEN connections re-established",
                                           registry=self.registry)
        self.lease_rescues = Counter("punctual_lease_expired", "Running events rescued after their lease ran out",
                                     registry=self.registry)
        self.http_requests = Counter("punctual_http_requests", "HTTP requests answered, by status class",
                                     ["status"], registry=self.registry)
        self.pruned = Counter("punctual_retention_pruned_rows", "Rows deleted by retention, by table", ["table"],
                              registry=self.registry)
        # Schedules, per schedule name: how late each occurrence started after its instant, and what became of
        # the occurrences (made ahead, skipped by a policy, made by a catch-up).
        self.schedule_lateness = Histogram("punctual_schedule_lateness_seconds",
                                           "Occurrence instant to the start of its attempt", ["schedule"],
                                           buckets=_LATENESS_BUCKETS, registry=self.registry)
        self.schedule_made = Counter("punctual_schedule_occurrences_made", "Occurrences made ahead, per schedule",
                                     ["schedule"], registry=self.registry)
        self.schedule_skipped = Counter("punctual_schedule_occurrences_skipped",
                                        "Occurrences skipped by catch_up or overlap, per schedule", ["schedule"],
                                        registry=self.registry)
        self.schedule_caught_up = Counter("punctual_schedule_occurrences_caught_up",
                                          "Missed occurrences made by a catch-up, per schedule", ["schedule"],
                                          registry=self.registry)
        # Workflows (DESIGN.md "Workflows"): advances by what they ended in (suspended, completed, failed,
        # cancelled; busy: another instance held it).
        self.workflow_advances = Counter("punctual_workflow_advances", "Workflow advances, by outcome", ["outcome"],
                                         registry=self.registry)

    def watch_states(self, count_by_state: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_StateCollector(count_by_state))

    def watch_bridge(self, health: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(_BridgeCollector(health))

    def watch_vacuum(self, report: Callable[[], Optional[dict[str, Any]]]) -> None:
        """Report what holds vacuum back at each scrape, from `report` (the reading /health shows); a second call
        (another app on these metrics) replaces the source."""
        if self._vacuum is None:
            self._vacuum = _VacuumCollector(report)
            self.registry.register(self._vacuum)
        else:
            self._vacuum.report = report

    def render(self) -> bytes:
        return generate_latest(self.registry)
