"""The rules of schedules (DESIGN.md "Schedules"): what a valid rule is, when it occurs, and how its occurrences
become events, exactly once, with the catch-up and overlap policies.

Fire times of a cron rule come from cronsim, read in the schedule's time zone. Why cronsim: it resolves
daylight-saving changes the way the contract asks (a local time that does not exist that day runs at the
first instant after the gap; an ambiguous one runs once, the first), as Debian's cron does. APScheduler 3's
CronTrigger runs the nonexistent time an hour late and walks backwards over an ambiguous hour; croniter
runs an ambiguous time twice (tests/test_schedules.py has the real transitions).

How occurrences are made (`advance`, called by the schedule role of every instance and by the API): under
the schedule's row lock, each instant after `made_until` is made into an event (ON CONFLICT on its
idempotency key: never twice), skipped or caught up, and `made_until` moves in the same transaction. The
next occurrence always exists as a scheduled event (for `overlap` `skip`: once the previous one ended), so
it is armed and runs on time like any other event.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg2.errors
from cron_descriptor import get_description
from cronsim import CronSim, CronSimError
from psycopg2.extras import Json

import audit
from controllers.events import SELECT as EVENT_SELECT
from controllers.events import resolve_callbacks
from db import Database, DictCursor
from errors import Conflict, Invalid, NotFound
from schemas import PreviewQuery, ScheduleCreate, ScheduleUpdate

log = logging.getLogger("punctual.schedules")

COLUMNS = """s.id, s.name, c.name AS callback, s.payload, s.priority, s.max_attempts, s.cron, s.every_seconds,
             s.timezone, s.start_at, s.end_at, s.catch_up, s.catch_up_limit, s.overlap, s.paused, s.made_until,
             s.created_at, s.updated_at"""
FROM = "FROM schedules s JOIN callbacks c ON c.id = s.callback_id"
NEXT_RUNS = 5
LOOKAHEAD = timedelta(seconds=2)  # occurrences due this soon are made now, so a fast rule never waits on a round
LATE = timedelta(seconds=2)  # at a catch-up, a made occurrence this late and still waiting counts as missed
MAX_SCAN = 100_000  # instants looked at per round: a rule of every second after months of downtime stays bounded
TERMINAL = ("finished", "failed", "cancelled")


# -- the rule ------------------------------------------------------------------------------

@dataclass
class Rule:
    """When a schedule occurs: a cron in a time zone, or every N seconds from an anchor; within start/end."""

    cron: Optional[str]
    every: Optional[float]
    zone: ZoneInfo
    start_at: Optional[datetime]
    end_at: Optional[datetime]
    anchor: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def after(self, instant: datetime) -> Iterator[datetime]:
        """The rule's instants strictly after `instant`, in order, in UTC, until end_at."""
        if self.start_at is not None and instant < self.start_at:
            instant = self.start_at - timedelta(microseconds=1)
        if self.every is not None:
            step = timedelta(seconds=self.every)
            base = self.start_at or self.anchor
            n = max(0, int((instant - base) / step) + 1) if instant >= base else 0
            while True:
                when = base + n * step
                if when > instant:
                    if self.end_at is not None and when > self.end_at:
                        return
                    yield when
                n += 1
        else:
            assert self.cron is not None
            # cronsim works in whole seconds, in the rule's zone.
            local = instant.astimezone(self.zone).replace(microsecond=0)
            for when in CronSim(self.cron, local):
                utc = when.astimezone(timezone.utc)
                if utc <= instant:
                    continue
                if self.end_at is not None and utc > self.end_at:
                    return
                yield utc

    def count(self, low: datetime, high: datetime) -> int:
        """How many instants fall in (low, high]; past MAX_SCAN, MAX_SCAN (a counter of skipped occurrences
        need not walk a month of seconds)."""
        if self.every is not None:
            runs = self.latest(low, high, MAX_SCAN)
            return len(runs)
        n = 0
        for when in self.after(low):
            if when > high or n >= MAX_SCAN:
                break
            n += 1
        return n

    def latest(self, low: datetime, high: datetime, n: int) -> list[datetime]:
        """The last `n` instants in (low, high], in order: a catch-up needs these, found backwards from
        `high` (arithmetic for an interval, cronsim in reverse for a cron) without walking the whole gap."""
        if n <= 0 or high <= low:
            return []
        if self.end_at is not None and high > self.end_at:
            high = self.end_at
        if self.start_at is not None and low < self.start_at:
            low = self.start_at - timedelta(microseconds=1)
        found: list[datetime] = []
        if self.every is not None:
            step = timedelta(seconds=self.every)
            base = self.start_at or self.anchor
            if high < base:
                return []
            k = int((high - base) / step)
            while len(found) < n and k >= 0:
                when = base + k * step
                if when <= low:
                    break
                if when <= high:
                    found.append(when)
                k -= 1
        else:
            assert self.cron is not None
            local = high.astimezone(self.zone)
            # Reverse iteration starts at the given second itself when it matches (cronsim's rule).
            for when in CronSim(self.cron, local + timedelta(seconds=1) - timedelta(microseconds=local.microsecond),
                                reverse=True):
                utc = when.astimezone(timezone.utc)
                if utc > high:
                    continue
                if utc <= low or len(found) >= n:
                    break
                found.append(utc)
        return sorted(found)

    def next_runs(self, now: datetime, count: int = NEXT_RUNS) -> list[datetime]:
        runs: list[datetime] = []
        for when in self.after(now):
            runs.append(when)
            if len(runs) == count:
                break
        return runs


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown time zone {name!r}: an IANA name such as Europe/Paris is expected",
                      {"field": "timezone"}) from None


