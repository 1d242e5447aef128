"""The jobs service's own tables (jobs_*): jobs, their results, tags and events.

A job's events are its history, numbered 1, 2, 3, ... per job: its state changes, the lines its
program logged and the interim results it published, in one table (WatchJob streams them; the logs
and interim results are the events of those kinds). The job row keeps the number of its last event,
and every write that adds events raises it in the same transaction: the row lock orders a job's
events as they commit, so a watcher that has seen number n has seen every event up to n.

SQLAlchemy Core over SQLite (one machine) or PostgreSQL (several replicas sharing the work). Every
state change is one conditional UPDATE, so two replicas never both claim a job and an ended job never
changes again. Writes come first in each transaction: on SQLite a transaction that reads before it
writes can fail at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its turn for the write lock.

States, reasons, runtimes and log levels are stored as the proto enum names without their prefix
("QUEUED", "PROGRAM_ERROR", "BUILTIN", "INFO"), readable in the database and stable across releases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from qruntime_kit import migrations
from qruntime_kit.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from qruntime_kit.store import create_engine, decode_page_token, encode_page_token, invalid_page_token

if TYPE_CHECKING:
    from .filters import JobFilter

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "QUEUED", "RUNNING", "DONE", "ERROR", "CANCELLED"
FINAL_STATES = (DONE, ERROR, CANCELLED)
STATE, LOG, INTERIM = "STATE", "LOG", "INTERIM"  # the kinds of events
ACTIVE_STATES = (QUEUED, RUNNING)
DEDICATED, BATCH = "DEDICATED", "BATCH"  # the session modes
OPEN, ACTIVE, INACTIVE, CLOSED = "OPEN", "ACTIVE", "INACTIVE", "CLOSED"  # the session states
OPEN_STATES = (OPEN, ACTIVE, INACTIVE)  # every state but CLOSED, as a list an index can serve (closed ones pile up)
TRACE_ID_LENGTH = 256
# A page of jobs stops early once their inputs and messages pass this many bytes, so that a
# ListJobs response stays well inside the 64 MiB gRPC message limit whatever the jobs hold.
LIST_PAGE_BYTES = 32 * 1024 * 1024
# A tags filter of several tags walks one tag's index, checking the others per entry: about page × k / m
# entries to fill a page, for k jobs with that tag and m with them all, so it walks the rarest. Telling
# which reads each tag's index entries in the instance, up to this many: past it, either is common.
TAG_COUNT_CAP = 10_000

# The tables below are what the revisions in qruntime_jobs.migrations build; change both together.
metadata = sa.MetaData()
MIGRATIONS, VERSION_TABLE = "qruntime_jobs.migrations", "jobs_alembic_version"
_TIME = sa.DateTime(timezone=True)
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only

job_table = sa.Table(
    "jobs_job",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("instance", sa.String(512), nullable=False),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("program_id", sa.String(256), nullable=False),
    sa.Column("runtime", sa.String(16), nullable=False),
    sa.Column("backend", sa.String(256), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False, default=""),
    sa.Column("reason_message", sa.Text, nullable=False, default=""),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("log_level", sa.String(16), nullable=False),
    sa.Column("max_execution_seconds", sa.Float, nullable=False),
    sa.Column("create_time", _TIME, nullable=False),
    sa.Column("start_time", _TIME),
    sa.Column("end_time", _TIME),
    sa.Column("request_id", sa.String(256)),  # NULL when not given, so the unique key ignores it
    sa.Column("trace_id", sa.String(TRACE_ID_LENGTH), nullable=False, default=""),  # x-request-id of the CreateJob call
    sa.Column("claimed_by", sa.String(256)),  # the replica running it (or that last ran it)
    sa.Column("heartbeat_time", _TIME),  # when that replica last renewed its claim
    sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),  # claims so far
    sa.Column("program_version", sa.Integer, nullable=False, default=0, server_default="0"),
    # Requeues because a service the job needs was down: not its fault, so not counted against its attempts.
    sa.Column("dependency_waits", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("events", sa.Integer, nullable=False, default=0, server_default="0"),  # its last event's number
    sa.Column("usage_seconds", sa.Float, nullable=False, default=0.0, server_default="0"),  # see JobMetrics
    # SHA-256 of the CreateJob request that made it, request_id aside ("": made before they were kept).
    sa.Column("request_fingerprint", sa.String(64), nullable=False, default="", server_default=""),
    # Which limit max_execution_seconds is: SYSTEM, PROGRAM or USER ("": created before it was kept).
    sa.Column("time_limit_source", sa.String(16), nullable=False, default="", server_default=""),
    sa.Column("session_id", sa.String(64)),  # the session or batch it belongs to; NULL for none
    # Whether inputs holds a primitive job's typed inputs (typed.py), known without reading them.
    sa.Column("primitive_inputs", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    # The inputs' size in bytes and SHA-256 (hex) as GetJobInputs serves them (NULL: created before
    # they were kept; computed, and kept, when first read).
    sa.Column("inputs_bytes", sa.BigInteger, nullable=True),
    sa.Column("inputs_sha256", sa.String(64), nullable=True),
    sa.UniqueConstraint("instance", "request_id", name="jobs_job_instance_request_id"),
    sa.Index("jobs_job_instance_created", "instance", "create_time", "id"),
    sa.Index("jobs_job_state_created", "state", "create_time", "id"),
    # Fair claims: read from the index alone (session_id says whether a job may start).
    sa.Index("jobs_job_state_instance_created", "state", "instance", "create_time", "id", "session_id"),
    # A session's queued and running jobs, oldest first (the next one of a dedicated session: its head).
    sa.Index("jobs_job_session_state", "session_id", "state", "create_time", "id"),
)

# Sessions and batches (SessionsService); sessions.py says how they schedule their jobs. Times are UTC.
session_table = sa.Table(
    "jobs_session",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("instance", sa.String(512), nullable=False),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("backend", sa.String(256), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),  # DEDICATED or BATCH
    sa.Column("state", sa.String(16), nullable=False),  # OPEN, ACTIVE, INACTIVE or CLOSED
    sa.Column("accepting_jobs", sa.Boolean, nullable=False),
    sa.Column("max_seconds", sa.Float, nullable=False),  # max_time
    sa.Column("idle_seconds", sa.Float, nullable=False),  # interactive_timeout
    sa.Column("create_time", _TIME, nullable=False),
    sa.Column("start_time", _TIME),  # its first job's start
    sa.Column("activate_time", _TIME),  # when it last became ACTIVE
    sa.Column("last_job_start_time", _TIME),
    sa.Column("last_job_end_time", _TIME),
    sa.Column("expire_time", _TIME),  # start_time + max_seconds
    sa.Column("close_time", _TIME),
    # When an ACTIVE session stops being active unless a job of it runs: its last job's end plus
    # idle_seconds; NULL while one of its jobs runs. Jobs created before it keep the session's priority.
    sa.Column("idle_deadline", _TIME),
    sa.Column("close_reason", sa.Text, nullable=False, default=""),
    sa.Column("usage_seconds", sa.Float, nullable=False, default=0.0),  # DEDICATED: its ACTIVE spans that ended
    sa.Index("jobs_session_instance_created", "instance", "create_time", "id"),
    sa.Index("jobs_session_state", "state"),
)

result_table = sa.Table(
    "jobs_job_result",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("result", sa.Text, nullable=False),
    # Its UTF-8 length and SHA-256 (hex), kept when written (NULL: written before they were kept).
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
)

event_table = sa.Table(
    "jobs_job_event",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),  # 1, 2, 3, ... within the job
    sa.Column("time", _TIME, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # STATE, LOG or INTERIM
    sa.Column("state", sa.String(16), nullable=False, default=""),  # STATE: the state entered
    sa.Column("reason", sa.String(32), nullable=False, default=""),  # STATE: why
    sa.Column("attempt", sa.Integer, nullable=False, default=0),  # STATE: the attempt it belongs to
    sa.Column("level", sa.String(16), nullable=False, default=""),  # LOG: its level
    sa.Column("text", sa.Text, nullable=False, default=""),  # STATE: reason message, LOG: line, INTERIM: JSON
)

tag_table = sa.Table(
    "jobs_job_tag",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(64), primary_key=True),
    # The job's instance and creation time, copied when the tag is written (neither changes for a job),
    # so that the index below holds each tag's jobs in the listing's order: a tags filter walks it
    # newest first from the page's position, whatever the tag's count (JobStore.list).
    sa.Column("instance", sa.String(512), nullable=False),
    sa.Column("create_time", _TIME, nullable=False),
    sa.Index("jobs_job_tag_instance_created", "tag", "instance", "create_time", "job_id"),
)
# A job's tags as one text, read with its row (a page of jobs needs no second query for them): joined
# by spaces, which no tag holds (printable ASCII without spaces: validation.check_tags).
_TAG_LIST = (sa.select(sa.func.aggregate_strings(tag_table.c.tag, " ")).where(tag_table.c.job_id == job_table.c.id)
             .scalar_subquery().label("tag_list"))

# Job inputs uploaded in chunks ahead of the CreateJob that names them (CreateInputUpload): each the
# caller's (instance and user), used by one job at most (its chunks deleted soon after, by the sweep;
# the row kept so a retried CreateJob can be recognised), deleted once it expires.
upload_table = sa.Table(
    "jobs_input_upload",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("instance", sa.String(512), nullable=False),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("content", sa.String(32), nullable=False),  # JSON_INPUTS or PRIMITIVE_INPUT
    sa.Column("total_bytes", sa.BigInteger, nullable=False),  # declared at creation
    sa.Column("sha256", sa.String(64), nullable=False),  # of the whole content, declared at creation (hex)
    sa.Column("received_bytes", sa.BigInteger, nullable=False),  # where the next chunk starts
    sa.Column("create_time", _TIME, nullable=False),
    sa.Column("expire_time", _TIME, nullable=False),
    sa.Column("job_id", sa.String(64)),  # the job that used it; NULL until then
    sa.Index("jobs_input_upload_instance", "instance", "expire_time"),  # what an instance holds
    sa.Index("jobs_input_upload_expire", "expire_time"),  # the sweep
)

upload_chunk_table = sa.Table(
    "jobs_input_upload_chunk",
    metadata,
    sa.Column("upload_id", sa.String(64), sa.ForeignKey("jobs_input_upload.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("start_byte", sa.BigInteger, primary_key=True, autoincrement=False),  # its offset in the content
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),  # of data (hex): a chunk sent again must match it
)

# The audit events of calls whose effect this store commits (a job's creation), written in the same
# transaction, until a replica forwards them to the auth service's trail (audit_outbox.py).
audit_outbox_table = sa.Table(
    "jobs_audit_outbox",
    metadata,
    sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("event", sa.Text, nullable=False),  # the AuditEvent's fields, as JSON
    sa.Column("claimed_by", sa.String(128), nullable=True),  # the replica forwarding it, until claimed_until
    sa.Column("claimed_until", _TIME, nullable=True),
)

secret_table = sa.Table(  # keys this store's replicas share, e.g. the one that signs page tokens
    "jobs_secret",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)


@dataclasses.dataclass(frozen=True)
class ResultDigest:
    """A stored result's UTF-8 length in bytes and its SHA-256."""

    size: int
    sha256: bytes

    @classmethod
    def of(cls, data: bytes) -> ResultDigest:
        return cls(len(data), hashlib.sha256(data).digest())


