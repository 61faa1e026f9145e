"""Callback kinds: how an attempt of each kind runs. What each kind accepts as a target is a rule of the
API, in controllers/targets.py."""
from __future__ import annotations

from typing import Any, Optional

from config import Settings
from engine.kinds import kafka, python, webhook
from engine.kinds.base import Attempt, AttemptFailed

__all__ = ["Attempt", "AttemptFailed", "Kinds"]


class Kinds:
    """Runs attempts of each kind with what that kind needs: the settings (webhook allow-list, timeouts)
    and, when the Kafka bridge is on, its producer. Passed to the roles that run attempts; `manual`
    events are never run by the engine (a person or external worker claims them through the API)."""

    def __init__(self, settings: Settings, producer: Optional[kafka.Sender] = None) -> None:
        self.settings = settings
        self.producer = producer

    def run(self, attempt: Attempt) -> Any:
        """Run one attempt; return its JSON-able result or raise AttemptFailed."""
        if attempt.kind == "python":
            return python.run(self.settings, attempt)
        if attempt.kind == "webhook":
            return webhook.run(self.settings, attempt)
        if attempt.kind == "kafka":
            return kafka.run(self.producer, attempt)
        raise AttemptFailed(f"callbacks of kind {attempt.kind!r} cannot run in this instance")

    @staticmethod
    def runs_inline(kind: str, target: str) -> bool:
        """Whether an attempt may run in the thread that claimed it: only python handlers declared inline
        (pure, quick, bounded); everything else goes to the worker pool, under its timeout."""
        return kind == "python" and python.is_inline(target)
