"""The audit trail: one parseable JSON line per state change, with a fixed `action` vocabulary,
proof against log injection, moved by LOG_DIR, and rotated by size."""
from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import audit
from config import Settings
from engine import Engine
from engine.kinds.python import handler
from metrics import Metrics
from tests.helpers import event_history, sql, wait_for

# Characters that end a line for one reader or another: \n and \r for files, and for str.splitlines()
# also \v, \f, \x1c-\x1e, \x85 (NEL), \u2028 and \u2029.
INJECTION = ('evil\n{"action": "attempt_succeeded", "event_id": 1}\r\n'
             '\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029{"forged": true}\u0007 "quote" \\ end')


@handler("explode")
def explode(payload: dict[str, Any]) -> None:
    """Raises with the payload's message: lets a test put any text into an error."""
    raise RuntimeError(payload["message"])


def lines(folder: Path, name: str = "events.log") -> list[dict[str, Any]]:
    """Every line of a log file, split the strictest way; each must be one JSON object."""
    path = folder / name
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    parsed = [json.loads(line) for line in text.splitlines()]
    assert len(parsed) == text.count("\n"), "a record spans more than one line"
    assert all(isinstance(item, dict) for item in parsed)
    return parsed


def settled(db_url: str, event_id: int, timeout: float = 8.0) -> dict[str, Any]:
    def done():
        rows = sql(db_url, "SELECT * FROM events WHERE id = %s AND state IN ('finished', 'failed')", (event_id,))
        return rows[0] if rows else None
    return wait_for(done, timeout=timeout, message=f"event {event_id} to finish or fail")


def test_every_state_change_writes_one_json_line_with_its_action(live_client, db_url, log_dir):
    sql(db_url, "INSERT INTO callbacks (name, kind, target) VALUES ('Flaky', 'python', 'flaky')")
    created = live_client.post("/events", json={"callback": "Flaky", "payload": {"succeed_on": 2}})
    flaky = created.json["id"]
    failing = live_client.post("/events", json={"callback": "Division", "payload": {"x": 1, "y": 0},
                                                "max_attempts": 1}).json["id"]
    settled(db_url, flaky)
    settled(db_url, failing)
    wait_for(lambda: len([x for x in lines(log_dir) if x["event_id"] in (flaky, failing)]) >= 8, timeout=3,
             message="the last audit lines")
    records = lines(log_dir)
    for line in records:
        assert line["action"] in audit.ACTIONS
        assert datetime.fromisoformat(line["time"]).utcoffset() is not None
        for key in ("event_id", "callback", "attempt", "state"):
            assert key in line
    for event_id, callback in ((flaky, "Flaky"), (failing, "Division")):
        mine = [line for line in records if line["event_id"] == event_id]
        steps = event_history(db_url, event_id)
        # One line per state change: the same states, in the same order, as the history tells them.
        assert [(line["state"], line["attempt"]) for line in mine] == [(s["state"], s["attempt"]) for s in steps]
        assert {line["callback"] for line in mine} == {callback}
    flaky_lines = [line for line in records if line["event_id"] == flaky]
    assert [line["action"] for line in flaky_lines] == [
        "event_created", "attempt_started", "attempt_failed", "attempt_started", "attempt_succeeded"]
    failed_attempt, succeeded = flaky_lines[2], flaky_lines[4]
    assert failed_attempt["error"] == "RuntimeError: flaky failure on attempt 1" and failed_attempt["duration"] >= 0
    assert "next_run" in failed_attempt
    assert succeeded["result"] == 2 and succeeded["duration"] >= 0
    assert [line["action"] for line in records if line["event_id"] == failing] == [
        "event_created", "attempt_started", "event_failed"]
    last = [line for line in records if line["event_id"] == failing][-1]
    assert last["error"] == "division by zero: y must not be 0" and last["duration"] >= 0


def test_api_changes_are_audited_with_their_action(live_client, db_url, log_dir):
    def create() -> int:
        return live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1},
                                                 "scheduled_for": "2999-01-01T00:00:00+00:00"}).json["id"]

    moved, cancelled, deleted = create(), create(), create()
    assert live_client.put(f"/events/{moved}", json={"priority": 5}).status_code == 200
    assert live_client.post(f"/events/{cancelled}/cancel").status_code == 200
    assert live_client.post(f"/events/{cancelled}/retry").status_code == 200
    assert live_client.delete(f"/events/{deleted}").status_code == 204
    settled(db_url, cancelled)
    wait_for(lambda: any(line["event_id"] == cancelled and line["action"] == "attempt_succeeded"
                         for line in lines(log_dir)), timeout=3, message="the audit line written after the commit")
    actions = {}
    for line in lines(log_dir):
        actions.setdefault(line["event_id"], []).append(line["action"])
    assert actions[moved] == ["event_created", "event_rescheduled"]
    assert actions[cancelled][:3] == ["event_created", "event_cancelled", "event_retried"]
    assert actions[cancelled][3:] == ["attempt_started", "attempt_succeeded"]
    assert actions[deleted] == ["event_created", "event_deleted"]