@dataclasses.dataclass(frozen=True)
class UploadRecord:
    """One stored input upload (see upload_table)."""

    id: str
    instance: str
    owner: str
    content: str
    total_bytes: int
    sha256: bytes
    received_bytes: int
    create_time: dt.datetime
    expire_time: dt.datetime
    job_id: str = ""  # the job that used it


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One stored job: everything in the Job message, plus the runtime kind of its program. Reads that
    need no inputs leave them out (inputs None): they may be hundreds of MiB."""

    id: str
    instance: str
    owner: str
    program_id: str
    runtime: str
    backend: str
    state: str
    reason: str
    reason_message: str
    inputs: str | None  # None when the read left them out
    log_level: str
    max_execution_seconds: float
    create_time: dt.datetime
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    request_id: str
    trace_id: str = ""  # the x-request-id of the CreateJob call, bound to every log line about the job
    attempts: int = 0  # how many times a runner has claimed it
    program_version: int = 0  # the version of the program it runs; 0 for a built-in program
    dependency_waits: int = 0  # requeues because a service it needs was down (counted in attempts too)
    tags: tuple[str, ...] = ()
    events: int = 0  # the number of its last event
    usage_seconds: float = 0.0  # see JobMetrics.usage_seconds
    request_fingerprint: str = ""  # digest of the CreateJob request that made it (idempotency.py)
    time_limit_source: str = ""  # which limit max_execution_seconds is: SYSTEM, PROGRAM or USER
    session_id: str = ""  # the session or batch it belongs to; "" for none
    primitive_inputs: bool = False  # inputs hold typed PrimitiveInput (typed.py)
    inputs_bytes: int | None = None  # their size as GetJobInputs serves them; None: not kept (an older job)

    @property
    def deadline(self) -> dt.datetime | None:
        """When the running program is killed: its start plus its limit; None while queued or ended."""
        if self.state != RUNNING or self.start_time is None or self.max_execution_seconds <= 0:
            return None
        return self.start_time + dt.timedelta(seconds=self.max_execution_seconds)

    @property
    def failed_attempts(self) -> int:
        """The claims that count against max_attempts: all but those a dependency outage ended."""
        return self.attempts - self.dependency_waits

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One stored session or batch, with what is reported about it now (usage, its jobs)."""

    id: str
    instance: str
    owner: str
    backend: str
    mode: str
    state: str
    accepting_jobs: bool
    max_seconds: float
    idle_seconds: float
    create_time: dt.datetime
    start_time: dt.datetime | None
    activate_time: dt.datetime | None
    last_job_start_time: dt.datetime | None
    last_job_end_time: dt.datetime | None
    expire_time: dt.datetime | None
    close_time: dt.datetime | None
    close_reason: str
    usage_seconds: float  # see Session.usage_seconds
    queued_jobs: int = 0
    running_jobs: int = 0


@dataclasses.dataclass(frozen=True)
class EventRecord:
    """One event of a job's history (see event_table for what each field holds per kind)."""

    number: int
    time: dt.datetime
    kind: str
    state: str = ""
    reason: str = ""
    attempt: int = 0
    level: str = ""
    text: str = ""

    @property
    def is_final(self) -> bool:
        return self.kind == STATE and self.state in FINAL_STATES


@dataclasses.dataclass(frozen=True)
class LogRecord:
    """One line a program logged."""

    time: dt.datetime
    level: str
    message: str


@dataclasses.dataclass(frozen=True)
class InterimRecord:
    """One interim result a program published, JSON text."""

    time: dt.datetime
    data: str


@dataclasses.dataclass(frozen=True)
class UsageRecord:
    """What one backend ran for an instance over a period."""

    backend: str
    state: str
    jobs: int
    usage_seconds: float


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class EndedRun:
    """A job's first attempt, run to its end before the job was stored: a quick job, run within the
    CreateJob call that submitted it (quick.py). logs: (level, text, time) lines of the run."""

    runner: str  # the replica that ran it
    start_time: dt.datetime
    end_time: dt.datetime
    state: str
    reason: str = ""
    message: str = ""
    result_json: str | None = None
    logs: tuple[tuple[str, str, dt.datetime], ...] = ()

    @functools.cached_property
    def result_digest(self) -> ResultDigest | None:
        """The result's size and SHA-256, as stored with it (None without a result)."""
        return None if self.result_json is None else ResultDigest.of(self.result_json.encode())


def new_job_id() -> str:
    """20 lowercase hex characters, like the ids of IBM's runtime jobs."""
    return secrets.token_hex(10)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite gives back naive datetimes; every time this store writes is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _job(row: sa.Row, tags: Iterable[str] = ()) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"], instance=m["instance"], owner=m["owner"], program_id=m["program_id"],
        runtime=m["runtime"], backend=m["backend"], state=m["state"], reason=m["reason"],
        reason_message=m["reason_message"], inputs=m.get("inputs"), log_level=m["log_level"],
        max_execution_seconds=m["max_execution_seconds"], create_time=_utc(m["create_time"]),
        start_time=_utc(m["start_time"]), end_time=_utc(m["end_time"]), request_id=m["request_id"] or "",
        trace_id=m["trace_id"], attempts=m["attempts"], program_version=m["program_version"],
        dependency_waits=m["dependency_waits"], tags=tuple(sorted(tags)), events=m["events"],
        usage_seconds=m["usage_seconds"], request_fingerprint=m["request_fingerprint"],
        time_limit_source=m["time_limit_source"], session_id=m["session_id"] or "",
        primitive_inputs=bool(m["primitive_inputs"]), inputs_bytes=m["inputs_bytes"],
    )


def _upload(row: sa.Row) -> UploadRecord:
    return UploadRecord(id=row.id, instance=row.instance, owner=row.owner, content=row.content,
                        total_bytes=row.total_bytes, sha256=bytes.fromhex(row.sha256),
                        received_bytes=row.received_bytes, create_time=_utc(row.create_time),
                        expire_time=_utc(row.expire_time), job_id=row.job_id or "")


def _inputs_column(inputs_up_to: int | None) -> sa.ColumnElement:
    """The inputs column read only up to a size: all (None), none (0), or those of at most that many
    bytes (NULL otherwise: see JobRecord.inputs), so reads never carry what they drop."""
    c = job_table.c
    if inputs_up_to is None:
        return c.inputs
    if inputs_up_to <= 0:
        return sa.null()
    # A job older than inputs_bytes has inputs of one message at most: read them.
    return sa.case((sa.or_(c.inputs_bytes.is_(None), c.inputs_bytes <= inputs_up_to), c.inputs), else_=sa.null())


def _job_select(inputs_up_to: int | None = None, *, inputs: sa.ColumnElement | None = None) -> sa.Select:
    """The jobs' columns, their inputs only up to a size (see _inputs_column), or the inputs column as the
    expression given."""
    inputs = _inputs_column(inputs_up_to) if inputs is None else inputs
    return sa.select(*(col for col in job_table.c if col.name != "inputs"), inputs.label("inputs"))


# Job rows selected as their records: the record's fields in order (tags: _TAG_LIST), so that a row
# becomes a record by position (_record), not by a lookup per field name: reading a page of 100 jobs
# is a third cheaper so.
_RECORD_FIELDS = [field.name for field in dataclasses.fields(JobRecord)]
_TIMES_AT = [_RECORD_FIELDS.index(name) for name in ("create_time", "start_time", "end_time")]
_NULLABLE_AT = [_RECORD_FIELDS.index(name) for name in ("request_id", "session_id")]  # NULL for none
_TAGS_AT, _PRIMITIVE_AT = _RECORD_FIELDS.index("tags"), _RECORD_FIELDS.index("primitive_inputs")
_INPUTS_AT, _REASON_MESSAGE_AT = _RECORD_FIELDS.index("inputs"), _RECORD_FIELDS.index("reason_message")


@functools.cache  # a few sizes: the statement is built once for each
def _record_select(inputs_up_to: int | None) -> sa.Select:
    """Jobs as their records read them (_record), their inputs only up to a size (see _inputs_column)."""
    special = {"tags": _TAG_LIST, "inputs": _inputs_column(inputs_up_to).label("inputs")}
    return sa.select(*(special[name] if name in special else job_table.c[name] for name in _RECORD_FIELDS))


@functools.cache
def _records_by_id(inputs_up_to: int | None, *, scoped: bool) -> sa.Select:
    """_record_select of the jobs with ids :ids (and, scoped, of instance :instance). Built once: making
    and keying a statement of this size costs more than running it."""
    query = _record_select(inputs_up_to).where(job_table.c.id.in_(sa.bindparam("ids", expanding=True)))
    return query.where(job_table.c.instance == sa.bindparam("instance")) if scoped else query


# Statements run for every job, built once (their values come as parameters): a job's insert, returning
# what was stored but its inputs (MiBs, which the caller has: no read-back query); its events'; its result's.
_JOB_INSERT = job_table.insert().returning(*(col for col in job_table.c if col.name != "inputs"))
_EVENT_INSERT = event_table.insert()
_RESULT_INSERT = result_table.insert()
_AUDIT_INSERT = audit_outbox_table.insert()


def _tags(tag_list: str | None) -> tuple[str, ...]:
    """A job's tags, sorted, from _TAG_LIST's space-joined text."""
    return tuple(sorted(tag_list.split(" "))) if tag_list else ()


def _record(row: sa.Row) -> JobRecord:
    """The record of a row of _record_select."""
    values = list(row)
    for at in _TIMES_AT:  # SQLite gives back naive datetimes; every time this store writes is UTC
        if (value := values[at]) is not None and value.tzinfo is None:
            values[at] = value.replace(tzinfo=dt.UTC)
    for at in _NULLABLE_AT:
        values[at] = values[at] or ""
    values[_TAGS_AT] = _tags(values[_TAGS_AT])
    values[_PRIMITIVE_AT] = bool(values[_PRIMITIVE_AT])
    # The fields set as a plain object's: a frozen dataclass's __init__ sets each through
    # object.__setattr__, half of this function's time (0.3 ms for a page of 100 jobs). JobRecord has no
    # __post_init__, and the row holds every field (_RECORD_FIELDS), so nothing else is skipped.
    record = object.__new__(JobRecord)
    record.__dict__.update(zip(_RECORD_FIELDS, values, strict=True))
    return record


job_record = _record  # of a row of JobStore.list_rows
_ID_AT, _STATE_AT, _END_AT, _EVENTS_AT = (_RECORD_FIELDS.index(n) for n in ("id", "state", "end_time", "events"))


def ended_version(row: sa.Row) -> tuple[str, int, tuple[str, ...]] | None:
    """What an ended job's row of JobStore.list_rows is as of now: its id, last event's number and tags
    (nothing else changes once a job has ended: every write is conditioned on the job being queued or
    running, and its end writes its end time, usage and last event at once); None for a job not ended.
    By position: a row's fields by name cost a third of a microsecond each."""
    if row[_STATE_AT] not in FINAL_STATES or row[_END_AT] is None:
        return None
    return row[_ID_AT], row[_EVENTS_AT], _tags(row[_TAGS_AT])


def _event(row: sa.Row) -> EventRecord:
    return EventRecord(number=row.number, time=_utc(row.time), kind=row.kind, state=row.state, reason=row.reason,
                       attempt=row.attempt, level=row.level, text=row.text)


def would_create(
    *, instance: str, owner: str, program_id: str, runtime: str, backend: str, inputs: str, log_level: str,
    max_execution_seconds: float, request_id: str = "", trace_id: str = "", program_version: int = 0,
    tags: Iterable[str] = (), request_fingerprint: str = "", time_limit_source: str = "", first_log: str = "",
    session_id: str = "", primitive_inputs: bool = False, inputs_digest: ResultDigest | None = None,
    input_upload_id: str = "",
) -> JobRecord:
    """The job JobStore.create would store from these arguments, without an id: a dry run's answer
    (first_log, the line create would log, and input_upload_id, the upload it would take, are not part of it)."""
    return JobRecord(
        id="", instance=instance, owner=owner, program_id=program_id, runtime=runtime, backend=backend,
        state=QUEUED, reason="", reason_message="", inputs=inputs, log_level=log_level,
        max_execution_seconds=max_execution_seconds, create_time=utcnow(), start_time=None, end_time=None,
        request_id=request_id, trace_id=trace_id[:TRACE_ID_LENGTH], program_version=program_version,
        tags=tuple(sorted(set(tags))), request_fingerprint=request_fingerprint, time_limit_source=time_limit_source,
        session_id=session_id, primitive_inputs=primitive_inputs,
        inputs_bytes=inputs_digest.size if inputs_digest else None,
    )


