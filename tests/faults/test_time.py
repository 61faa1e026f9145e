"""Time: offsets, DST changes, the far past and future, leap days, naive timestamps, and the app run
under three TZ settings with the database session defaulting to yet other zones.

The instants are fixed UTC values written in many local forms; whatever zone the process or the
database session is in, each must be stored as the same instant, answered in the same UTC text,
and run at that instant (never early, and within the lateness bound).
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import psycopg2
import psycopg2.extensions
import pytest
import requests

from tests.faults.conftest import record_figure
from tests.helpers import sql, wait_for

ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]
DATABASE_ZONE = "Pacific/Auckland"   # ALTER DATABASE ... SET timezone
CLIENT_ZONE = "America/Sao_Paulo"    # PGTZ: libpq sends it as the session's TimeZone at connect

# Fixed instants, each written in several local forms that must all mean it.
FIXED = {
    "us-dst-before": ["2027-03-14T06:59:59Z", "2027-03-14T01:59:59-05:00"],     # 1:59:59 EST, then clocks jump
    "us-dst-after": ["2027-03-14T07:00:01Z", "2027-03-14T03:00:01-04:00"],      # 3:00:01 EDT, 2 s later
    "us-fall-ambiguous-1": ["2027-11-07T05:30:00Z", "2027-11-07T01:30:00-04:00"],  # 1:30 EDT
    "us-fall-ambiguous-2": ["2027-11-07T06:30:00Z", "2027-11-07T01:30:00-05:00"],  # 1:30 EST, an hour later
    "eu-dst": ["2027-03-28T00:59:59Z", "2027-03-28T01:59:59+01:00", "2027-03-28T02:59:59+02:00"],
    "leap-day": ["2028-02-29T12:00:00Z", "2028-02-29T17:30:00+05:30", "2028-02-29T07:00:00-05:00"],
    "chatham": ["2027-06-01T00:00:00Z", "2027-06-01T12:45:00+12:45"],
    "line-islands": ["2027-06-01T00:00:00Z", "2027-06-01T14:00:00+14:00", "2027-05-31T12:00:00-12:00"],
    "far-future": ["9999-12-31T23:59:59Z", "9999-12-31T18:59:59-05:00"],
}
FAR_PAST = ["1970-01-01T00:00:00Z", "2000-02-29T00:00:00+05:30", "1999-12-31T23:59:59-08:00"]
REFUSED = ["2027-05-01T10:00:00", "2027-02-29T10:00:00Z", "2027-03-14T02:30:00", "tomorrow", "1714550400"]
SOON_OFFSETS = ["+00:00", "Z", "+05:30", "-04:00", "+14:00", "-12:00", "+05:45", "+12:45", "-09:30"]


def _in_zone(instant: datetime, offset: str) -> str:
    if offset == "Z":
        return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    return instant.astimezone(timezone(sign * timedelta(hours=hours, minutes=minutes))).isoformat()


@pytest.fixture
def zone_databases(pg_server):
    """One fresh database per zone, each defaulting sessions to DATABASE_ZONE."""
    url, template = pg_server
    admin = psycopg2.connect(url)
    admin.autocommit = True
    names = [f"punctual_tz_{os.getpid()}_{i}" for i in range(len(ZONES))]
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
            cur.execute(f"ALTER DATABASE {name} SET timezone = '{DATABASE_ZONE}'")
    yield [psycopg2.extensions.make_dsn(url, dbname=name) for name in names]
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def test_every_form_of_an_instant_is_stored_answered_and_run_identically_whatever_the_zones(
        zone_databases, start_app_on):
    apps = [start_app_on(url, TZ=zone, WORKER_THREADS="4", DB_POOL_SIZE="4", HTTP_THREADS="2")
            for zone, url in zip(ZONES, zone_databases)]
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=4)
    answered: dict[str, dict[str, str]] = {}
    created_at: dict[str, datetime] = {}
    for zone, app, url in zip(ZONES, apps, zone_databases):
        assert sql(url, "SHOW timezone")[0]["TimeZone"] == DATABASE_ZONE  # a plain session here is not in UTC
        requests.post(app.url + "/callbacks", json={"name": "rec", "kind": "python", "target": "record"},
                      timeout=5).raise_for_status()
        seen: dict[str, str] = {}
        forms = {f"{label}#{i}": text for label, texts in FIXED.items() for i, text in enumerate(texts)}
        forms |= {f"soon#{offset}": _in_zone(soon, offset) for offset in SOON_OFFSETS}
        forms |= {f"past#{i}": text for i, text in enumerate(FAR_PAST)}
        created_at[zone] = datetime.now(timezone.utc)
        for key, text in forms.items():
            answer = requests.post(app.url + "/events", json={"callback": "rec", "payload": {"key": key},
                                                              "scheduled_for": text}, timeout=5)
            assert answer.status_code == 201, (zone, key, text, answer.text)
            event = requests.get(f"{app.url}/events/{answer.json()['id']}", timeout=5).json()
            assert event["scheduled_for"] == answer.json()["scheduled_for"]
            seen[key] = event["scheduled_for"]
        for text in REFUSED:
            answer = requests.post(app.url + "/events", json={"callback": "rec", "payload": {}, "scheduled_for": text},
                                   timeout=5)
            assert answer.status_code in (400, 422), (zone, text, answer.status_code, answer.text)
            assert answer.json()["error"]["code"]
        answered[zone] = seen

    # The same answers in every zone, each the UTC text of its instant.
    assert answered[ZONES[1]] == answered[ZONES[0]] and answered[ZONES[2]] == answered[ZONES[0]]
    for label, texts in FIXED.items():
        instants = {datetime.fromisoformat(answered["UTC"][f"{label}#{i}"]) for i in range(len(texts))}
        assert instants == {datetime.fromisoformat(texts[0].replace("Z", "+00:00"))}, (label, instants)
        assert all(answered["UTC"][f"{label}#{i}"].endswith("+00:00") for i in range(len(texts)))
    before = datetime.fromisoformat(answered["UTC"]["us-dst-before#0"])
    after = datetime.fromisoformat(answered["UTC"]["us-dst-after#0"])
    assert (after - before).total_seconds() == 2  # across the spring-forward gap: 2 s, not an hour
    fall = [datetime.fromisoformat(answered["UTC"][f"us-fall-ambiguous-{n}#0"]) for n in (1, 2)]
    assert (fall[1] - fall[0]).total_seconds() == 3600  # the two 1:30s of the fall-back night stay an hour apart
    assert {answered["UTC"][f"soon#{o}"] for o in SOON_OFFSETS} == {soon.isoformat()}

    # Runs: the far past at once, the "soon" forms at their instant, the future ones not at all.
    worst = 0.0
    for zone, url in zip(ZONES, zone_databases):
        expected = len(SOON_OFFSETS) + len(FAR_PAST)
        wait_for(lambda: sql(url, "SELECT count(*) AS n FROM executions")[0]["n"] >= expected, 15, 0.1,
                 f"the due events to run under TZ={zone}")
        rows = sql(url, """SELECT e.payload->>'key' AS key, e.scheduled_for, x.at FROM events e
                           JOIN executions x ON x.event_id = e.id""")
        assert sorted(r["key"] for r in rows) == sorted([f"soon#{o}" for o in SOON_OFFSETS] +
                                                       [f"past#{i}" for i in range(len(FAR_PAST))]), zone
        for row in rows:
            if row["key"].startswith("past"):
                assert (row["at"] - created_at[zone]).total_seconds() < 3, (zone, row)
            else:
                late = (row["at"] - soon).total_seconds()
                assert 0 <= late < 1.0, (zone, row["key"], late)
                worst = max(worst, late)
        assert sql(url, "SELECT count(*) AS n FROM events WHERE state = 'scheduled'")[0]["n"] == \
            sum(len(texts) for texts in FIXED.values())
    record_figure("time zones", f"{len(ZONES)} TZ x database zone {DATABASE_ZONE}: identical "
                  f"answers; {len(SOON_OFFSETS)} offsets of one instant ran 0-{worst * 1000:.0f} ms after it")


def test_instants_are_answered_in_utc_even_when_pgtz_names_another_zone(db_url, start_app_on):
    app = start_app_on(db_url, PGTZ=CLIENT_ZONE, WORKER_THREADS="2", DB_POOL_SIZE="2", HTTP_THREADS="2")
    answer = requests.post(app.url + "/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1},
                                                      "scheduled_for": "2027-06-01T12:00:00+05:30"}, timeout=5)
    assert answer.status_code == 201, answer.text
    assert answer.json()["scheduled_for"] == "2027-06-01T06:30:00+00:00"
