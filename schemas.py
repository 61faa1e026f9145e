"""Request and response models: they validate every request and generate /openapi.json."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

STATES = ("scheduled", "running", "finished", "failed", "cancelled")
KINDS = ("python", "webhook", "kafka", "manual")
State = Literal["scheduled", "running", "finished", "failed", "cancelled"]
Kind = Literal["python", "webhook", "kafka", "manual"]


def parse_instant(value: Any) -> datetime:
    """ISO 8601 with an explicit offset only: a naive time or a bare number is ambiguous, so it is refused."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2030-01-01T12:00:00+00:00") from None
    else:
        raise ValueError("must be an ISO 8601 date-time string with an offset")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must include a UTC offset (e.g. Z or +05:30); naive times are ambiguous")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        raise ValueError("must be between years 1 and 9999 in UTC") from None


Instant = Annotated[
    datetime,
    BeforeValidator(parse_instant),
    WithJsonSchema({"type": "string", "format": "date-time", "example": "2030-01-01T12:00:00+00:00"}),
]
BIGINT_MAX = 2**63 - 1  # ids and cursors are bigint
Int32 = Annotated[int, Field(ge=-2_147_483_648, le=2_147_483_647)]
Attempts = Annotated[int, Field(ge=1, le=100)]
Timeout = Annotated[float, Field(gt=0, le=86_400)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, so a client can never set ids, states or attempts (no
    mass assignment), and types are strict, so "3" is not taken for 3 nor true for 1 (a JSON body has real
    types; guessing hides client bugs)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StrictQuery(BaseModel):
    """Query strings: unknown parameters are refused (a typo must not silently widen a listing); values
    arrive as text, so they are converted (lax mode) and then checked."""

    model_config = ConfigDict(extra="forbid")


# -- callbacks ----------------------------------------------------------------------------

_CALLBACK_SECRET_HELP = (
    "webhooks only, write-only: the Standard Webhooks signing secret (whsec_ + base64 of 24 to 64 bytes). Omit it "
    "and Punctual makes one, answered once, in this request's answer; \"***\" keeps the stored one")
_CALLBACK_CONFIG_HELP = (
    "headers, key and the like; header values are write-only: answered as \"***\", and \"***\" sent back keeps "
    "the stored value")


class CallbackCreate(Strict):
    name: Name
    kind: Kind
    target: str = Field("", max_length=2000, description="handler name, webhook URL or topic")
    config: dict[str, Any] = Field(default_factory=dict, description=_CALLBACK_CONFIG_HELP,
                                   examples=[{"headers": {"Authorization": "Bearer <token>"}}])
    max_attempts: Optional[Attempts] = None
    timeout_seconds: Optional[Timeout] = None
    signing_secret: Optional[str] = Field(None, max_length=200, description=_CALLBACK_SECRET_HELP, examples=["***"])


class CallbackUpdate(Strict):
    name: Optional[Name] = None
    kind: Optional[Kind] = None
    target: Optional[str] = Field(None, max_length=2000)
    config: Optional[dict[str, Any]] = Field(None, description=_CALLBACK_CONFIG_HELP,
                                             examples=[{"headers": {"Authorization": "***"}}])
    max_attempts: Optional[Attempts] = None
    timeout_seconds: Optional[Timeout] = None
    signing_secret: Optional[str] = Field(None, max_length=200, description=_CALLBACK_SECRET_HELP, examples=["***"])


class CallbackPath(BaseModel):
    callback_id: int


class Callback(BaseModel):
    id: int
    name: str
    kind: Kind
    target: str
    config: dict[str, Any] = Field(description="header values shown as \"***\"",
                                   examples=[{"headers": {"Authorization": "***"}}])
    max_attempts: int
    timeout_seconds: float
    signing_secret: Optional[str] = Field(
        description="webhooks: \"***\", except in the answer of the request that made it (creation, rotation), "
                    "the only time it is shown; null for the other kinds", examples=["***"])
    created_at: datetime
    updated_at: datetime


class CallbackList(BaseModel):
    callbacks: list[Callback]


# -- events -------------------------------------------------------------------------------

class EventCreate(Strict):
    callback: Union[int, Name] = Field(description="the callback's name or id")
    payload: dict[str, Any] = Field(default_factory=dict)
    scheduled_for: Optional[Instant] = Field(None, description="default: now")
    priority: Int32 = 0
    max_attempts: Optional[Attempts] = Field(None, description="default: the callback's")
    idempotency_key: Optional[Name] = None


class EventBatch(Strict):
    events: list[EventCreate] = Field(min_length=1, max_length=10_000)


class EventUpdate(Strict):
    payload: Optional[dict[str, Any]] = None
    scheduled_for: Optional[Instant] = None
    priority: Optional[Int32] = None
    max_attempts: Optional[Attempts] = None


class EventPath(BaseModel):
    event_id: int


class EventQuery(StrictQuery):
    state: Optional[State] = None
    callback: Optional[Name] = Field(None, description="name or id")
    scheduled_after: Optional[Instant] = None
    scheduled_before: Optional[Instant] = None
    limit: int = Field(50, ge=1, le=1000)
    cursor: Optional[int] = Field(None, ge=0, le=BIGINT_MAX, description="next_cursor of the previous page")
    order: Literal["desc", "asc"] = "desc"


class HistoryEntry(BaseModel):
    state: State
    attempt: int
    at: datetime
    worker: Optional[str] = None
    error: Optional[str] = None
    note: Optional[str] = Field(None, description="a change that is not a move between states, e.g. a reschedule")


class Event(BaseModel):
    id: int
    callback: str
    payload: dict[str, Any]
    scheduled_for: datetime
    state: State
    priority: int
    attempts: int
    max_attempts: int
    result: Any = None
    last_error: Optional[str] = None
    idempotency_key: Optional[str] = None
    source: str
    worker: Optional[str] = None
    lease_until: Optional[datetime] = None
    created_at: datetime
    updated_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    schedule_id: Optional[int] = Field(None, description="the schedule that made this occurrence")
    workflow_id: Optional[str] = Field(None, description="the workflow this event is a step of")
    workflow_step: Optional[int] = Field(None, description="its step number in that workflow")


class EventDetail(Event):
    history: list[HistoryEntry]


class EventList(BaseModel):
    events: list[Event]
    next_cursor: Optional[int] = None


class EventBatchResult(BaseModel):
    events: Optional[list[Event]] = Field(None, description="the events made, in the order sent")
    ids: Optional[list[int]] = Field(None, description="with `Prefer: return=minimal`: their ids only, in order")


# -- manual callbacks: the pull API --------------------------------------------------------

Worker = Annotated[str, Field(min_length=1, max_length=200, description="who holds the lease")]
LeaseSeconds = Annotated[float, Field(gt=0, le=86_400)]
LeaseToken = Annotated[str, Field(min_length=1, max_length=200, description="the claim's lease_token")]
WORKER_FROM_TOKEN = ("default: the token's name. A desk token's name is the worker: any other value is refused "
                     "(403); an admin token may name any worker; without tokens configured, it is required")


class ClaimRequest(Strict):
    worker: Optional[Worker] = Field(None, description=WORKER_FROM_TOKEN)
    callback: Optional[Name] = Field(None, description="only events of this manual callback (name or id)")
    lease_seconds: Optional[LeaseSeconds] = Field(None, description="default: the callback's timeout_seconds")


class ExtendRequest(Strict):
    lease_token: LeaseToken
    worker: Optional[Worker] = Field(None, description=WORKER_FROM_TOKEN)
    seconds: Optional[LeaseSeconds] = Field(None, description="the lease runs this long from now")


class CompleteRequest(Strict):
    lease_token: LeaseToken
    worker: Optional[Worker] = Field(None, description=WORKER_FROM_TOKEN)
    result: Any = None


class ReleaseRequest(Strict):
    lease_token: LeaseToken
    worker: Optional[Worker] = Field(None, description=WORKER_FROM_TOKEN)


class ClaimedEvent(Event):
    lease_token: str = Field(description="proof of holding this lease: extend, complete and release need it")


class WhoAmI(BaseModel):
    name: str = Field(description="the token's name (the worker, for a desk token); 'anonymous' when no token "
                                  "is configured")
    scope: Literal["read", "write", "desk", "admin"]
    tokens_required: bool = Field(description="whether this server asks for a token at all")


# -- schedules ------------------------------------------------------------------------------

CatchUp = Literal["skip", "latest", "all"]
Overlap = Literal["allow", "skip"]


class ScheduleCreate(Strict):
    name: Name
    callback: Union[int, Name] = Field(description="the callback's name or id")
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Int32 = 0
    max_attempts: Optional[Attempts] = Field(None, description="default: the callback's")
    cron: Optional[str] = Field(None, max_length=200,
                                description="5 fields (minute hour day month weekday), or 6 with seconds first")
    every: Optional[float] = Field(None, ge=1, le=366 * 86400, description="seconds between occurrences")
    timezone: str = Field("UTC", max_length=100, description="IANA name the cron is read in")
    start_at: Optional[Instant] = None
    end_at: Optional[Instant] = None
    catch_up: CatchUp = Field("skip", description="after downtime: skip, latest (one run), all (each, bounded)")
    catch_up_limit: int = Field(100, ge=1, le=10_000)
    overlap: Overlap = Field("allow", description="skip: no new occurrence while the previous one's event runs")
    paused: bool = False


class ScheduleUpdate(Strict):
    name: Optional[Name] = None
    callback: Optional[Union[int, Name]] = None
    payload: Optional[dict[str, Any]] = None
    priority: Optional[Int32] = None
    max_attempts: Optional[Attempts] = None
    cron: Optional[str] = Field(None, max_length=200)
    every: Optional[float] = Field(None, ge=1, le=366 * 86400)
    timezone: Optional[str] = Field(None, max_length=100)
    start_at: Optional[Instant] = None
    end_at: Optional[Instant] = None
    catch_up: Optional[CatchUp] = None
    catch_up_limit: Optional[int] = Field(None, ge=1, le=10_000)
    overlap: Optional[Overlap] = None


class SchedulePath(BaseModel):
    schedule_id: int


class Schedule(BaseModel):
    id: int
    name: str
    callback: str
    payload: dict[str, Any]
    priority: int
    max_attempts: Optional[int] = None
    cron: Optional[str] = None
    every: Optional[float] = None
    timezone: str
    start_at: Optional[datetime] = None
    end_at: Optional[datetime] = None
    catch_up: CatchUp
    catch_up_limit: int
    overlap: Overlap
    paused: bool
    created_at: datetime
    updated_at: datetime
    next_runs: list[datetime] = Field(description="the next occurrences, UTC (none past end_at)")
    description: str = Field(description="the rule in words")


class ScheduleList(BaseModel):
    schedules: list[Schedule]


class PreviewQuery(StrictQuery):
    """The rule's fields of ScheduleCreate, with the same limits; nothing else is needed to say when it runs."""

    cron: Optional[str] = Field(None, max_length=200,
                                description="5 fields (minute hour day month weekday), or 6 with seconds first")
    every: Optional[float] = Field(None, ge=1, le=366 * 86400, description="seconds between occurrences")
    timezone: str = Field("UTC", max_length=100, description="IANA name the cron is read in")
    start_at: Optional[Instant] = None
    end_at: Optional[Instant] = None


class Preview(BaseModel):
    next_runs: list[datetime] = Field(description="the next 5 instants, UTC (an interval counted from start_at, "
                                                  "else from now: a schedule counts from its creation)")
    description: str = Field(description="the rule in words")


# -- Kafka ------------------------------------------------------------------------------------

class AlertCreate(Strict):
    """One alert; it is produced to the alerts topic and comes back as an event of the Alert callback."""

    message: str = Field(min_length=1, max_length=10_000)
    alert_id: Optional[Union[int, Name]] = Field(None, description="default: a new unique id")
    severity: Optional[Name] = None


class AlertSent(BaseModel):
    topic: str
    partition: int
    offset: int
    alert_id: Union[int, str]


class RejectedQuery(StrictQuery):
    limit: int = Field(50, ge=1, le=1000)
    cursor: Optional[int] = Field(None, ge=0, le=BIGINT_MAX)


class RejectedMessage(BaseModel):
    id: int
    topic: str
    partition: int
    offset: int
    key: Optional[str] = None
    value_text: Optional[str] = None
    value_base64: Optional[str] = None
    reason: str
    received_at: datetime


class RejectedList(BaseModel):
    rejected: list[RejectedMessage]
    next_cursor: Optional[int] = None


# -- system -------------------------------------------------------------------------------

class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorBody(BaseModel):
    error: ErrorDetail


class TableStats(BaseModel):
    size_bytes: int = Field(description="the table with its indexes and TOAST")
    live_rows: int
    dead_rows: int = Field(description="row versions only vacuum removes (PostgreSQL's estimate)")
    last_autovacuum: Optional[datetime] = None
    last_vacuum: Optional[datetime] = Field(None, description="the last manual VACUUM")
    seconds_since_autovacuum: Optional[float] = Field(None, description="null: never since the server's statistics "
                                                                        "were reset")
    autovacuum_enabled: bool = Field(description="autovacuum is on for the server and not switched off for the table")


class HoldingBack(BaseModel):
    pid: int
    application_name: str
    state: Optional[str] = None
    age: float = Field(description="seconds since its transaction began")


class VacuumReport(BaseModel):
    """Whether anything keeps vacuum from cleaning Punctual's tables; read at most every 5 s."""

    status: Literal["ok", "warning", "unknown"] = Field(description="unknown: the statistics could not be read")
    reasons: list[str] = Field(default_factory=list)
    autovacuum: Optional[bool] = Field(None, description="the server's autovacuum (and track_counts) setting")
    oldest_transaction_seconds: Optional[float] = Field(
        None, description="age of the oldest open transaction in this database (another session's); null: none")
    oldest_idle_in_transaction_seconds: Optional[float] = Field(
        None, description="age of the oldest transaction whose session sits idle in it; null: none")
    holding_back: Optional[HoldingBack] = Field(
        None, description="the oldest transaction that holds vacuum back (it has a snapshot or a transaction id)")
    warn_seconds: Optional[float] = Field(None, description="VACUUM_HOLDBACK_WARN_SECONDS")
    read_at: Optional[datetime] = None
    tables: dict[str, TableStats] = Field(default_factory=dict, description="Punctual's tables, by name")


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"] = Field(
        description="ok (200); degraded (200): serving, but something needs attention, see reasons (vacuum held "
                    "back or off, Kafka down); down (503): a core part (database, listener, scheduler, executor, "
                    "roles) is down, take this instance out of rotation")
    reasons: list[str] = Field(description="why the status is not ok, one line each; empty when ok")
    checks: dict[str, dict[str, Any]]
    vacuum: VacuumReport