def storable(text: str) -> str:
    """text as a column may hold it: PostgreSQL's text cannot hold NUL, and a NUL stored raw in SQLite
    cuts the text short for many readers, so it is kept visible, escaped (a circuit's name in an error)."""
    return text.replace("\x00", "\\x00")


def session_not_found(session_id: str) -> NotFound:
    # The same words whether the session is absent or another instance's.
    return NotFound(f"session {session_id!r} not found", reason="SESSION_NOT_FOUND",
                    metadata={"session_id": session_id})


def upload_not_found(upload_id: str) -> NotFound:
    # The same words whether it never existed, is another caller's, was used by a job or expired.
    return NotFound(f"input upload {upload_id!r} not found: it is not yours, a job has used it, or it expired "
                    "(create a new one)", reason="INPUT_UPLOAD_NOT_FOUND", metadata={"upload_id": upload_id})


def job_not_found(job_id: str) -> NotFound:
    # The same words whether the job is absent or another instance's.
    return NotFound(f"job {job_id!r} not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id})


class JobStore:
    """Jobs and what they produce, in the tables jobs_*; every method is a short blocking transaction."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url)
        migrations.upgrade(self._engine, MIGRATIONS, version_table=VERSION_TABLE)
        self._page_key = self._secret("page_token_key").encode()
        self._listeners: list[Callable[[str], None]] = []

    def close(self) -> None:
        self._engine.dispose()

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call listener(job_id), from the writing thread, after each commit that adds events to a job."""
        self._listeners.append(listener)

    # -- jobs -------------------------------------------------------------------------------

    def create(
        self, *, instance: str, owner: str, program_id: str, runtime: str, backend: str, inputs: str,
        log_level: str, max_execution_seconds: float, request_id: str = "", trace_id: str = "",
        program_version: int = 0, tags: Iterable[str] = (), first_log: str = "", request_fingerprint: str = "",
        time_limit_source: str = "", session_id: str = "", primitive_inputs: bool = False,
        inputs_digest: ResultDigest | None = None, input_upload_id: str = "", job_id: str = "",
        ended: EndedRun | None = None, audit_event: str = "",
    ) -> tuple[JobRecord, bool]:
        """Store a new QUEUED job, with first_log as its first log line if given; (job, True). With a
        request_id the instance used before, that earlier job instead: (job, False), so a retried
        CreateJob never makes a second job (the caller checks it was the same request:
        idempotency.check_same_request). With session_id, only while that session accepts jobs
        (checked in the same transaction, so a concurrent close or expiry cannot let one in);
        FailedPrecondition SESSION_NOT_ACCEPTING_JOBS otherwise. With input_upload_id, the upload the
        inputs came from (the owner's, in the instance) is consumed in the same transaction: two jobs
        cannot take one upload (NotFound INPUT_UPLOAD_NOT_FOUND for the second). inputs_digest: the
        size and SHA-256 of the inputs as GetJobInputs serves them. job_id: the new job's id, if chosen
        already. ended: the job ran already (a quick job): it is stored ended, with the whole history a
        queued job's run would give it (queued, running, its logs, its end, its result and usage) and
        its attempt counted, created the moment it started. audit_event: the creating call's audit event
        (JSON), kept in the audit outbox with the job, in the same transaction (claim_audit_events)."""
        if request_id:
            existing = self.find_by_request_id(instance, request_id)
            if existing is not None:
                return existing, False
        now = ended.start_time if ended is not None else utcnow()
        values = {
            "id": job_id or new_job_id(), "instance": instance, "owner": owner, "program_id": program_id,
            "runtime": runtime, "backend": backend, "state": QUEUED, "reason": "", "reason_message": "",
            "inputs": inputs, "log_level": log_level, "max_execution_seconds": max_execution_seconds,
            "create_time": now, "request_id": request_id or None,
            "trace_id": trace_id[:TRACE_ID_LENGTH],  # the caller's x-request-id, of any length
            "program_version": program_version,
            "request_fingerprint": request_fingerprint, "time_limit_source": time_limit_source,
            "session_id": session_id or None, "primitive_inputs": primitive_inputs,
            "inputs_bytes": inputs_digest.size if inputs_digest else None,
            "inputs_sha256": inputs_digest.sha256.hex() if inputs_digest else None,
        }
        events = [_state_event(QUEUED, now)] + ([_log_event("INFO", first_log, now)] if first_log else [])
        result = None
        if ended is not None:
            assert ended.state in FINAL_STATES and not session_id, ended
            values.update(
                state=ended.state, reason=ended.reason, reason_message=storable(ended.message),
                start_time=ended.start_time, end_time=ended.end_time, claimed_by=ended.runner, attempts=1,
                usage_seconds=max(0.0, (ended.end_time - ended.start_time).total_seconds()))
            events += [_state_event(RUNNING, ended.start_time, attempt=1),
                       *(_log_event(level, text, time) for level, text, time in ended.logs),
                       _state_event(ended.state, ended.end_time, reason=ended.reason, text=storable(ended.message),
                                    attempt=1)]
            if (digest := ended.result_digest) is not None:
                result = {"job_id": values["id"], "result": ended.result_json, "size_bytes": digest.size,
                          "sha256": digest.sha256.hex()}
        values["events"] = len(events)
        try:
            with self._engine.begin() as conn:
                if input_upload_id:
                    self._consume_upload(conn, input_upload_id, instance, owner, values["id"])
                if session_id:
                    self._admit_to_session(conn, session_id, now)
                row = conn.execute(_JOB_INSERT, values).one()
                _insert_events(conn, values["id"], values["events"], events)
                _insert_tags(conn, row, tags)
                if result is not None:
                    conn.execute(_RESULT_INSERT, result)
                if audit_event:
                    conn.execute(_AUDIT_INSERT, {"event": audit_event})
        except sa.exc.IntegrityError:
            existing = self.find_by_request_id(instance, request_id) if request_id else None
            if existing is None:
                raise
            return existing, False  # a concurrent retry with the same key won the race
        self._notify([values["id"]])
        return dataclasses.replace(_job(row, set(tags)), inputs=inputs), True

    def find_by_request_id(self, instance: str, request_id: str) -> JobRecord | None:
        """The job the instance created with this idempotency key, if any; its inputs only if it was
        made before request fingerprints were kept (and so before inputs outgrew one message), to compare."""
        c = job_table.c
        compared = sa.case((c.request_fingerprint == "", c.inputs), else_=sa.null())
        query = _job_select(inputs=compared).where(c.instance == instance, c.request_id == request_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
            return self._with_tags(conn, [row])[0] if row else None

    def get(self, job_id: str, *, instance: str | None = None, inputs: int | None = 0) -> JobRecord:
        """The job; NotFound JOB_NOT_FOUND when absent or, with instance given, another instance's.
        inputs: how large inputs it reads (see _job_select): by default none."""
        return self.get_many([job_id], instance=instance, inputs=inputs)[0]

    def get_many(self, job_ids: list[str], *, instance: str | None = None, inputs: int | None = 0) -> list[JobRecord]:
        """The jobs, in the order asked; NotFound JOB_NOT_FOUND naming the first that is absent (or,
        with instance given, another instance's). inputs: as for get."""
        query = _records_by_id(inputs, scoped=instance is not None)
        with self._engine.connect() as conn:
            found = {job.id: job for job in map(_record, conn.execute(query, {"ids": list(set(job_ids)),
                                                                               "instance": instance}))}
        for job_id in job_ids:
            if job_id not in found:
                raise job_not_found(job_id)
        return [found[job_id] for job_id in job_ids]

    def set_tags(self, job_id: str, tags: Iterable[str], *, instance: str | None = None) -> JobRecord:
        """Replace the job's tags; NotFound when it is absent (or another instance's)."""
        job = self.get(job_id, instance=instance)
        with self._engine.begin() as conn:
            conn.execute(tag_table.delete().where(tag_table.c.job_id == job.id))
            _insert_tags(conn, job, tags)
        return self.get(job_id, instance=instance)

    def list(
        self, instance: str | None, *, page_size: int, page_token: str = "", where: JobFilter | None = None,
        inputs: int | None = 0,
    ) -> tuple[list[JobRecord], str]:
        """The instance's jobs (every job for None) that match where, newest first, and the next page's
        token ('' on the last), bound to that filter: a token made for another filter, or altered, is
        InvalidArgument. inputs: as for get.

        Without tags in the filter the jobs are walked in the instance's index of them; with tags, in one
        tag's index of the instance's jobs (jobs_job_tag_instance_created), each entry joined to its job for
        the other terms. Either way in (create_time, id) order from the page token's position, so a page
        reads about page_size entries when most match.

        A page holds fewer than page_size jobs when they would pass LIST_PAGE_BYTES (always one at least)."""
        rows, token = self.list_rows(instance, page_size=page_size, page_token=page_token, where=where,
                                     inputs=inputs)
        return [_record(row) for row in rows], token

    def list_rows(
        self, instance: str | None, *, page_size: int, page_token: str = "", where: JobFilter | None = None,
        inputs: int | None = 0,
    ) -> tuple[list[sa.Row], str]:
        """list's page as the rows it reads, each with JobRecord's fields by name (but `tag_list`: the
        job's tags joined by spaces, in no order; times naive on SQLite) and made a JobRecord by
        job_record: ListJobs makes a record only of a job whose Job message it has not kept (JobPages)."""
        bound_to = where.fingerprint() if where is not None else ""
        position = self._decode_page_token(page_token, bound_to)
        page, size, more = [], 0, False
        with self._engine.connect() as conn:
            walked = self._walked_tag(conn, instance, where.tags) if where is not None else None
            query, params = _list_query(inputs, page_size, instance, position, where, walked)
            if inputs == 0:  # small rows: all at once (fetchall), not a buffered fetch of a few at a time
                rows = conn.execute(query, params).fetchall()
            else:  # rows with inputs: a few at a time, never all the inputs at once
                rows = conn.execution_options(yield_per=8).execute(query, params)
            for row in rows:
                size += len((row[_INPUTS_AT] or "").encode()) + len(row[_REASON_MESSAGE_AT].encode())
                if len(page) == page_size or (page and size > LIST_PAGE_BYTES):
                    more = True
                    break
                page.append(row)
        if not more:
            return page, ""
        last = page[-1]
        return page, self._encode_page_token({"t": _utc(last.create_time).isoformat(), "id": last.id}, bound_to)

    def _walked_tag(self, conn: sa.Connection, instance: str | None, tags: frozenset[str]) -> str | None:
        """The tag whose index a tags filter walks (None without tags): the one tag, or of several the one
        fewest of the instance's jobs have (see TAG_COUNT_CAP); the others are checked per entry."""
        if len(tags) <= 1:
            return next(iter(tags), None)
        t = tag_table.c

        def count(tag: str) -> int:
            entries = sa.select(t.job_id).where(t.tag == tag)
            if instance is not None:
                entries = entries.where(t.instance == instance)
            return conn.execute(sa.select(sa.func.count()).select_from(
                entries.limit(TAG_COUNT_CAP).subquery())).scalar_one()

        return min(sorted(tags), key=count)

    def usage(self, instance: str, start: dt.datetime, end: dt.datetime) -> list[UsageRecord]:
        """Per backend and final state, the instance's jobs that ended in [start, end) and their usage
        (the running time of their last attempt, see JobMetrics)."""
        c = job_table.c
        query = (
            sa.select(c.backend, c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(c.usage_seconds), 0.0))
            .where(c.instance == instance, c.end_time >= start, c.end_time < end)
            .group_by(c.backend, c.state)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [UsageRecord(backend, state, jobs, float(seconds)) for backend, state, jobs, seconds in rows]

    def watch_state(self, job_id: str) -> tuple[bool, int, int | None]:
        """What a watcher polls: whether the job exists, the number of its last event, and while it is
        queued, how many queued jobs were created before it (None otherwise)."""
        c = job_table.c
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(c.state, c.events, c.create_time).where(c.id == job_id)).first()
            if row is None:
                return False, 0, None
            if row.state != QUEUED:
                return True, row.events, None
            ahead = conn.execute(sa.select(sa.func.count()).where(
                c.state == QUEUED, *_before(c.create_time, c.id, row.create_time, job_id))).scalar_one()
        return True, row.events, ahead

    def load_by_backend(self) -> tuple[dict[str, int], dict[str, int]]:
        """How many jobs wait in the queue, and how many run, for each backend (backends with none left out)."""
        c = job_table.c
        query = (sa.select(c.backend, c.state, sa.func.count()).where(c.state.in_((QUEUED, RUNNING)))
                 .group_by(c.backend, c.state))
        load: dict[str, dict[str, int]] = {QUEUED: {}, RUNNING: {}}
        with self._engine.connect() as conn:
            for backend, state, count in conn.execute(query):
                load[state][backend] = count
        return load[QUEUED], load[RUNNING]

    def claim_next_queued(self, runner: str = "", *, max_running_per_instance: int = 0) -> JobRecord | None:
        """Move the next QUEUED job to RUNNING for this runner, counting the attempt, and return it;
        None when none waits (or every instance with queued jobs is at max_running_per_instance).

        First comes the oldest job of an ACTIVE dedicated session (Session.mode DEDICATED) that came
        while the session was active: a session runs its jobs back to back. Then, fairly across
        instances: the oldest startable job of the instance that has the fewest jobs running (the
        oldest waiting job breaks ties), so an instance that floods the queue runs beside the others,
        never ahead of them. A dedicated session's job may start only when none of its jobs runs and
        none older waits (its jobs run one at a time, in order); a batch's jobs start freely; a
        session past its max_time starts nothing (sweep_sessions cancels its queued jobs).

        Which session jobs may start is read first, from the few open sessions (_SessionPlan), so the
        claim itself is one UPDATE ... WHERE id = (that job) AND state = 'QUEUED' RETURNING, reading
        the queue's index only: PostgreSQL picks the candidate FOR UPDATE SKIP LOCKED, so replicas pass
        each other by; SQLite (which has no row locks and ignores FOR UPDATE) runs the statement under
        its one write lock. Either way a job is claimed exactly once. The plan may be a moment old:
        a claimed session job is checked again under its session row's lock (_session_job_started),
        so a dedicated session never runs two jobs at once nor one out of turn."""
        for _ in range(3):  # a replica that lost the race for a session's turn tries again
            try:
                return self._claim(runner, max_running_per_instance)
            except _SessionBusy:
                continue
        return None

    def _claim(self, runner: str, max_running_per_instance: int) -> JobRecord | None:
        c = job_table.c
        with self._engine.connect() as conn:  # read before the transaction: on SQLite a write comes first
            # Most claims find the queue empty (a worker whose job ended looks once more, idle ones
            # poll): one read of the state index says so, before the plan and the transaction.
            if conn.execute(_ANY_QUEUED).first() is None:
                return None
            at = utcnow()  # sessions' times are this replica's clock, as their jobs' create_time
            plan = _SessionPlan.read(conn, at)
        now = self._now()  # the lease runs on the database's clock, the one all replicas share
        claim = (
            job_table.update()
            .values(state=RUNNING, start_time=now, claimed_by=runner or None, heartbeat_time=now,
                    attempts=c.attempts + 1, events=c.events + 1)
            .returning(*job_table.c)
        )
        if max_running_per_instance > 0:
            within = _running_of(c.instance) < max_running_per_instance
        with self._engine.begin() as conn:
            row = None
            for job_id in plan.priority:  # the oldest first; one another replica took is skipped
                query = claim.where(c.id == job_id, c.state == QUEUED)
                row = conn.execute(query.where(within) if max_running_per_instance > 0 else query).first()
                if row is not None:
                    break
            if row is None:
                row = conn.execute(claim.where(
                    c.id == _fair_candidate(plan, max_running_per_instance), c.state == QUEUED)).first()
            if row is None:
                return None
            _insert_events(conn, row.id, row.events, [_state_event(RUNNING, utcnow(), attempt=row.attempts)])
            if row.session_id:
                _session_job_started(conn, row, at)
            job = self._with_tags(conn, [row])[0]
        self._notify([job.id])
        return job

    def finish(
        self, job_id: str, state: str, reason: str = "", message: str = "", result_json: str | None = None,
    ) -> bool:
        """End a queued or running job in state, whoever runs it (a runner ends its own attempt with
        end_attempt), storing its result in the same transaction, so a job is never seen DONE
        without its result. Does nothing (False) when the job already ended."""
        c = job_table.c
        return self._end(job_table.update().where(c.id == job_id, c.state.in_(ACTIVE_STATES)), job_id, state,
                         reason, message, result_json)

    def _end(self, query: sa.Update, job_id: str, state: str, reason: str, message: str, result_json: str | None,
             logs: list[tuple[str, str, dt.datetime]] = ()) -> bool:
        """Run query, the UPDATE that ends the job if it may, with the job's last log lines, its
        final state event, its usage and its result, in one transaction."""
        assert state in FINAL_STATES, state
        c = job_table.c
        events = [_log_event(level, text, time) for level, text, time in logs]
        digest = ResultDigest.of(result_json.encode()) if result_json is not None else None  # before the lock
        with self._engine.begin() as conn:
            row = conn.execute(
                query.values(state=state, reason=reason, reason_message=storable(message), end_time=self._now(),
                             events=c.events + len(events) + 1)
                .returning(c.events, c.attempts, c.start_time, c.end_time, c.session_id)
            ).first()
            if row is None:
                return False
            _charge(conn, job_id, row.start_time, row.end_time)
            _session_job_ended(conn, row)
            events.append(_state_event(state, utcnow(), reason=reason, text=storable(message), attempt=row.attempts))
            _insert_events(conn, job_id, row.events, events)
            if result_json is not None:
                conn.execute(_RESULT_INSERT, {"job_id": job_id, "result": result_json, "size_bytes": digest.size,
                                              "sha256": digest.sha256.hex()})
        self._notify([job_id])
        return True

    def cancel(self, job_id: str, *, instance: str | None = None) -> JobRecord:
        """Cancel a QUEUED or RUNNING job; FailedPrecondition JOB_ALREADY_FINAL once it has ended."""
        c = job_table.c
        query = job_table.update().where(c.id == job_id, c.state.in_(ACTIVE_STATES))
        if instance is not None:
            query = query.where(c.instance == instance)
        message = "cancelled by a user"
        with self._engine.begin() as conn:
            row = conn.execute(query.values(
                state=CANCELLED, reason="CANCELLED_BY_USER", reason_message=message, end_time=self._now(),
                events=c.events + 1,
            ).returning(c.events, c.attempts, c.start_time, c.end_time, c.session_id)).first()
            if row is not None:
                _charge(conn, job_id, row.start_time, row.end_time)
                _session_job_ended(conn, row)
                _insert_events(conn, job_id, row.events, [
                    _state_event(CANCELLED, utcnow(), reason="CANCELLED_BY_USER", text=message, attempt=row.attempts)])
        if row is not None:
            self._notify([job_id])
        job = self.get(job_id, instance=instance)
        if row is None:
            raise FailedPrecondition(
                f"job {job_id!r} has already ended ({job.state}); only queued or running jobs can be cancelled",
                reason="JOB_ALREADY_FINAL",
                metadata={"job_id": job_id, "state": f"JOB_STATE_{job.state}"},
            )
        return job

    def delete(self, job_id: str, *, instance: str | None = None) -> None:
        """Delete an ended job with its result, tags and events; FailedPrecondition JOB_NOT_FINAL while
        it is queued or running."""
        c = job_table.c
        query = job_table.delete().where(c.id == job_id, c.state.in_(FINAL_STATES))
        if instance is not None:
            query = query.where(c.instance == instance)
        with self._engine.begin() as conn:
            deleted = conn.execute(query).rowcount
            if deleted:  # the foreign keys cascade too; this keeps an engine without them clean
                for table in (result_table, event_table, tag_table):
                    conn.execute(table.delete().where(table.c.job_id == job_id))
        if not deleted:
            job = self.get(job_id, instance=instance)
            raise FailedPrecondition(
                f"job {job_id!r} is {job.state}; cancel it or wait for it to end before deleting it",
                reason="JOB_NOT_FINAL",
                metadata={"job_id": job_id, "state": f"JOB_STATE_{job.state}"},
            )
        self._notify([job_id])  # its watchers learn it is gone

    def get_result(self, job_id: str) -> str | None:
        """The stored result of a DONE job; None when there is none."""
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(result_table.c.result).where(result_table.c.job_id == job_id)
            ).scalar()

    def result_digest(self, job_id: str) -> ResultDigest:
        """The UTF-8 length and SHA-256 of a job's result (of "" when it has none); for a result written
        before they were kept, computed from it now and kept."""
        r = result_table.c
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(r.size_bytes, r.sha256).where(r.job_id == job_id)).first()
        if row is None:
            return ResultDigest.of(b"")
        if row.sha256 is not None:
            return ResultDigest(row.size_bytes, bytes.fromhex(row.sha256))
        digest = ResultDigest.of((self.get_result(job_id) or "").encode())
        with self._engine.begin() as conn:
            conn.execute(result_table.update().where(r.job_id == job_id)
                         .values(size_bytes=digest.size, sha256=digest.sha256.hex()))
        return digest

    def result_part(self, job_id: str, offset: int, length: int) -> tuple[ResultDigest, bytes]:
        """A job's result's digest and its UTF-8 bytes [offset, offset + length), read together; the
        database cuts the bytes out, so no more than those cross. (A result written before digests were
        kept: see result_digest.)"""
        query = _result_part_select(self._engine.dialect.name)
        with self._engine.connect() as conn:
            row = conn.execute(query, {"job_id": job_id, "start": offset + 1, "length": length}).first()  # 1-based
        if row is None:
            return ResultDigest.of(b""), b""
        if row.sha256 is None:
            return self.result_digest(job_id), bytes(row.part or b"")
        return ResultDigest(row.size_bytes, bytes.fromhex(row.sha256)), bytes(row.part or b"")

    def inputs_part(self, job_id: str, offset: int, length: int) -> tuple[ResultDigest | None, bytes]:
        """A job's inputs' kept digest (None for a job created before they were kept: see keep_inputs_digest)
        and the UTF-8 bytes [offset, offset + length) of its inputs column, cut out by the database."""
        c = job_table.c
        part = sa.func.substr(_utf8(self._engine.dialect.name, c.inputs), offset + 1, length).label("part")  # 1-based
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(c.inputs_bytes, c.inputs_sha256, part).where(c.id == job_id)).first()
        if row is None:
            raise job_not_found(job_id)
        digest = None if row.inputs_sha256 is None else ResultDigest(row.inputs_bytes, bytes.fromhex(row.inputs_sha256))
        return digest, bytes(row.part or b"")

    def keep_inputs_digest(self, job_id: str, digest: ResultDigest) -> None:
        """Keep the digest computed for a job created before inputs digests were kept."""
        c = job_table.c
        with self._engine.begin() as conn:
            conn.execute(job_table.update().where(c.id == job_id, c.inputs_sha256.is_(None))
                         .values(inputs_bytes=digest.size, inputs_sha256=digest.sha256.hex()))

    # -- input uploads -----------------------------------------------------------------------
    # An upload is its caller's: every method takes the instance and owner and treats another's, a
    # consumed one and an expired one alike (NotFound INPUT_UPLOAD_NOT_FOUND). Its times are this
    # replica's clock, as sessions' are: an hour's lifetime does not mind seconds of skew.

    def create_upload(self, *, instance: str, owner: str, content: str, total_bytes: int, sha256: bytes,
                      lifetime_seconds: float, max_instance_bytes: int = 0) -> UploadRecord:
        """Store a new empty upload. With max_instance_bytes, refused (ResourceExhausted
        TOO_MANY_UPLOAD_BYTES, retry when the instance's oldest upload expires) if the instance's
        unexpired uploads would then hold more than that many bytes (their declared sizes: what they may
        come to hold). The upload is written first and the sum read after it in the same transaction,
        so on SQLite (one writer at a time) the cap is exact; on PostgreSQL uploads created at the same
        moment may pass it together, as a guard against floods, not a quota."""
        u, now = upload_table.c, utcnow()
        values = {"id": new_job_id(), "instance": instance, "owner": owner, "content": content,
                  "total_bytes": total_bytes, "sha256": sha256.hex(), "received_bytes": 0, "create_time": now,
                  "expire_time": now + dt.timedelta(seconds=lifetime_seconds)}
        with self._engine.begin() as conn:
            conn.execute(upload_table.insert().values(**values))
            if max_instance_bytes > 0:
                held, first_expiry = conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(u.total_bytes), 0), sa.func.min(u.expire_time))
                    .where(u.instance == instance, u.expire_time > now, u.job_id.is_(None), u.id != values["id"])).one()
                if held + total_bytes > max_instance_bytes:
                    wait = (_utc(first_expiry) - now).total_seconds() if first_expiry else lifetime_seconds
                    raise ResourceExhausted(
                        f"instance {instance} holds {held} bytes in unfinished input uploads; with {total_bytes} "
                        f"more it would pass its limit of {max_instance_bytes}: use or let expire the ones it has",
                        reason="TOO_MANY_UPLOAD_BYTES", retry_after=max(wait, 1.0),
                        metadata={"limit_bytes": max_instance_bytes, "held_bytes": held, "total_bytes": total_bytes})
        return UploadRecord(**{**values, "sha256": sha256})

    def get_upload(self, upload_id: str, *, instance: str, owner: str, used: bool = False) -> UploadRecord:
        """The caller's unexpired upload that no job has used (with used, also one a job has used: what a
        retried CreateJob named); NotFound INPUT_UPLOAD_NOT_FOUND otherwise."""
        with self._engine.connect() as conn:
            row = conn.execute(upload_table.select().where(self._upload_is(upload_id, instance, owner, used))).first()
        if row is None:
            raise upload_not_found(upload_id)
        return _upload(row)

    def add_upload_chunk(self, upload_id: str, *, instance: str, owner: str, offset: int, data: bytes) -> UploadRecord:
        """Store data at offset, which must be where the bytes received end (then the upload is
        answered with its new received_bytes), or where a chunk already stored starts whose bytes are
        the same (a retry: nothing changes). Otherwise InvalidArgument: INVALID_UPLOAD_OFFSET (a gap,
        or the middle of a chunk), INPUT_UPLOAD_CHUNK_DIFFERS (other bytes than the chunk stored
        there), INPUT_UPLOAD_OVERFLOW (past total_bytes)."""
        u, digest = upload_table.c, hashlib.sha256(data).hexdigest()  # before the lock
        appended = (upload_table.update()
                    .where(self._upload_is(upload_id, instance, owner), u.received_bytes == offset,
                           u.received_bytes + len(data) <= u.total_bytes)
                    .values(received_bytes=u.received_bytes + len(data)).returning(*upload_table.c))
        with self._engine.begin() as conn:  # the conditional UPDATE first: it orders two senders of one chunk
            row = conn.execute(appended).first()
            if row is not None:
                conn.execute(upload_chunk_table.insert().values(upload_id=upload_id, start_byte=offset, data=data,
                                                                sha256=digest))
                return _upload(row)
        upload = self.get_upload(upload_id, instance=instance, owner=owner)  # NotFound if used meanwhile
        if offset == upload.received_bytes:
            raise InvalidArgument(
                f"the chunk's {len(data)} bytes at offset {offset} pass the upload's total of {upload.total_bytes}",
                reason="INPUT_UPLOAD_OVERFLOW",
                metadata={"upload_id": upload_id, "total_bytes": upload.total_bytes, "offset": offset},
                field_violations=[("data", f"at most {upload.total_bytes - offset} bytes at this offset")])
        k = upload_chunk_table.c
        with self._engine.connect() as conn:
            stored = conn.execute(sa.select(k.sha256).where(k.upload_id == upload_id, k.start_byte == offset)).scalar()
        if stored is None:
            raise InvalidArgument(
                f"offset {offset} is not where the upload's next chunk starts ({upload.received_bytes}, the bytes "
                "received so far) nor where a chunk received starts", reason="INVALID_UPLOAD_OFFSET",
                metadata={"upload_id": upload_id, "received_bytes": upload.received_bytes, "offset": offset},
                field_violations=[("offset", f"{upload.received_bytes}, or the offset of a chunk sent before")])
        if stored != digest:
            raise InvalidArgument(
                f"a chunk with other bytes was received at offset {offset}; a chunk sent again must be the same",
                reason="INPUT_UPLOAD_CHUNK_DIFFERS", metadata={"upload_id": upload_id, "offset": offset},
                field_violations=[("data", "the same bytes as the chunk sent before at this offset")])
        return upload

    def upload_content(self, upload_id: str, *, instance: str, owner: str) -> tuple[UploadRecord, bytes]:
        """The caller's upload and the bytes it received, in order (up to the deployment's largest
        upload: hundreds of MiB; assembled in one buffer, chunk by chunk)."""
        upload = self.get_upload(upload_id, instance=instance, owner=owner)
        k = upload_chunk_table.c
        content = bytearray(upload.received_bytes)
        query = sa.select(k.start_byte, k.data).where(k.upload_id == upload_id).order_by(k.start_byte)
        with self._engine.connect() as conn:
            for start, data in conn.execution_options(yield_per=2).execute(query):
                content[start:start + len(data)] = data
        return upload, bytes(content)

    def delete_upload(self, upload_id: str) -> None:
        """Delete an upload and its chunks (its content turned out damaged: nothing can use it)."""
        with self._engine.begin() as conn:
            conn.execute(upload_chunk_table.delete().where(upload_chunk_table.c.upload_id == upload_id))
            conn.execute(upload_table.delete().where(upload_table.c.id == upload_id))

    def sweep_uploads(self) -> int:
        """Delete the uploads that expired, with their chunks, and the chunks of those a job has used
        (every replica calls it every few seconds; deleting is idempotent); how many uploads expired. A
        used one's row stays until it expires, for a retried CreateJob."""
        u, k = upload_table.c, upload_chunk_table.c
        with self._engine.connect() as conn:
            expired = conn.execute(sa.select(u.id).where(u.expire_time <= utcnow())).scalars().all()
            used = conn.execute(sa.select(u.id).where(u.job_id.is_not(None), sa.exists().where(
                k.upload_id == u.id))).scalars().all()
        for upload_id in used:  # one transaction each: a large upload's chunks are hundreds of MiB
            with self._engine.begin() as conn:
                conn.execute(upload_chunk_table.delete().where(k.upload_id == upload_id))
        for upload_id in expired:
            self.delete_upload(upload_id)
        return len(expired)

    def _consume_upload(self, conn: sa.Connection, upload_id: str, instance: str, owner: str, job_id: str) -> None:
        """In CreateJob's transaction: mark the caller's upload used by the job (its chunks are the
        sweep's to delete, outside the job's transaction: SQLite writes one transaction at a time, and
        deleting hundreds of MiB takes seconds); NotFound if it is gone (another job took it, it
        expired), which rolls the job back."""
        used = upload_table.update().where(self._upload_is(upload_id, instance, owner)).values(job_id=job_id)
        if not conn.execute(used).rowcount:
            raise upload_not_found(upload_id)

    def _upload_is(self, upload_id: str, instance: str, owner: str, used: bool = False) -> sa.ColumnElement[bool]:
        """The caller's unexpired upload, one no job has used unless used."""
        u = upload_table.c
        unused = sa.true() if used else u.job_id.is_(None)
        return sa.and_(u.id == upload_id, u.instance == instance, u.owner == owner, u.expire_time > utcnow(), unused)

    # -- sessions and batches ----------------------------------------------------------------
    # A session's times are kept on this replica's clock (as jobs' create_time): its idle deadline
    # is compared with its jobs' create_time.

    def create_session(self, *, instance: str, owner: str, backend: str, mode: str, max_seconds: float,
                       idle_seconds: float) -> SessionRecord:
        """Store a new OPEN session accepting jobs."""
        values = {"id": new_job_id(), "instance": instance, "owner": owner, "backend": backend, "mode": mode,
                  "state": OPEN, "accepting_jobs": True, "max_seconds": max_seconds, "idle_seconds": idle_seconds,
                  "create_time": utcnow(), "close_reason": "", "usage_seconds": 0.0}
        with self._engine.begin() as conn:
            conn.execute(session_table.insert().values(**values))
        return self.get_session(values["id"])

    def get_session(self, session_id: str, *, instance: str | None = None) -> SessionRecord:
        """The session; NotFound SESSION_NOT_FOUND when absent or, with instance given, another instance's."""
        query = session_table.select().where(session_table.c.id == session_id)
        if instance is not None:
            query = query.where(session_table.c.instance == instance)
        with self._engine.connect() as conn:
            found = self._sessions(conn, list(conn.execute(query)))
        if not found:
            raise session_not_found(session_id)
        return found[0]

    def list_sessions(self, instance: str | None, *, page_size: int, page_token: str = "", state: str = "",
                      backend: str = "") -> tuple[list[SessionRecord], str]:
        """The instance's sessions (every one for None), newest first, optionally only those in state
        or on backend, and the next page's token ('' on the last), bound to those filters."""
        s = session_table.c
        query = session_table.select()
        if instance is not None:
            query = query.where(s.instance == instance)
        if state:
            query = query.where(s.state == state)
        if backend:
            query = query.where(s.backend == backend)
        bound_to = f"sessions|{state}|{backend}"
        position = self._decode_page_token(page_token, bound_to)
        if position is not None:
            query = query.where(*_before(s.create_time, s.id, *_after(position)))
        query = query.order_by(s.create_time.desc(), s.id.desc()).limit(page_size + 1)
        with self._engine.connect() as conn:
            rows = list(conn.execute(query))
            sessions = self._sessions(conn, rows[:page_size])
        if len(rows) <= page_size:
            return sessions, ""
        last = sessions[-1]
        return sessions, self._encode_page_token({"t": last.create_time.isoformat(), "id": last.id}, bound_to)

    def close_session(self, session_id: str, *, instance: str | None = None) -> SessionRecord:
        """Stop the session accepting jobs; it is CLOSED now if none of its jobs is queued or running,
        else once they have ended (sweep_sessions). Closing a closed session changes nothing."""
        self.get_session(session_id, instance=instance)
        s = session_table.c
        with self._engine.begin() as conn:
            conn.execute(session_table.update().where(s.id == session_id, s.accepting_jobs.is_(True))
                         .values(accepting_jobs=False, close_reason="closed by the user"))
            self._close_if_drained(conn, session_id, utcnow())
        return self.get_session(session_id)

    def cancel_session(self, session_id: str, *, instance: str | None = None) -> tuple[SessionRecord, list[str]]:
        """End the session now: CLOSED, its queued and running jobs CANCELLED. Returns it and the jobs
        that were running (their programs are to be stopped)."""
        self.get_session(session_id, instance=instance)
        s, at = session_table.c, utcnow()
        with self._engine.begin() as conn:
            row = conn.execute(session_table.update().where(s.id == session_id)  # written first: its lock
                               .values(accepting_jobs=False).returning(*session_table.c)).first()
            if row.state != CLOSED:
                conn.execute(session_table.update().where(s.id == session_id).values(
                    state=CLOSED, close_time=at, usage_seconds=row.usage_seconds + _active_span(row, at),
                    close_reason=row.close_reason if row.close_reason else "cancelled by the user"))
            cancelled = self._cancel_session_jobs(conn, session_id, ACTIVE_STATES, "CANCELLED_BY_USER",
                                                  "the session was cancelled")
        self._notify([job_id for job_id, _ in cancelled])
        return self.get_session(session_id), [job_id for job_id, state in cancelled if state == RUNNING]

    def sweep_sessions(self) -> int:
        """Move sessions on as time passes (every replica calls it every few seconds; each move is a
        conditional UPDATE, so replicas sweeping together move a session once):
          - past its max_time: CLOSED, its queued jobs CANCELLED SESSION_EXPIRED (running ones run on);
          - closed by its user and none of its jobs queued or running: CLOSED;
          - ACTIVE, idle past its deadline with no job running or waiting its turn: INACTIVE.
        Returns how many sessions moved."""
        s, c, at = session_table.c, job_table.c, utcnow()
        pending = sa.exists().where(c.session_id == s.id, c.state.in_(ACTIVE_STATES))
        waiting = sa.exists().where(c.session_id == s.id, sa.or_(
            c.state == RUNNING, sa.and_(c.state == QUEUED, c.create_time <= s.idle_deadline)))
        expired = sa.and_(s.state.in_(OPEN_STATES), s.expire_time <= at)
        drained = sa.and_(s.state.in_(OPEN_STATES), s.accepting_jobs.is_(False), ~pending)
        idle = sa.and_(s.state == ACTIVE, s.idle_deadline <= at, ~waiting)
        with self._engine.connect() as conn:
            found = {name: conn.execute(sa.select(s.id).where(where)).scalars().all()
                     for name, where in (("expired", expired), ("drained", drained), ("idle", idle))}
        moved, cancelled = 0, []
        for session_id in found["expired"]:
            with self._engine.begin() as conn:
                row = conn.execute(session_table.update().where(s.id == session_id, expired)
                                   .values(accepting_jobs=False).returning(*session_table.c)).first()
                if row is None:
                    continue
                until = _utc(row.expire_time)
                conn.execute(session_table.update().where(s.id == session_id).values(
                    state=CLOSED, close_time=until, usage_seconds=row.usage_seconds + _active_span(row, until),
                    close_reason=row.close_reason or f"max_time of {row.max_seconds:g} s reached"))
                cancelled += self._cancel_session_jobs(
                    conn, session_id, (QUEUED,), "SESSION_EXPIRED",
                    f"the session {session_id} reached its max_time of {row.max_seconds:g} s before the job started")
                moved += 1
        for session_id in found["drained"]:
            with self._engine.begin() as conn:
                moved += self._close_if_drained(conn, session_id, at)
        for session_id in found["idle"]:
            with self._engine.begin() as conn:
                row = conn.execute(session_table.update().where(s.id == session_id, idle)
                                   .values(state=INACTIVE).returning(*session_table.c)).first()
                if row is not None:  # it returns the new state: its span is from activation to the deadline
                    span = max(0.0, (_utc(row.idle_deadline) - _utc(row.activate_time)).total_seconds())
                    conn.execute(session_table.update().where(s.id == session_id)
                                 .values(usage_seconds=row.usage_seconds + span))
                    moved += 1
        self._notify([job_id for job_id, _ in cancelled])
        return moved

    def _admit_to_session(self, conn: sa.Connection, session_id: str, at: dt.datetime) -> None:
        """In CreateJob's transaction, before the job is stored: FailedPrecondition
        SESSION_NOT_ACCEPTING_JOBS unless the session accepts jobs now (written, so its lock holds a
        concurrent close or expiry off until the job is stored)."""
        s = session_table.c
        admitted = conn.execute(session_table.update().where(
            s.id == session_id, s.accepting_jobs.is_(True), sa.or_(s.expire_time.is_(None), s.expire_time > at),
        ).values(accepting_jobs=True)).rowcount
        if not admitted:
            row = conn.execute(session_table.select().where(s.id == session_id)).first()
            if row is None:
                raise session_not_found(session_id)
            why = row.close_reason or f"it reached its max_time of {row.max_seconds:g} s"
            raise FailedPrecondition(
                f"session {session_id!r} does not accept jobs any more ({why}); create a new session",
                reason="SESSION_NOT_ACCEPTING_JOBS",
                metadata={"session_id": session_id, "state": f"SESSION_STATE_{row.state}"},
            )

    def _close_if_drained(self, conn: sa.Connection, session_id: str, at: dt.datetime) -> int:
        """CLOSED at `at` if it does not accept jobs and none of its jobs is queued or running; 1 if so."""
        s, c = session_table.c, job_table.c
        pending = sa.exists().where(c.session_id == s.id, c.state.in_(ACTIVE_STATES))
        row = conn.execute(session_table.update().where(
            s.id == session_id, s.state != CLOSED, s.accepting_jobs.is_(False), ~pending,
        ).values(close_time=at).returning(*session_table.c)).first()
        if row is None:
            return 0
        conn.execute(session_table.update().where(s.id == session_id).values(
            state=CLOSED, usage_seconds=row.usage_seconds + _active_span(row, at)))
        return 1

    def _cancel_session_jobs(self, conn: sa.Connection, session_id: str, states: tuple[str, ...], reason: str,
                             message: str) -> list[tuple[str, str]]:
        """End the session's jobs in states CANCELLED with reason; (job id, state it was in) of each."""
        c = job_table.c
        before = dict(conn.execute(sa.select(c.id, c.state).where(c.session_id == session_id, c.state.in_(states))
                                   .with_for_update()).all())
        if not before:
            return []
        rows = conn.execute(job_table.update().where(c.id.in_(list(before)), c.state.in_(states)).values(
            state=CANCELLED, reason=reason, reason_message=message, end_time=self._now(), events=c.events + 1,
        ).returning(c.id, c.events, c.attempts, c.start_time, c.end_time)).all()
        for row in rows:
            _charge(conn, row.id, row.start_time, row.end_time)
            _insert_events(conn, row.id, row.events, [
                _state_event(CANCELLED, utcnow(), reason=reason, text=message, attempt=row.attempts)])
        return [(row.id, before[row.id]) for row in rows]

    def _sessions(self, conn: sa.Connection, rows: list[sa.Row]) -> list[SessionRecord]:
        """The rows as records, with their jobs queued and running and their usage now (two queries for all)."""
        if not rows:
            return []
        c, ids, now = job_table.c, [row.id for row in rows], utcnow()
        counts: dict[tuple[str, str], int] = {}
        query = (sa.select(c.session_id, c.state, sa.func.count())
                 .where(c.session_id.in_(ids), c.state.in_(ACTIVE_STATES)).group_by(c.session_id, c.state))
        for session_id, state, count in conn.execute(query):
            counts[(session_id, state)] = count
        batch_ids = [row.id for row in rows if row.mode == BATCH]
        batch_usage = dict(conn.execute(
            sa.select(c.session_id, sa.func.sum(c.usage_seconds)).where(c.session_id.in_(batch_ids))
            .group_by(c.session_id)).all()) if batch_ids else {}
        return [SessionRecord(
            id=row.id, instance=row.instance, owner=row.owner, backend=row.backend, mode=row.mode, state=row.state,
            accepting_jobs=bool(row.accepting_jobs), max_seconds=row.max_seconds, idle_seconds=row.idle_seconds,
            create_time=_utc(row.create_time), start_time=_utc(row.start_time), activate_time=_utc(row.activate_time),
            last_job_start_time=_utc(row.last_job_start_time), last_job_end_time=_utc(row.last_job_end_time),
            expire_time=_utc(row.expire_time), close_time=_utc(row.close_time), close_reason=row.close_reason,
            usage_seconds=float(batch_usage.get(row.id) or 0.0) if row.mode == BATCH
            else row.usage_seconds + _active_span(row, now),
            queued_jobs=counts.get((row.id, QUEUED), 0), running_jobs=counts.get((row.id, RUNNING), 0),
        ) for row in rows]

    # -- leases of running jobs -------------------------------------------------------------

    def requeue_running(self, *, stale_after: float = 0.0, runner: str | None = None, why: str = "") -> list[JobRecord]:
        """Put RUNNING jobs back in the queue: those whose claim was last renewed more than
        stale_after seconds ago by the database's clock (their replica died or was cut off), or with
        runner given, that runner's own (it is shutting down). Returns them. stale_after=0 requeues
        every running job. Each ends its attempt: the runner that held it can write nothing more."""
        c = job_table.c
        query = job_table.update().where(c.state == RUNNING)
        if runner is not None:
            query = query.where(c.claimed_by == runner)
        if stale_after > 0:
            cutoff = self._now(minus=dt.timedelta(seconds=stale_after))
            query = query.where(sa.or_(c.heartbeat_time.is_(None), c.heartbeat_time < cutoff))
        why = why or ("its runner stopped" if runner is not None else "its runner stopped renewing its lease")
        with self._engine.begin() as conn:
            rows = list(conn.execute(query.values(state=QUEUED, start_time=None, events=c.events + 1)
                                     .returning(*(col for col in c if col.name != "inputs"))))  # MiBs nobody reads
            for row in rows:
                event = _state_event(QUEUED, utcnow(), text=why, attempt=row.attempts)
                _insert_events(conn, row.id, row.events, [event])
            jobs = self._with_tags(conn, rows)
        self._notify([job.id for job in jobs])
        return jobs

    # -- events: logs and interim results ----------------------------------------------------

    def append_log(self, job_id: str, level: str, message: str, time: dt.datetime | None = None) -> bool:
        """Store one log line of the job; False when the job has ended (a late line of a program that
        was cancelled or timed out) or is gone."""
        return self.append_logs(job_id, [(level, message, time or utcnow())])

    def append_logs(self, job_id: str, lines: list[tuple[str, str, dt.datetime]]) -> bool:
        """Store (level, message, time) lines of the job in one transaction; False when it has ended or is gone."""
        return self._add_events(job_id, [_log_event(level, message, time) for level, message, time in lines])

    def add_interim_result(self, job_id: str, data: str) -> bool:
        """Store one interim result (JSON text); False when the job has ended or is gone."""
        return self._add_events(job_id, [{"kind": INTERIM, "time": utcnow(), "text": data}])

    def _add_events(self, job_id: str, events: list[dict]) -> bool:
        if not events:
            return True
        c = job_table.c
        with self._engine.begin() as conn:
            last = conn.execute(  # a job's history ends with its final state
                job_table.update().where(c.id == job_id, c.state.in_(ACTIVE_STATES))
                .values(events=c.events + len(events)).returning(c.events)
            ).scalar()
            if last is None:
                return False
            _insert_events(conn, job_id, last, events)
        self._notify([job_id])
        return True

    # -- a runner's writes, fenced by the attempt it runs ------------------------------------
    # A job's attempts counter is its fencing token: every claim adds one, and every write a runner
    # makes for a job names the attempt it runs. A write for an attempt that is no longer the job's
    # running one (the job was cancelled, timed out, ended, requeued or claimed again) changes
    # nothing and returns False: a zombie (a replica paused or cut off past its lease) or an
    # abandoned program can never touch the job's next attempt or its final state.

    def end_attempt(
        self, job_id: str, attempt: int, state: str, reason: str = "", message: str = "",
        result_json: str | None = None, *, logs: list[tuple[str, str, dt.datetime]] = (),
    ) -> bool:
        """End the job in state with its result and the program's last log lines (in one
        transaction, so a job is never seen DONE without them), if attempt is still the job's running one."""
        return self._end(self._attempt_update(job_id, attempt), job_id, state, reason, message, result_json, logs)

    def requeue_attempt(self, job_id: str, attempt: int, *, dependency_down: bool = False, why: str = "") -> bool:
        """Put the job back in the queue for another attempt, saying why, if attempt is still the job's
        running one: its program host died, or (dependency_down) a service it needs was down, which
        does not count against its attempts."""
        c = job_table.c
        waits = c.dependency_waits + (1 if dependency_down else 0)
        with self._engine.begin() as conn:
            last = conn.execute(self._attempt_update(job_id, attempt).values(
                state=QUEUED, start_time=None, dependency_waits=waits, events=c.events + 1,
            ).returning(c.events)).scalar()
            if last is None:
                return False
            _insert_events(conn, job_id, last, [_state_event(QUEUED, utcnow(), text=why, attempt=attempt)])
        self._notify([job_id])
        return True

    def append_attempt_logs(self, job_id: str, attempt: int, lines: list[tuple[str, str, dt.datetime]]) -> bool:
        """Store (level, message, time) lines of the attempt in one transaction."""
        return self._fenced_events(job_id, attempt, [_log_event(level, text, time) for level, text, time in lines])

    def add_attempt_interim_result(self, job_id: str, attempt: int, data: str) -> bool:
        """Store one interim result (JSON text) of the attempt."""
        return self._fenced_events(job_id, attempt, [{"kind": INTERIM, "time": utcnow(), "text": data}])

    def renew_leases(self, runner: str, attempts: dict[str, int]) -> set[str]:
        """Renew the runner's leases on its running attempts (job id -> attempt), on the database's
        clock; returns the jobs whose attempt is no longer running, which the runner should stop."""
        if not attempts:
            return set()
        c = job_table.c
        held = sa.and_(c.state == RUNNING, c.claimed_by == runner, sa.or_(
            *(sa.and_(c.id == job_id, c.attempts == attempt) for job_id, attempt in attempts.items())))
        with self._engine.begin() as conn:
            renewed = conn.execute(job_table.update().where(held).values(heartbeat_time=self._now())
                                   .returning(c.id)).scalars()
            return set(attempts) - set(renewed)

    def _attempt_update(self, job_id: str, attempt: int) -> sa.Update:
        c = job_table.c
        return job_table.update().where(c.id == job_id, c.state == RUNNING, c.attempts == attempt)

    def _fenced_events(self, job_id: str, attempt: int, events: list[dict]) -> bool:
        # The fence is an UPDATE that comes first: it takes the job's row lock (PostgreSQL) or the
        # write lock (SQLite) until the events commit, so a cancel or a re-claim cannot slip in between
        # the check and the insert. Renewing the lease on the way is right: the attempt is alive.
        c = job_table.c
        with self._engine.begin() as conn:
            last = conn.execute(self._attempt_update(job_id, attempt).values(
                heartbeat_time=self._now(), events=c.events + len(events)).returning(c.events)).scalar()
            if last is None:
                return False
            if events:
                _insert_events(conn, job_id, last, events)
        if events:
            self._notify([job_id])
        return True

    # -- the audit outbox ------------------------------------------------------------------------

    def claim_audit_events(self, runner: str, *, limit: int = 500, hold_seconds: float = 30.0) -> list[tuple[int, str]]:
        """Up to limit events of the audit outbox, oldest first, as (id, JSON), that no replica holds:
        held by runner for hold_seconds of the database's clock (then another may take them, if runner
        died before it forgot them: an event may then reach the trail twice, never not at all)."""
        o = audit_outbox_table.c
        free = sa.or_(o.claimed_until.is_(None), o.claimed_until < self._now())
        oldest = sa.select(o.id).where(free).order_by(o.id).limit(limit).scalar_subquery()
        claim = (audit_outbox_table.update().where(o.id.in_(oldest), free)  # free again: a race lost, not shared
                 .values(claimed_by=runner, claimed_until=self._now(minus=dt.timedelta(seconds=-hold_seconds)))
                 .returning(o.id, o.event))
        with self._engine.begin() as conn:
            return sorted((row.id, row.event) for row in conn.execute(claim))

    def release_audit_events(self, ids: list[int], runner: str) -> None:
        """Give back the events runner claimed and could not forward: the next claim takes them."""
        o = audit_outbox_table.c
        with self._engine.begin() as conn:
            conn.execute(audit_outbox_table.update().where(o.id.in_(ids), o.claimed_by == runner)
                         .values(claimed_by=None, claimed_until=None))

    def forget_audit_events(self, ids: list[int], runner: str) -> None:
        """Remove the events runner claimed and has forwarded."""
        o = audit_outbox_table.c
        with self._engine.begin() as conn:
            conn.execute(audit_outbox_table.delete().where(o.id.in_(ids), o.claimed_by == runner))

    def _now(self, minus: dt.timedelta = dt.timedelta(0)):
        """Now (less minus) on the database's clock, which every replica shares: PostgreSQL's own,
        as SQL; SQLite is a file on this machine, so its clock is this machine's."""
        if self._engine.dialect.name == "postgresql":
            return sa.func.clock_timestamp(type_=_TIME) - sa.bindparam("minus", minus, type_=sa.Interval(), unique=True)
        return utcnow() - minus

    # -- admission ----------------------------------------------------------------------------

    def admission_counts(self, instance: str, *, since: dt.datetime) -> tuple[int, int, dt.datetime | None]:
        """The instance's queued jobs, its jobs created since `since`, and the oldest of those."""
        c = job_table.c
        queued = sa.select(sa.func.count()).where(c.instance == instance, c.state == QUEUED).scalar_subquery()
        recent = sa.select(sa.func.count(), sa.func.min(c.create_time)).where(
            c.instance == instance, c.create_time >= since)
        with self._engine.connect() as conn:
            count, oldest = conn.execute(recent).one()
            return conn.execute(sa.select(queued)).scalar(), count, _utc(oldest)

    # -- reading events ---------------------------------------------------------------------

    def events_after(self, job_id: str, after: int, *, limit: int = 1000) -> list[EventRecord]:
        """The job's events numbered after `after`, oldest first, at most limit of them."""
        query = (event_table.select().where(event_table.c.job_id == job_id, event_table.c.number > after)
                 .order_by(event_table.c.number).limit(limit))
        with self._engine.connect() as conn:
            return [_event(row) for row in conn.execute(query)]

    def list_logs(self, job_id: str, *, page_size: int, page_token: str = "") -> tuple[list[LogRecord], str]:
        """The job's log lines, oldest first, and the next page's token."""
        rows, token = self._page(LOG, job_id, page_size, page_token)
        return [LogRecord(_utc(r.time), r.level, r.text) for r in rows], token

    def list_interim_results(
        self, job_id: str, *, page_size: int, page_token: str = ""
    ) -> tuple[list[InterimRecord], str]:
        """The job's interim results, oldest first, and the next page's token."""
        rows, token = self._page(INTERIM, job_id, page_size, page_token)
        return [InterimRecord(_utc(r.time), r.text) for r in rows], token

    def _page(self, kind: str, job_id: str, page_size: int, page_token: str) -> tuple[list[sa.Row], str]:
        e = event_table.c
        query = event_table.select().where(e.job_id == job_id, e.kind == kind)
        position = decode_page_token(page_token, after=int)
        if position is not None:
            query = query.where(e.number > sa.literal(position["after"], sa.BigInteger()))  # any int64 compares
        with self._engine.connect() as conn:
            rows = list(conn.execute(query.order_by(e.number).limit(page_size + 1)))
        if len(rows) <= page_size:
            return rows, ""
        return rows[:page_size], encode_page_token({"after": rows[page_size - 1].number})

    # -- helpers ----------------------------------------------------------------------------

    def _notify(self, job_ids: list[str]) -> None:
        for listener in self._listeners:
            for job_id in job_ids:
                listener(job_id)

    def _with_tags(self, conn: sa.Connection, rows: list[sa.Row]) -> list[JobRecord]:
        """The rows as records, with their tags (one query for them all)."""
        if not rows:
            return []
        tags: dict[str, list[str]] = {}
        query = sa.select(tag_table.c.job_id, tag_table.c.tag).where(tag_table.c.job_id.in_([r.id for r in rows]))
        for job_id, tag in conn.execute(query):
            tags.setdefault(job_id, []).append(tag)
        return [_job(row, tags.get(row.id, ())) for row in rows]

    def _secret(self, name: str) -> str:
        """A random secret the replicas of this store share, made by the first that needs it."""
        query = sa.select(secret_table.c.value).where(secret_table.c.name == name)
        with self._engine.begin() as conn:
            value = conn.execute(query).scalar()
            if value is None:
                with contextlib.suppress(sa.exc.IntegrityError), conn.begin_nested():
                    conn.execute(secret_table.insert().values(name=name, value=secrets.token_hex(32)))
                value = conn.execute(query).scalar_one()
        return value

    def _encode_page_token(self, position: dict, bound_to: str) -> str:
        position = {**position, "f": bound_to}
        return encode_page_token({**position, "sig": self._sign(position)})

    def _decode_page_token(self, token: str, bound_to: str) -> dict | None:
        position = decode_page_token(token, t=str, id=str, f=str, sig=str)
        if position is None:
            return None
        signature = position.pop("sig")
        if not hmac.compare_digest(signature, self._sign(position)):
            raise invalid_page_token()
        if position["f"] != bound_to:
            raise invalid_page_token("the page token was made for another filter; pass the filter it was made with")
        return position

    def _sign(self, position: dict) -> str:
        text = "|".join(f"{k}={position[k]}" for k in sorted(position))
        return hmac.new(self._page_key, text.encode(), hashlib.sha256).hexdigest()[:32]


