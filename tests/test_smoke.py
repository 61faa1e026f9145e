"""The shortest path through Punctual: an event scheduled over the API runs and is recorded."""
from tests.helpers import wait_for


def test_a_due_event_runs_and_its_history_is_recorded(live_client):
    created = live_client.post("/events", json={"callback": "Addition", "payload": {"x": 2, "y": 3}})
    assert created.status_code == 201, created.json
    event_id = created.json["id"]

    done = wait_for(lambda: (r := live_client.get(f"/events/{event_id}").json)["state"] == "finished" and r,
                    timeout=10, message="event to finish")
    assert done["result"] == 5
    assert [h["state"] for h in done["history"]] == ["scheduled", "running", "finished"]
    assert done["history"][1]["attempt"] == 1
