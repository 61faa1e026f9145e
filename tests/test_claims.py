"""Manual callbacks and the pull API: named workers claim, extend, complete and release events under a lease."""
from __future__ import annotations

from tests.helpers import sql, wait_for


def _alert(client, message: str, **extra) -> int:
    created = client.post("/events", json={"callback": "Alert", "payload": {"alert_id": message, "message": message},
                                           **extra})
    assert created.status_code == 201, created.json
    return created.json["id"]


def test_two_workers_never_hold_the_same_event(client):
    first, second = _alert(client, "disk full"), _alert(client, "cpu hot")

    ann = client.post("/events/claim", json={"worker": "ann"})
    bob = client.post("/events/claim", json={"worker": "bob"})
    assert ann.status_code == 200 and bob.status_code == 200
    assert {ann.json["id"], bob.json["id"]} == {first, second}
    assert ann.json["worker"] == "ann" and ann.json["state"] == "running"

    nobody = client.post("/events/claim", json={"worker": "cid"})
    assert nobody.status_code == 204  # nothing waits


def test_the_holder_completes_with_a_result_and_others_cannot(client):
    event_id = _alert(client, "disk full")
    claimed = client.post("/events/claim", json={"worker": "ann"}).json
    assert claimed["id"] == event_id

    stolen = client.post(f"/events/{event_id}/complete", json={"worker": "bob", "result": {"fixed": True}})
    assert stolen.status_code == 409

    done = client.post(f"/events/{event_id}/complete", json={"worker": "ann", "result": {"fixed": True}})
    assert done.status_code == 200, done.json
    assert done.json["state"] == "finished" and done.json["result"] == {"fixed": True}


def test_extend_gives_more_time_and_release_frees_the_event_at_once(client, db_url):
    event_id = _alert(client, "disk full")
    client.post("/events/claim", json={"worker": "ann", "lease_seconds": 5})
    before = sql(db_url, "SELECT lease_until FROM events WHERE id = %s", (event_id,))[0]["lease_until"]

    extended = client.post(f"/events/{event_id}/extend", json={"worker": "ann", "seconds": 60})
    assert extended.status_code == 200, extended.json
    after = sql(db_url, "SELECT lease_until FROM events WHERE id = %s", (event_id,))[0]["lease_until"]
    assert (after - before).total_seconds() > 50

    released = client.post(f"/events/{event_id}/release", json={"worker": "ann"})
    assert released.status_code == 200 and released.json["state"] == "scheduled"
    taken = client.post("/events/claim", json={"worker": "bob"})
    assert taken.status_code == 200 and taken.json["id"] == event_id


def test_an_expired_lease_hands_the_event_to_another_worker_and_history_shows_each_assignment(client):
    event_id = _alert(client, "disk full")
    assert client.post("/events/claim", json={"worker": "ann", "lease_seconds": 0.3}).json["id"] == event_id
    assert client.post("/events/claim", json={"worker": "bob"}).status_code == 204  # ann still holds it

    taken = wait_for(lambda: (r := client.post("/events/claim", json={"worker": "bob"})).status_code == 200 and r,
                     timeout=5, message="the lease to expire")
    assert taken.json["id"] == event_id and taken.json["worker"] == "bob"

    late = client.post(f"/events/{event_id}/complete", json={"worker": "ann"})
    assert late.status_code == 409  # ann's lease is gone

    history = client.get(f"/events/{event_id}").json["history"]
    running = [(h["worker"], h["attempt"]) for h in history if h["state"] == "running"]
    assert running == [("ann", 1), ("bob", 2)]
    assert any(h["state"] == "scheduled" and "lease expired" in (h["error"] or "") for h in history)


def test_claim_filters_by_callback_and_takes_higher_priority_first(client):
    low = _alert(client, "low", priority=1)
    high = _alert(client, "high", priority=9)
    assert client.post("/events/claim", json={"worker": "ann", "callback": "Alert"}).json["id"] == high
    assert client.post("/events/claim", json={"worker": "bob", "callback": "Addition"}).status_code == 204
    assert client.post("/events/claim", json={"worker": "bob", "callback": "Alert"}).json["id"] == low


def test_the_engine_never_runs_manual_events(live_client, db_url):
    event_id = _alert(live_client, "needs a person")
    marker = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 1, "y": 1}}).json["id"]
    wait_for(lambda: live_client.get(f"/events/{marker}").json["state"] == "finished", 10)
    assert live_client.get(f"/events/{event_id}").json["state"] == "scheduled"


def test_claim_requests_are_validated(client):
    assert client.post("/events/claim", json={}).status_code == 422
    assert client.post("/events/claim", json={"worker": ""}).status_code == 422
    assert client.post("/events/999999/complete", json={"worker": "ann"}).status_code == 404