def _utf8(dialect: str, text: sa.ColumnElement) -> sa.ColumnElement:
    """A text column's UTF-8 bytes, to cut byte ranges out of in the database."""
    if dialect == "postgresql":
        return sa.func.convert_to(text, "UTF8")
    return sa.cast(text, sa.LargeBinary)  # SQLite: text cast to a blob is its UTF-8 bytes


@functools.cache
def _result_part_select(dialect: str) -> sa.Select:
    """A result's digest and the UTF-8 bytes [:start, :start + :length) of it (1-based), job :job_id."""
    r = result_table.c
    part = sa.func.substr(_utf8(dialect, r.result), sa.bindparam("start", type_=sa.Integer),
                          sa.bindparam("length", type_=sa.Integer)).label("part")
    return sa.select(r.size_bytes, r.sha256, part).where(r.job_id == sa.bindparam("job_id"))


def _after(position: dict) -> tuple[dt.datetime, str]:
    """The (create_time, id) a page token of jobs or sessions stands for: the last row of its page."""
    try:
        return dt.datetime.fromisoformat(position["t"]), position["id"]
    except ValueError:
        raise invalid_page_token() from None


def _before(create_time: sa.ColumnElement, id_: sa.ColumnElement, at: dt.datetime, after_id: str,
            ) -> tuple[sa.ColumnElement[bool], ...]:
    """Rows before (at, after_id) in (create_time, id_) order. The first term is a range an index on
    create_time serves; the second alone, an OR, would make the database walk every row from the newest (a
    page deep in a listing read all the pages before it)."""
    return create_time <= at, sa.or_(create_time < at, id_ < after_id)


