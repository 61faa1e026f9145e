"""/alerts and /rejected-messages: the HTTP side of the Kafka bridge."""
from __future__ import annotations

import json
import uuid

from flask_openapi3 import Tag

from controllers import ingest
from errors import Unavailable
from routes import ERRORS, Blueprint, answer, needs, services
from schemas import AlertCreate, AlertSent, RejectedList, RejectedQuery

tag = Tag(name="kafka", description="Alerts produced to Kafka; messages the bridge refused")
bp = Blueprint("kafka", __name__, abp_tags=[tag], abp_responses=ERRORS)


@bp.post("/alerts", responses={202: AlertSent}, security=needs("write"))
def create_alert(body: AlertCreate):
    """Produce an alert to the alerts topic (503 when Kafka is not configured or does not answer)."""
    s = services()
    if s.bridge is None:
        raise Unavailable("Kafka is not configured (KAFKA_BOOTSTRAP_SERVERS is empty)", {"kafka": "off"})
    alert = body.model_dump(exclude_none=True)
    alert.setdefault("alert_id", uuid.uuid4().hex)
    meta = s.bridge.producer.send_for_api(s.settings.kafka_alerts_topic,
                                          json.dumps({"alerts": [alert]}).encode("utf-8"),
                                          str(alert["alert_id"]).encode("utf-8"))
    return answer({"topic": meta.topic, "partition": meta.partition, "offset": meta.offset,
                   "alert_id": alert["alert_id"]}, 202)


@bp.get("/rejected-messages", responses={200: RejectedList}, security=needs("read"))
def list_rejected(query: RejectedQuery):
    """Kafka messages that could not become events, newest first, with their raw bytes and the reason."""
    return answer(ingest.list_rejected(services().db, query.limit, query.cursor))