class LatenessMinute(BaseModel):
    minute: str = Field(description="the minute's start, UTC")
    attempts: int = Field(description="attempts that started in it")
    p50: float = Field(description="median of started_at - scheduled_for, seconds")
    p99: float = Field(description="99th percentile of started_at - scheduled_for, seconds")


class LatenessLastHour(BaseModel):
    now: str = Field(description="the database's time of the reading, UTC")
    per_minute: list[LatenessMinute] = Field(description="minutes of the last hour in which attempts started, "
                                                         "oldest first")


# -- workflows (DESIGN.md "Workflows") ----------------------------------------------------------

WorkflowState = Literal["running", "waiting", "completed", "failed", "cancelled"]
WorkflowId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$",
                                  description="letters, digits and . _ : @ -")]


class WorkflowCreate(Strict):
    workflow: Name = Field(description="the name it was registered with: @workflow(\"name\")")
    input: Any = Field(None, description="any JSON value, passed to the function")
    id: Optional[WorkflowId] = Field(None, description="your id, as idempotency: the same id and body answer the "
                                                       "first workflow (200), another body 409")


class WorkflowPath(BaseModel):
    workflow_id: WorkflowId


class SignalPath(BaseModel):
    workflow_id: WorkflowId
    name: Name


class SignalBody(Strict):
    value: Any = Field(None, description="what wait_for returns")