_FILTER_SETS = ("states", "programs", "backends", "owners", "sessions")  # JobFilter's sets, and the columns they select
_FILTER_COLUMNS = dict(zip(_FILTER_SETS, ("state", "program_id", "backend", "owner", "session_id"), strict=True))


def _list_query(inputs_up_to: int | None, page_size: int, instance: str | None, position: dict | None,
                where: JobFilter | None, walked_tag: str | None) -> tuple[sa.Select, dict]:
    """JobStore.list's statement and its parameters. The statement depends only on the filter's shape
    (which terms it has, how many tags), its values are parameters: it is built once per shape
    (_list_statement), not per call (building one took a tenth of a millisecond, a twentieth of a page)."""
    params = {"instance": instance, "walked_tag": walked_tag}
    if position is not None:
        params["at"], params["after_id"] = _after(position)
    sets, other_tags, bounds = (), 0, ()
    if where is not None:
        sets = tuple(name for name in _FILTER_SETS if getattr(where, name) is not None)
        params.update((name, sorted(getattr(where, name))) for name in sets)
        others = sorted(where.tags - {walked_tag})
        other_tags = len(others)
        params.update((f"tag_{i}", tag) for i, tag in enumerate(others))
        bounds = tuple(name for name in ("created_after", "created_before") if getattr(where, name) is not None)
        params.update((name, getattr(where, name)) for name in bounds)
    query = _list_statement(inputs_up_to, page_size, instance is not None, position is not None,
                            walked_tag is not None, sets, other_tags, bounds)
    return query, params


