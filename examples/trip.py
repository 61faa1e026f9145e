"""The trip booking saga of kafka-workflow, as a Punctual workflow: reserve a car, a hotel and a flight; when a
step fails, the compensations collected so far run, newest first (cancel the hotel, then the car).

Each reservation is a step, so an event of a callback: here `python` handlers standing in for the three booking
services (a webhook or a kafka callback would do the same). Callbacks to create once:

    reserve_car, reserve_hotel, reserve_flight, cancel_car, cancel_hotel, cancel_flight
    (kind python, target trip.<same name>)

A booking service must deduplicate on the event id: a step is done once, but an attempt can reach the outside
world and then be retried (a crash before its outcome was written).
"""
from __future__ import annotations

from typing import Any

from engine.kinds.base import AttemptFailed
from engine.kinds.python import handler
from workflows import workflow

CALLBACKS = ("reserve_car", "reserve_hotel", "reserve_flight", "cancel_car", "cancel_hotel", "cancel_flight")


@workflow("trip")
def trip(ctx: Any, booking: dict[str, Any]) -> dict[str, Any]:
    """A saga: each reservation registers how to undo it before the next one is tried."""
    car = ctx.step("reserve_car", {"trip": booking["trip"], "city": booking["city"]})
    ctx.on_failure("cancel_car", {"reservation": car["reservation"]})
    hotel = ctx.step("reserve_hotel", {"trip": booking["trip"], "city": booking["city"],
                                       "nights": booking.get("nights", 1)})
    ctx.on_failure("cancel_hotel", {"reservation": hotel["reservation"]})
    flight = ctx.step("reserve_flight", {"trip": booking["trip"], "to": booking["city"],
                                         "seat": booking.get("seat", "any")})
    return {"car": car["reservation"], "hotel": hotel["reservation"], "flight": flight["reservation"]}


def _reserve(kind: str, payload: dict[str, Any], attempt: Any) -> dict[str, Any]:
    # The event id makes the reservation's id: a retried attempt asks for the same reservation again.
    return {"reservation": f"{kind}-{payload['trip']}-{attempt.event_id}"}


@handler("trip.reserve_car")
def reserve_car(payload: dict[str, Any], attempt: Any) -> dict[str, Any]:
    return _reserve("car", payload, attempt)


@handler("trip.reserve_hotel")
def reserve_hotel(payload: dict[str, Any], attempt: Any) -> dict[str, Any]:
    return _reserve("hotel", payload, attempt)


@handler("trip.reserve_flight")
def reserve_flight(payload: dict[str, Any], attempt: Any) -> dict[str, Any]:
    if payload.get("seat") == "none left":
        raise AttemptFailed(f"no seat to {payload['to']}")
    return _reserve("flight", payload, attempt)


@handler("trip.cancel_car")
def cancel_car(payload: dict[str, Any]) -> dict[str, Any]:
    return {"cancelled": payload["reservation"]}


@handler("trip.cancel_hotel")
def cancel_hotel(payload: dict[str, Any]) -> dict[str, Any]:
    return {"cancelled": payload["reservation"]}


@handler("trip.cancel_flight")
def cancel_flight(payload: dict[str, Any]) -> dict[str, Any]:
    return {"cancelled": payload["reservation"]}
