"""Named points where a test can make this process die as if killed (kill -9), to prove recovery.

Set PUNCTUAL_CRASH_AT=<point> (and optionally PUNCTUAL_CRASH_AFTER=<n>, the n-th time the point
is reached) in a test's subprocess. Unset, each point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import threading

POINTS = frozenset({
    "after_claim",       # an attempt is claimed (committed running), its callback not yet called
    "in_callback",       # inside the callback, before it returns
    "before_outcome",    # the callback returned; its outcome is not yet committed
    "bridge_before_offset_commit",  # Kafka messages' events committed; their offsets not yet committed
    "workflow_before_advance",      # a workflow is locked for an advance; nothing replayed yet
    "workflow_before_step_event",   # an advance decided a new call step; its event is not yet made
    "workflow_after_step_event",    # the step's event is made, the advance not yet committed
    "workflow_after_advance",       # an advance committed (the next one not yet begun)
})

_target = os.environ.get("PUNCTUAL_CRASH_AT", "")
_remaining = int(os.environ.get("PUNCTUAL_CRASH_AFTER", "1") or 1)
_lock = threading.Lock()


def reached(point: str) -> None:
    """Die here, at once and without cleanup, if a test asked for it."""
    global _remaining
    if point != _target:
        return
    with _lock:
        _remaining -= 1
        if _remaining > 0:
            return
    os._exit(137)