@functools.lru_cache(maxsize=512)  # shapes × page sizes × input sizes: clients use a few of each
def _list_statement(inputs_up_to: int | None, page_size: int, scoped: bool, paged: bool, walks_tag: bool,
                    sets: tuple[str, ...], other_tags: int, bounds: tuple[str, ...]) -> sa.Select:
    """The jobs a listing reads (_record_select), newest first, as bound parameters name them (_list_query).

    Without walks_tag the jobs are walked in the instance's index of them; with it, in one tag's index of
    the instance's jobs (jobs_job_tag_instance_created), each entry joined to its job for the other terms:
    `created` is the creation time of the rows walked (the job's, or its copy in the tag's index), where
    the page's position and the time bounds narrow the walk's range. Each other tag is checked per job."""
    c = job_table.c
    query = _record_select(inputs_up_to)
    if walks_tag:
        entries = tag_table.alias("walked")  # an alias: each job's own tags (_TAG_LIST) are still read by its id
        t = entries.c
        query = query.select_from(entries.join(job_table, t.job_id == c.id)).where(
            t.tag == sa.bindparam("walked_tag"))
        created, id_, scope = t.create_time, t.job_id, t.instance
    else:
        created, id_, scope = c.create_time, c.id, c.instance
    if scoped:
        query = query.where(scope == sa.bindparam("instance"))
    if paged:
        query = query.where(*_before(created, id_, sa.bindparam("at", type_=_TIME), sa.bindparam("after_id")))
    for name in sets:
        query = query.where(c[_FILTER_COLUMNS[name]].in_(sa.bindparam(name, expanding=True)))
    for i in range(other_tags):
        query = query.where(sa.exists().where(tag_table.c.job_id == c.id, tag_table.c.tag == sa.bindparam(f"tag_{i}")))
    if "created_after" in bounds:
        query = query.where(created > sa.bindparam("created_after", type_=_TIME))
    if "created_before" in bounds:
        query = query.where(created < sa.bindparam("created_before", type_=_TIME))
    return query.order_by(created.desc(), id_.desc()).limit(page_size + 1)


