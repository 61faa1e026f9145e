"""Alert escalation: page the on-call person through a `kafka` step, wait for an "acknowledged" signal (5 minutes by
default), else escalate, sleep, and page again; at most 3 rounds.

Callbacks to create once: `page_oncall` and `escalate`, both kind kafka (target: the topics your pager and your
escalation policy read). The acknowledgement is a signal: POST /workflows/<id>/signals/acknowledged with
{"value": "ann"}, or a message {"signal": "acknowledged", "value": "ann"} keyed by the workflow's id on the
workflows topic.
"""
from __future__ import annotations

from typing import Any

from workflows import workflow

ROUNDS = 3


@workflow("escalation")
def escalation(ctx: Any, alert: dict[str, Any]) -> dict[str, Any]:
    ack_timeout = float(alert.get("ack_timeout", 300))
    pause = float(alert.get("pause", 60))
    for level in range(1, ROUNDS + 1):
        ctx.step("page_oncall", {"alert": alert["alert"], "level": level})
        who = ctx.wait_for("acknowledged", timeout=ack_timeout)
        if who is not None:
            return {"acknowledged_by": who, "level": level}
        ctx.step("escalate", {"alert": alert["alert"], "level": level})
        if level < ROUNDS:
            ctx.sleep(pause)
    return {"acknowledged_by": None, "level": ROUNDS}
