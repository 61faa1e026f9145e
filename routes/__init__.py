"""HTTP routes: parse the request, call a controller, answer. No rules live here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from flask import current_app, jsonify

from config import Settings
from db import Database
from metrics import Metrics

if TYPE_CHECKING:
    from engine import Engine


@dataclass
class Services:
    """What the routes may use, hung on the Flask app (one per app, so tests can build several)."""

    settings: Settings
    db: Database
    metrics: Metrics
    engine: Optional["Engine"] = None


def services() -> Services:
    return current_app.extensions["punctual"]


def answer(body: Any, status: int = 200, **headers: str):
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response