def _insert_tags(conn: sa.Connection, job: sa.Row | JobRecord, tags: Iterable[str]) -> None:
    """Write the job's tags, each with the job's instance and creation time (see tag_table)."""
    rows = [{"job_id": job.id, "tag": tag, "instance": job.instance, "create_time": job.create_time}
            for tag in sorted(set(tags))]
    if rows:
        conn.execute(tag_table.insert(), rows)


def _charge(conn: sa.Connection, job_id: str, start_time: dt.datetime | None, end_time: dt.datetime) -> None:
    """Record the job's usage: the running time of its last attempt (none if it never started)."""
    if start_time is not None:
        seconds = max(0.0, (_utc(end_time) - _utc(start_time)).total_seconds())
        conn.execute(job_table.update().where(job_table.c.id == job_id).values(usage_seconds=seconds))


def _state_event(state: str, time: dt.datetime, *, reason: str = "", text: str = "", attempt: int = 0) -> dict:
    return {"kind": STATE, "time": time, "state": state, "reason": reason, "text": text, "attempt": attempt}


def _log_event(level: str, text: str, time: dt.datetime) -> dict:
    return {"kind": LOG, "time": time, "level": level, "text": text}


def _insert_events(conn: sa.Connection, job_id: str, last: int, events: list[dict]) -> None:
    """Insert events numbered up to last (the job row's counter, already raised by len(events))."""
    first = last - len(events) + 1
    defaults = {"state": "", "reason": "", "attempt": 0, "level": "", "text": ""}
    conn.execute(_EVENT_INSERT, [
        {**defaults, **event, "job_id": job_id, "number": first + i} for i, event in enumerate(events)
    ])