def test_log_injection_in_payloads_and_errors_keeps_every_line_one_json_object(live_client, db_url, log_dir):
    sql(db_url, "INSERT INTO callbacks (name, kind, target, max_attempts) VALUES ('Explode', 'python', 'explode', 1)")
    created = live_client.post("/events", json={"callback": "Explode", "payload": {"message": INJECTION},
                                                "idempotency_key": "k\n{\"forged\": 1}\u2028"})
    assert created.status_code == 201, created.json
    event_id = created.json["id"]
    assert settled(db_url, event_id)["last_error"] == f"RuntimeError: {INJECTION}"
    wait_for(lambda: any(line["action"] == "event_failed" for line in lines(log_dir)), timeout=3,
             message="the event_failed line")
    records = lines(log_dir)
    assert {line["event_id"] for line in records} == {event_id}
    assert not any("forged" in line for line in records)
    [failed] = [line for line in records if line["action"] == "event_failed"]
    assert failed["error"] == f"RuntimeError: {INJECTION}"
    errors = lines(log_dir, "errors.log")  # the handler's traceback is logged there
    assert any(INJECTION in json.dumps(line, ensure_ascii=False) or INJECTION in line.get("exception", "")
               for line in errors)
    assert not any("forged" in line for line in errors)


def test_log_dir_moves_the_audit_and_error_logs(db, db_url, tmp_path, log_dir):
    moved = tmp_path / "elsewhere" / "audit"
    settings = Settings.from_env({"LOG_DIR": str(moved), "SWEEP_SECONDS": "0.5"})
    assert settings.log_dir == str(moved)
    audit.setup_logging(settings.log_dir, settings.log_max_bytes, settings.log_backups)
    eng = Engine(db, settings, Metrics())
    eng.start()
    try:
        event_id = sql(db_url, """INSERT INTO events (callback_id, payload) SELECT id, '{"x": 1, "y": 0}'
                                  FROM callbacks WHERE name = 'Division' RETURNING id""")[0]["id"]
        wait_for(lambda: any(line["event_id"] == event_id for line in lines(moved)), timeout=8,
                 message="an audit line in the moved folder")
        logging.getLogger("punctual.test").warning("a warning for errors.log")
    finally:
        eng.stop()
    assert (moved / "errors.log").exists()
    assert any(line["message"] == "a warning for errors.log" for line in lines(moved, "errors.log"))
    assert lines(log_dir) == []


def test_audit_logs_rotate_by_size_and_every_file_stays_parseable(tmp_path):
    folder = tmp_path / "rotating"
    audit.setup_logging(str(folder), 2_000, 3)
    event = {"id": 1, "callback": "Addition", "attempts": 1, "state": "finished"}
    for n in range(100):
        audit.record("attempt_succeeded", {**event, "id": n}, duration=0.001, result=n)
    files = sorted(p.name for p in folder.glob("events.log*"))
    assert files == ["events.log", "events.log.1", "events.log.2", "events.log.3"]
    for name in files:
        assert (folder / name).stat().st_size <= 2_000
        assert lines(folder, name), f"{name} is empty"
    kept = sorted(line["event_id"] for name in files for line in lines(folder, name))
    assert kept == list(range(100 - len(kept), 100)), "rotation lost or reordered lines it kept"


def test_times_are_written_as_the_instant_they_are_in_their_own_zone(tmp_path):
    """Lines write a time as str(datetime), UTC or not: the same instant in two zones is written twice, each its way
    (the UTC ones come from a cache, which must not answer for an equal time in another zone)."""
    from datetime import timedelta, timezone

    folder = tmp_path / "times"
    audit.setup_logging(str(folder), 1_000_000, 1)
    utc = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    event = {"id": 1, "callback": "Addition", "attempts": 0, "state": "scheduled"}
    with audit.batch():
        for when in (utc, paris, utc, utc.replace(microsecond=0)):
            audit.record("event_created", event, scheduled_for=when)
    assert [line["scheduled_for"] for line in lines(folder)] == [
        "2030-01-02 03:04:05.678901+00:00", "2030-01-02 04:04:05.678901+01:00",
        "2030-01-02 03:04:05.678901+00:00", "2030-01-02 03:04:05+00:00"]


def test_an_unknown_action_is_refused():
    try:
        audit.record("made_up", {"id": 1})
    except AssertionError:
        return
    raise AssertionError("audit.record accepted an action outside audit.ACTIONS")
