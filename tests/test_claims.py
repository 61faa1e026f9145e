"""Manual callbacks and the pull API: named workers claim, extend, complete and release events under a lease.

Each claim answers a lease_token; extend, complete and release need it. With tokens configured, a desk
token's name is the worker: the body cannot claim to be someone else."""
from __future__ import annotations

import hashlib

import pytest

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

    lease = claimed["lease_token"]
    stolen = client.post(f"/events/{event_id}/complete", json={"worker": "bob", "lease_token": lease,
                                                               "result": {"fixed": True}})
    assert stolen.status_code == 409
    guessed = client.post(f"/events/{event_id}/complete", json={"worker": "ann", "lease_token": "guess",
                                                                "result": {"fixed": True}})
    assert guessed.status_code == 409
    assert "lease_token" in guessed.json["error"]["message"]

    done = client.post(f"/events/{event_id}/complete", json={"worker": "ann", "lease_token": lease,
                                                             "result": {"fixed": True}})
    assert done.status_code == 200, done.json
    assert done.json["state"] == "finished" and done.json["result"] == {"fixed": True}


def test_extend_gives_more_time_and_release_frees_the_event_at_once(client, db_url):
    event_id = _alert(client, "disk full")
    lease = client.post("/events/claim", json={"worker": "ann", "lease_seconds": 5}).json["lease_token"]
    before = sql(db_url, "SELECT lease_until FROM events WHERE id = %s", (event_id,))[0]["lease_until"]

    extended = client.post(f"/events/{event_id}/extend", json={"worker": "ann", "lease_token": lease, "seconds": 60})
    assert extended.status_code == 200, extended.json
    after = sql(db_url, "SELECT lease_until FROM events WHERE id = %s", (event_id,))[0]["lease_until"]
    assert (after - before).total_seconds() > 50

    assert client.post(f"/events/{event_id}/release", json={"worker": "ann"}).status_code == 422  # no lease_token
    released = client.post(f"/events/{event_id}/release", json={"worker": "ann", "lease_token": lease})
    assert released.status_code == 200 and released.json["state"] == "scheduled"
    taken = client.post("/events/claim", json={"worker": "bob"})
    assert taken.status_code == 200 and taken.json["id"] == event_id


def test_an_expired_lease_hands_the_event_to_another_worker_and_history_shows_each_assignment(client):
    event_id = _alert(client, "disk full")
    first = client.post("/events/claim", json={"worker": "ann", "lease_seconds": 0.3}).json
    assert first["id"] == event_id
    assert client.post("/events/claim", json={"worker": "bob"}).status_code == 204  # ann still holds it

    taken = wait_for(lambda: (r := client.post("/events/claim", json={"worker": "bob"})).status_code == 200 and r,
                     timeout=5, message="the lease to expire")
    assert taken.json["id"] == event_id and taken.json["worker"] == "bob"

    late = client.post(f"/events/{event_id}/complete", json={"worker": "ann", "lease_token": first["lease_token"]})
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
    assert client.post("/events/999999/complete", json={"worker": "ann", "lease_token": "x"}).status_code == 404
    assert client.post("/events/999999/complete", json={"worker": "ann"}).status_code == 422


def test_a_lease_token_is_answered_by_the_claim_only(client):
    event_id = _alert(client, "disk full")
    lease = client.post("/events/claim", json={"worker": "ann"}).json["lease_token"]
    assert len(lease) >= 20
    for response in (client.get(f"/events/{event_id}"), client.get("/events")):
        assert lease not in response.get_data(as_text=True)


@pytest.fixture
def desk(settings, db, db_url):
    """The API with tokens: ann and bob hold desk tokens, the admin holds API_TOKEN."""
    from app import create_app

    for name in ("ann", "bob"):
        sql(db_url, "INSERT INTO api_tokens (name, scope, token_hash) VALUES (%s, 'desk', %s)",
            (name, hashlib.sha256(f"{name}-secret".encode()).hexdigest()))
    client = create_app(settings.with_(api_token="admin-secret"), db).test_client()
    tokens = {name: {"Authorization": f"Bearer {name}-secret"} for name in ("ann", "bob", "admin")}
    return client, tokens


def test_a_desk_token_is_its_worker_and_cannot_act_as_another(desk, db_url):
    client, tokens = desk
    event_id = client.post("/events", json={"callback": "Alert", "payload": {"message": "disk full"}},
                           headers=tokens["admin"]).json["id"]
    # bob cannot claim in ann's name.
    assert client.post("/events/claim", json={"worker": "ann"}, headers=tokens["bob"]).status_code == 403
    claimed = client.post("/events/claim", json={}, headers=tokens["ann"])
    assert claimed.status_code == 200 and claimed.json["worker"] == "ann"
    lease = claimed.json["lease_token"]
    before = sql(db_url, "SELECT state, worker, lease_until, result FROM events WHERE id = %s", (event_id,))
    # bob, who learned ann's lease_token, still cannot complete, extend or release it: not by naming ann
    # (403) nor as himself (409), and nothing changes.
    for action in ("complete", "extend", "release"):
        as_ann = client.post(f"/events/{event_id}/{action}", json={"worker": "ann", "lease_token": lease},
                             headers=tokens["bob"])
        assert as_ann.status_code == 403, (action, as_ann.json)
        as_bob = client.post(f"/events/{event_id}/{action}", json={"lease_token": lease}, headers=tokens["bob"])
        assert as_bob.status_code == 409, (action, as_bob.json)
    assert sql(db_url, "SELECT state, worker, lease_until, result FROM events WHERE id = %s", (event_id,)) == before
    # ann completes with her token and lease; the worker comes from her token.
    done = client.post(f"/events/{event_id}/complete", json={"lease_token": lease, "result": "fixed"},
                       headers=tokens["ann"])
    assert done.status_code == 200 and done.json["state"] == "finished" and done.json["worker"] == "ann"


def test_an_admin_may_act_as_a_named_worker_but_still_needs_the_lease_token(desk):
    client, tokens = desk
    event_id = client.post("/events", json={"callback": "Alert", "payload": {}}, headers=tokens["admin"]).json["id"]
    lease = client.post("/events/claim", json={}, headers=tokens["ann"]).json["lease_token"]
    assert client.post(f"/events/{event_id}/release", json={"worker": "ann", "lease_token": "wrong"},
                       headers=tokens["admin"]).status_code == 409
    released = client.post(f"/events/{event_id}/release", json={"worker": "ann", "lease_token": lease},
                           headers=tokens["admin"])
    assert released.status_code == 200 and released.json["state"] == "scheduled"
    mine = client.post("/events/claim", json={}, headers=tokens["admin"])
    assert mine.status_code == 200 and mine.json["worker"] == "admin"