# -- sessions: which queued jobs may start, and what a job's start and end change ----------------


class _SessionBusy(Exception):
    """Another replica started a job of the same dedicated session at the same moment: roll back."""


_ANY_QUEUED = sa.select(job_table.c.id).where(job_table.c.state == QUEUED).limit(1)
# The claim's aliases of the jobs table, made once: making an alias builds a proxy of every column,
# which cost more CPU than the rest of a claim together when done for each one.
_RUNNING, _QUEUED, _CANDIDATE = (job_table.alias(name) for name in ("running", "queued", "candidate"))


def _running_of(instance: sa.ColumnElement) -> sa.ScalarSelect:
    """How many jobs of that instance run now."""
    running = _RUNNING
    return (sa.select(sa.func.count()).select_from(running)
            .where(running.c.instance == instance, running.c.state == RUNNING).scalar_subquery())


@dataclasses.dataclass(frozen=True)
class _SessionPlan:
    """Which queued jobs of sessions may start now, read from the open sessions that have queued jobs:
    every queued job of a batch, the oldest queued job of a dedicated session running none, none of a
    session past its max_time; and among those heads, the ones that go first (their session is
    ACTIVE and they came before its idle deadline), oldest first."""

    batches: tuple[str, ...] = ()  # sessions whose every queued job may start
    heads: tuple[str, ...] = ()  # jobs that may start: one per dedicated session
    priority: tuple[str, ...] = ()  # of heads, those that go before everything else, oldest first

    @classmethod
    def read(cls, conn: sa.Connection, at: dt.datetime) -> _SessionPlan:
        s, c = session_table.c, job_table.c
        head_id = (sa.select(c.id).where(c.session_id == s.id, c.state == QUEUED)
                   .order_by(c.create_time, c.id).limit(1).scalar_subquery())
        busy = sa.exists().where(c.session_id == s.id, c.state == RUNNING)
        query = sa.select(s.id, s.mode, s.state, s.idle_deadline, head_id.label("head"), busy.label("busy")).where(
            s.state.in_(OPEN_STATES), sa.or_(s.expire_time.is_(None), s.expire_time > at),
            sa.exists().where(c.session_id == s.id, c.state == QUEUED))
        rows = conn.execute(query).all()
        batches = tuple(row.id for row in rows if row.mode == BATCH)
        heads = [row for row in rows if row.mode == DEDICATED and not row.busy and row.head]
        if not heads:
            return cls(batches=batches)
        created = dict(conn.execute(sa.select(c.id, c.create_time).where(c.id.in_([r.head for r in heads]))).all())
        first = sorted(
            (row for row in heads if row.state == ACTIVE and (
                row.idle_deadline is None or _utc(created[row.head]) <= _utc(row.idle_deadline))),
            key=lambda row: (_utc(created[row.head]), row.head))
        return cls(batches=batches, heads=tuple(row.head for row in heads), priority=tuple(row.head for row in first))

    def startable(self, jobs: sa.FromClause) -> sa.ColumnElement[bool]:
        """Whether a queued job (a row of jobs, an alias of job_table) may start."""
        terms = [jobs.c.session_id.is_(None)]
        if self.batches:
            terms.append(jobs.c.session_id.in_(self.batches))
        if self.heads:
            terms.append(jobs.c.id.in_(self.heads))
        return sa.or_(*terms)


def _fair_candidate(plan: _SessionPlan, max_running_per_instance: int) -> sa.ScalarSelect:
    """The oldest startable queued job of the instance with the fewest running (see claim_next_queued)."""
    queued, candidate = _QUEUED, _CANDIDATE
    running_count = _running_of(queued.c.instance)
    instances = (sa.select(queued.c.instance).where(queued.c.state == QUEUED, plan.startable(queued))
                 .group_by(queued.c.instance))
    if max_running_per_instance > 0:
        instances = instances.having(running_count < max_running_per_instance)
    neediest = instances.order_by(running_count, sa.func.min(queued.c.create_time)).limit(1).scalar_subquery()
    return (
        sa.select(candidate.c.id)
        .where(candidate.c.state == QUEUED, candidate.c.instance == neediest, plan.startable(candidate))
        .order_by(candidate.c.create_time, candidate.c.id).limit(1)
        .with_for_update(skip_locked=True).scalar_subquery()
    )


def _session_job_started(conn: sa.Connection, job: sa.Row, at: dt.datetime) -> None:
    """A job of a session was claimed: the session is ACTIVE (its max_time counting from its first
    job's start), with no idle deadline while the job runs. The session's row is written first: its
    lock orders the claims of one session's jobs, so the count that follows sees a claim another
    replica just committed; a dedicated session's job that is not its turn (another runs, or an
    older one waits), or a job of a session past its max_time, rolls the claim back (_SessionBusy)."""
    s = session_table.c
    session = conn.execute(session_table.update().where(s.id == job.session_id)
                           .values(last_job_start_time=at, idle_deadline=None).returning(*session_table.c)).first()
    if session is None:
        return
    expired = session.expire_time is not None and _utc(session.expire_time) <= at
    if session.mode == DEDICATED or expired:
        c = job_table.c
        queued_before = sa.and_(c.state == QUEUED, sa.or_(
            c.create_time < job.create_time, sa.and_(c.create_time == job.create_time, c.id < job.id)))
        first = conn.execute(sa.select(sa.func.count()).where(
            c.session_id == job.session_id, c.id != job.id, sa.or_(c.state == RUNNING, queued_before))).scalar_one()
        if expired or (session.mode == DEDICATED and first):
            raise _SessionBusy
    values: dict = {}
    if session.start_time is None:
        values.update(start_time=at, expire_time=at + dt.timedelta(seconds=session.max_seconds))
    if session.state in (OPEN, INACTIVE):
        values.update(state=ACTIVE, activate_time=at)
    if values:
        conn.execute(session_table.update().where(s.id == job.session_id).values(**values))


def _session_job_ended(conn: sa.Connection, job: sa.Row) -> None:
    """A job of a session that had started ended: the session's idle time counts from now."""
    if not job.session_id or job.start_time is None:
        return
    at = utcnow()
    s = session_table.c
    idle = conn.execute(session_table.update().where(s.id == job.session_id).values(last_job_end_time=at)
                        .returning(s.idle_seconds)).scalar()
    if idle is not None:
        conn.execute(session_table.update().where(s.id == job.session_id)
                     .values(idle_deadline=at + dt.timedelta(seconds=idle)))


def _active_span(row: sa.Row, until: dt.datetime) -> float:
    """Seconds the session has been ACTIVE since it last became so, up to until (or to its idle
    deadline, once passed); 0 unless it is ACTIVE."""
    if row.state != ACTIVE or row.activate_time is None:
        return 0.0
    end = until if row.idle_deadline is None else min(until, _utc(row.idle_deadline))
    return max(0.0, (end - _utc(row.activate_time)).total_seconds())
