"""Callback kinds: how an attempt of each kind runs, and what target each kind accepts."""
from __future__ import annotations

from typing import Any, Callable

from config import Settings
from engine.kinds import kafka, python, webhook
from engine.kinds.base import AttemptFailed, Attempt

__all__ = ["AttemptFailed", "Attempt", "run", "runs_inline", "validate_config", "validate_target"]

# kind -> runner(settings, attempt) -> result. `manual` events are never run by the engine:
# a person or external worker claims them through the API (controllers/claims.py).
RUNNERS: dict[str, Callable[[Settings, Attempt], Any]] = {
    "python": python.run,
    "webhook": webhook.run,
    "kafka": kafka.run,
}


def run(settings: Settings, attempt: Attempt) -> Any:
    """Run one attempt; return its JSON-able result or raise AttemptFailed."""
    runner = RUNNERS.get(attempt.kind)
    if runner is None:
        raise AttemptFailed(f"callbacks of kind {attempt.kind!r} cannot run in this instance")
    return runner(settings, attempt)


def runs_inline(kind: str, target: str) -> bool:
    """Whether an attempt may run in the thread that claimed it: only python handlers declared inline
    (pure, quick, bounded); everything else goes to the worker pool, under its timeout."""
    return kind == "python" and python.is_inline(target)


def validate_target(settings: Settings, kind: str, target: str, config: dict[str, Any]) -> str | None:
    """Why this target does not suit the kind, or None when it does."""
    if kind == "python":
        return python.validate_target(target)
    if kind == "webhook":
        return webhook.validate_target(settings, target, config)
    if kind == "kafka":
        return None if target.strip() else "a kafka callback needs a topic as its target"
    return None


def validate_config(kind: str, config: dict[str, Any]) -> str | None:
    """Why this config does not suit the kind (e.g. a webhook header that would inject a line), or None."""
    if kind == "webhook":
        return webhook.config_problem(config)
    return None