def check_cron(cron: str) -> None:
    """:raise Invalid: with cronsim's reason."""
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise Invalid(f"a cron has 5 fields (minute hour day month weekday), or 6 with seconds first; "
                      f"{cron!r} has {len(fields)}", {"field": "cron"})
    try:
        CronSim(cron, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except CronSimError as exc:
        raise Invalid(f"invalid cron {cron!r}: {exc}", {"field": "cron"}) from None


def rule_of(row: dict[str, Any]) -> Rule:
    return Rule(cron=row["cron"], every=row["every_seconds"], zone=parse_zone(row["timezone"]),
                start_at=row["start_at"], end_at=row["end_at"], anchor=row["created_at"])


def describe(row: dict[str, Any]) -> str:
    """The rule in words, e.g. 'At 02:30 AM, only on Monday (Europe/Paris)'."""
    if row["every_seconds"] is not None:
        seconds = float(row["every_seconds"])
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if seconds >= size and seconds % size == 0:
                n = int(seconds // size)
                return f"Every {n} {unit}s" if n > 1 else f"Every {unit}"
        return f"Every {seconds:g} seconds"
    text = get_description(row["cron"])
    return text if row["timezone"] == "UTC" else f"{text} ({row['timezone']})"


def public(row: dict[str, Any], now: Optional[datetime] = None) -> dict[str, Any]:
    """A schedule as the API answers it: with its next runs and its rule in words."""
    now = now or datetime.now(timezone.utc)
    after = max(now, row["made_until"]) if row["made_until"] and not row["paused"] else now
    pending = [row["made_until"]] if row["made_until"] and row["made_until"] > now and not row["paused"] else []
    runs = (pending + rule_of(row).next_runs(after))[:NEXT_RUNS]
    return {**{k: v for k, v in row.items() if k != "made_until"}, "every": row["every_seconds"],
            "next_runs": runs, "description": describe(row)}


# -- the API -------------------------------------------------------------------------------

def _validate(values: dict[str, Any]) -> None:
    if (values.get("cron") is None) == (values.get("every") is None):
        raise Invalid("give exactly one of cron (a cron expression) and every (seconds between occurrences)",
                      {"field": "cron" if values.get("cron") is None else "every"})
    if values.get("cron") is not None:
        check_cron(values["cron"])
    parse_zone(values.get("timezone") or "UTC")
    start, end = values.get("start_at"), values.get("end_at")
    if start is not None and end is not None and end <= start:
        raise Invalid("end_at must be after start_at", {"field": "end_at"})


def _callback_id(cur: DictCursor, ref: int | str) -> int:
    """A callback named by name or id, as events name theirs. :raise Invalid: no such callback."""
    return int(resolve_callbacks(cur, [ref])[ref]["id"])


def _read(cur: DictCursor, schedule_id: int, lock: bool = False) -> dict[str, Any]:
    cur.execute(f"SELECT {COLUMNS}, s.callback_id {FROM} WHERE s.id = %s{' FOR UPDATE OF s' if lock else ''}",
                (schedule_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"schedule {schedule_id} does not exist")
    return row


def preview(query: PreviewQuery) -> dict[str, Any]:
    """When a rule would run, without making anything: the same checks (and reasons) as a create, the next runs
    and the rule in words. An interval counts from start_at, else from now (a schedule counts from its creation)."""
    _validate(query.model_dump())
    rule = Rule(cron=query.cron, every=query.every, zone=parse_zone(query.timezone), start_at=query.start_at,
                end_at=query.end_at)
    return {"next_runs": rule.next_runs(datetime.now(timezone.utc)),
            "description": describe({"cron": query.cron, "every_seconds": query.every, "timezone": query.timezone})}


def list_schedules(db: Database) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc)
    return [public(row, now) for row in db.query(f"SELECT {COLUMNS} {FROM} ORDER BY s.id")]


def get_schedule(db: Database, schedule_id: int) -> dict[str, Any]:
    with db.transaction() as cur:
        return public(_read(cur, schedule_id))


def create_schedule(db: Database, data: ScheduleCreate, stats: Optional["Stats"] = None) -> dict[str, Any]:
    """:raise Invalid: a bad rule, zone, bounds or callback. :raise Conflict: the name is taken."""
    values = data.model_dump()
    _validate(values)
    try:
        with db.transaction() as cur:
            callback_id = _callback_id(cur, values["callback"])
            cur.execute(
                """INSERT INTO schedules (name, callback_id, payload, priority, max_attempts, cron, every_seconds,
                                          timezone, start_at, end_at, catch_up, catch_up_limit, overlap, paused)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                (values["name"], callback_id, Json(values["payload"]), values["priority"], values["max_attempts"],
                 values["cron"], values["every"], values["timezone"], values["start_at"], values["end_at"],
                 values["catch_up"], values["catch_up_limit"], values["overlap"], values["paused"]))
            schedule_id = int(cur.one()["id"])
            row = _read(cur, schedule_id, lock=True)
            advance(cur, row, stats=stats)  # its first occurrence exists as soon as the schedule does
            return public(_read(cur, schedule_id))
    except psycopg2.errors.UniqueViolation:
        raise Conflict(f"a schedule named {values['name']!r} already exists", {"field": "name"}) from None


def update_schedule(db: Database, schedule_id: int, data: ScheduleUpdate,
                    stats: Optional["Stats"] = None) -> dict[str, Any]:
    """Change any subset of the fields; the pending occurrence is replaced by the new rule's next one (an
    occurrence already running goes on)."""
    changes = data.model_dump(exclude_unset=True)
    nullable = {"max_attempts", "start_at", "end_at", "cron", "every"}
    bad = [key for key, value in changes.items() if value is None and key not in nullable]
    if bad:
        raise Invalid("fields cannot be set to null", {"fields": bad})
    try:
        with db.transaction() as cur:
            current = _read(cur, schedule_id, lock=True)
            merged = {**current, "every": current["every_seconds"], "callback": current["callback_id"], **changes}
            if "cron" in changes and changes["cron"] is not None and "every" not in changes:
                merged["every"] = None
            if "every" in changes and changes["every"] is not None and "cron" not in changes:
                merged["cron"] = None
            _validate(merged)
            callback_id = _callback_id(cur, merged["callback"]) if "callback" in changes else current["callback_id"]
            cur.execute(
                """UPDATE schedules SET name = %s, callback_id = %s, payload = %s, priority = %s, max_attempts = %s,
                          cron = %s, every_seconds = %s, timezone = %s, start_at = %s, end_at = %s, catch_up = %s,
                          catch_up_limit = %s, overlap = %s, made_until = now(), updated_at = now()
                   WHERE id = %s""",
                (merged["name"], callback_id, Json(merged["payload"]), merged["priority"], merged["max_attempts"],
                 merged["cron"], merged["every"], merged["timezone"], merged["start_at"], merged["end_at"],
                 merged["catch_up"], merged["catch_up_limit"], merged["overlap"], schedule_id))
            _cancel_pending(cur, schedule_id, "replaced: the schedule was edited")
            advance(cur, _read(cur, schedule_id, lock=True), stats=stats)
            return public(_read(cur, schedule_id))
    except psycopg2.errors.UniqueViolation:
        raise Conflict(f"a schedule named {changes.get('name')!r} already exists", {"field": "name"}) from None


def pause_schedule(db: Database, schedule_id: int) -> dict[str, Any]:
    """A paused schedule makes nothing: its pending occurrence is cancelled."""
    with db.transaction() as cur:
        _read(cur, schedule_id, lock=True)
        cur.execute("UPDATE schedules SET paused = true, updated_at = now() WHERE id = %s", (schedule_id,))
        _cancel_pending(cur, schedule_id, "cancelled: the schedule was paused")
        return public(_read(cur, schedule_id))


def resume_schedule(db: Database, schedule_id: int, stats: Optional["Stats"] = None) -> dict[str, Any]:
    """Resuming applies the catch-up policy to what the pause missed, then makes the next occurrence."""
    with db.transaction() as cur:
        row = _read(cur, schedule_id, lock=True)
        if row["paused"]:
            cur.execute("UPDATE schedules SET paused = false, updated_at = now() WHERE id = %s", (schedule_id,))
            advance(cur, _read(cur, schedule_id, lock=True), catching_up=True, stats=stats)
        return public(_read(cur, schedule_id))


def delete_schedule(db: Database, schedule_id: int) -> None:
    """Cancel the pending occurrence and delete the schedule; the events of past occurrences stay."""
    with db.transaction() as cur:
        _read(cur, schedule_id, lock=True)
        _cancel_pending(cur, schedule_id, "cancelled: the schedule was deleted")
        cur.execute("DELETE FROM schedules WHERE id = %s", (schedule_id,))


def _cancel_pending(cur: DictCursor, schedule_id: int, reason: str) -> None:
    """Cancel occurrences that have not started (pause, edit, delete). Their idempotency keys are set aside (the
    event id appended), so that the same instant can be made again after a resume or an edit: a cancelled
    occurrence never ran, and exactly once is about occurrences that do."""
    cur.execute(
        """UPDATE events SET state = 'cancelled', finished_at = now(), updated_at = now(), last_error = %s,
                  idempotency_key = idempotency_key || ':cancelled:' || id
           WHERE schedule_id = %s AND state = 'scheduled' RETURNING id""", (reason, schedule_id))
    ids = [row["id"] for row in cur.fetchall()]
    if ids:
        cur.execute(f"{EVENT_SELECT} WHERE e.id = ANY(%s)", (ids,))
        with audit.batch():
            for event in cur.fetchall():
                audit.record("event_cancelled", event, error=reason)


# -- making occurrences --------------------------------------------------------------------

class Stats:
    """Counts per schedule name, for /metrics: occurrences made, skipped, caught up. Given by the caller
    (the metrics of the instance), so this module keeps no globals."""

    def __init__(self, made: Any = None, skipped: Any = None, caught_up: Any = None) -> None:
        self.made, self.skipped, self.caught_up = made, skipped, caught_up

    def count(self, kind: str, name: str, n: int) -> None:
        counter = getattr(self, kind)
        if counter is not None and n:
            counter.labels(name).inc(n)


def key_of(schedule_id: int, instant: datetime) -> str:
    return f"schedule:{schedule_id}:{instant.astimezone(timezone.utc).isoformat()}"


def missable_schedules(db: Database) -> list[int]:
    """Schedules a catch-up round must look at: those whose next occurrence is due, and those with a made
    occurrence still waiting past its instant. A schedule whose pending occurrence is in the future has missed
    nothing, nor has one never advanced (made_until NULL: its first occurrence is simply made by the next
    round), so a start with 10,000 schedules reads them once instead of locking each before it serves."""
    rows = db.query("""SELECT s.id FROM schedules s
                       WHERE NOT s.paused AND (s.made_until <= now() + %s
                             OR EXISTS (SELECT 1 FROM events e WHERE e.schedule_id = s.id AND e.state = 'scheduled'
                                          AND e.scheduled_for < now() - %s))
                       ORDER BY s.id""", (LOOKAHEAD, LATE))
    return [int(row["id"]) for row in rows]


def due_schedules(db: Database, limit: int = 500) -> list[int]:
    """Schedules whose next occurrence may need making now (a cheap, indexed read every round)."""
    rows = db.query("""SELECT id FROM schedules
                       WHERE NOT paused AND (made_until IS NULL OR made_until <= now() + %s)
                       ORDER BY made_until NULLS FIRST LIMIT %s""", (LOOKAHEAD, limit))
    return [int(row["id"]) for row in rows]


def advance_one(db: Database, schedule_id: int, catching_up: bool = False, stats: Optional[Stats] = None) -> int:
    """Deal with one schedule under its row lock; skipped when another instance holds it. Events made."""
    with db.transaction() as cur:
        cur.execute(f"SELECT {COLUMNS}, s.callback_id {FROM} WHERE s.id = %s FOR UPDATE OF s SKIP LOCKED",
                    (schedule_id,))
        row = cur.fetchone()
        if row is None:
            return 0  # another instance holds it (or it was deleted)
        return advance(cur, row, catching_up=catching_up, stats=stats)


def advance(cur: DictCursor, row: dict[str, Any], catching_up: bool = False, stats: Optional[Stats] = None) -> int:
    """Make, skip or catch up the occurrences of one schedule up to now (+ the lookahead); the caller holds the
    schedule's row lock. Returns how many events were made.

    - Instants after `made_until` that are already past were never made (the instances were down, or the
      schedule was paused): the catch-up policy decides. At a catch-up (start, after an outage, on resume), a
      made occurrence still waiting more than LATE after its instant counts as missed too.
    - `overlap` `skip`: while an occurrence's event is not terminal, no new one is made; instants that pass
      meanwhile are skipped.
    - Then the next occurrences up to now + LOOKAHEAD, and at least the next one, are made.
    """
    if row["paused"]:
        return 0
    cur.execute("SELECT now() AS now")
    now: datetime = cur.one()["now"]
    rule = rule_of(row)
    name = str(row["id"])  # the metrics' label: ids stay the same when a schedule is renamed
    made_until = row["made_until"]
    fresh = made_until is None  # a new schedule has missed nothing: its first instant is its next occurrence
    if made_until is None:
        made_until = (row["start_at"] - timedelta(microseconds=1)) if row["start_at"] and row["start_at"] > now \
            else now - timedelta(microseconds=1)
    made: list[datetime] = []
    missed = 0 if fresh else rule.count(made_until, now)
    late: list[dict[str, Any]] = []
    if catching_up:
        cur.execute("""SELECT id, scheduled_for FROM events WHERE schedule_id = %s AND state = 'scheduled'
                         AND scheduled_for < %s ORDER BY scheduled_for""", (row["id"], now - LATE))
        late = cur.fetchall()
    busy = False
    if row["overlap"] == "skip":
        cur.execute("""SELECT 1 FROM events WHERE schedule_id = %s AND state NOT IN ('finished', 'failed', 'cancelled')
                         AND NOT (id = ANY(%s)) LIMIT 1""", (row["id"], [e["id"] for e in late]))
        busy = cur.fetchone() is not None
    if missed or late:
        if busy or row["catch_up"] == "skip":
            limit = 0
        elif row["catch_up"] == "latest":
            limit = 1
        else:
            limit = int(row["catch_up_limit"])
        late_at = [e["scheduled_for"] for e in late]
        keep = sorted(late_at + rule.latest(made_until, now, limit))[-limit:] if limit else []
        kept_late = set(late_at) & set(keep)
        dropped = [e["id"] for e in late if e["scheduled_for"] not in kept_late]
        if dropped:
            why = "skipped: the previous occurrence had not ended (overlap skip)" if busy else \
                f"skipped: missed while no instance ran (catch_up {row['catch_up']})"
            cur.execute("""UPDATE events SET state = 'cancelled', finished_at = now(), updated_at = now(),
                                  last_error = %s WHERE id = ANY(%s) AND state = 'scheduled'""", (why, dropped))
        made += _insert(cur, row, [when for when in keep if when not in kept_late])
        if stats:
            stats.count("skipped", name, missed + len(late) - len(keep))
            stats.count("caught_up", name, len(keep))
        if missed:
            made_until = now  # every instant up to now is dealt with
    if busy:
        # Nothing new while the previous occurrence runs; instants passing meanwhile were skipped above.
        _moved(cur, row, made_until)
        return len(made)
    # An occurrence is pending when the newest one made is still ahead. Not for a new schedule whose start_at
    # is ahead: its made_until is only the bound just before start_at, and its first occurrence is made now.
    pending = made_until > now and not fresh
    future: list[datetime] = []
    for when in rule.after(max(made_until, now)):
        # At least the next occurrence (unless one is pending already), and all those due within the lookahead.
        if when > now + LOOKAHEAD and (future or pending):
            break
        future.append(when)
        if row["overlap"] == "skip" or len(future) >= 1000:
            break
    ahead = _insert(cur, row, future)
    if future:
        made_until = future[-1]
    if stats:
        stats.count("made", name, len(ahead))
    _moved(cur, row, made_until)
    return len(made) + len(ahead)


def _moved(cur: DictCursor, row: dict[str, Any], made_until: datetime) -> None:
    if made_until != row["made_until"]:  # a round that changed nothing writes nothing (a restart with 10,000)
        cur.execute("UPDATE schedules SET made_until = %s WHERE id = %s", (made_until, row["id"]))


def _insert(cur: DictCursor, row: dict[str, Any], instants: list[datetime]) -> list[datetime]:
    """The occurrences' events, each once: its idempotency key names the schedule and the instant."""
    if not instants:
        return []
    fingerprint = hashlib.sha256(json.dumps({"schedule": row["id"]}).encode()).hexdigest()
    cur.execute(
        """INSERT INTO events (callback_id, payload, scheduled_for, priority, max_attempts, idempotency_key,
                               idempotency_fingerprint, source, schedule_id)
           SELECT %s, %s, v.at, %s, COALESCE(%s, c.max_attempts), v.key, %s, 'schedule', %s
           FROM unnest(%s::timestamptz[], %s::text[]) AS v(at, key), callbacks c
           WHERE c.id = %s
           ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
           RETURNING id, scheduled_for""",
        (row["callback_id"], Json(row["payload"]), row["priority"], row["max_attempts"], fingerprint, row["id"],
         instants, [key_of(row["id"], when) for when in instants], row["callback_id"]))
    created = cur.fetchall()
    if created:
        cur.execute(f"{EVENT_SELECT} WHERE e.id = ANY(%s)", ([r["id"] for r in created],))
        with audit.batch():
            for event in cur.fetchall():
                audit.record("event_created", event, source="schedule", schedule=row["name"],
                             scheduled_for=event["scheduled_for"])
    return [r["scheduled_for"] for r in created]