class WorkflowQuery(StrictQuery):
    workflow: Optional[Name] = Field(None, description="the workflow's name")
    state: Optional[WorkflowState] = None
    limit: int = Field(50, ge=1, le=1000)
    before: Optional[WorkflowId] = Field(None, description="next_before of the previous page")


class WorkflowStep(BaseModel):
    step: int
    kind: Literal["call", "sleep", "signal", "now"]
    name: str = Field(description="the callback, or the signal's name")
    compensation: bool
    state: Literal["pending", "waiting", "completed", "failed", "cancelled"]
    result: Any = None
    error: Optional[str] = None
    wake_at: Optional[datetime] = Field(None, description="a timer's end, a wait's timeout")
    event_id: Optional[int] = None
    event_state: Optional[State] = None
    event_attempts: Optional[int] = None
    created_at: datetime
    finished_at: Optional[datetime] = None


class WorkflowSignal(BaseModel):
    id: int
    name: str
    value: Any = None
    source: str
    received_at: datetime
    step: Optional[int] = Field(None, description="the wait_for step that consumed it; null while kept")


class Workflow(BaseModel):
    id: str
    workflow: str
    input: Any = None
    state: WorkflowState
    result: Any = None
    error: Optional[str] = None
    waiting_on: Optional[str] = Field(None, description="what it waits for, in words")
    due_at: Optional[datetime] = Field(None, description="when it is advanced next without being woken")
    cancel_requested_at: Optional[datetime] = None
    advances: int
    source: str
    created_at: datetime
    updated_at: datetime
    finished_at: Optional[datetime] = None
    steps: Optional[list[WorkflowStep]] = Field(None, description="GET /workflows/<id> only")
    signals: Optional[list[WorkflowSignal]] = Field(None, description="GET /workflows/<id> only")


class WorkflowList(BaseModel):
    workflows: list[Workflow]
    next_before: Optional[str] = None
