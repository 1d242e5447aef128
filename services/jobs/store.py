"""The jobs service's own tables (jobs_*): jobs, their results, logs and interim results.

SQLAlchemy Core over SQLite (one machine) or PostgreSQL (several replicas sharing the work). Every
state change is one conditional UPDATE, so two replicas never both claim a job and an ended job never
changes again. Writes come first in each transaction: on SQLite a transaction that reads before it
writes can fail at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its turn for the write lock.

States, reasons, runtimes and log levels are stored as the proto enum names without their prefix
("QUEUED", "PROGRAM_ERROR", "BUILTIN", "INFO"), readable in the database and stable across releases.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

import sqlalchemy as sa

from qruntime_kit import migrations
from qruntime_kit.errors import FailedPrecondition, NotFound
from qruntime_kit.store import create_engine, decode_page_token, encode_page_token, invalid_page_token

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "QUEUED", "RUNNING", "DONE", "ERROR", "CANCELLED"
FINAL_STATES = (DONE, ERROR, CANCELLED)
ACTIVE_STATES = (QUEUED, RUNNING)
TRACE_ID_LENGTH = 256
# A page of jobs stops early once their inputs and messages pass this many bytes, so that a
# ListJobs response stays well inside the 64 MiB gRPC message limit whatever the jobs hold.
LIST_PAGE_BYTES = 32 * 1024 * 1024

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
    # SHA-256 of the CreateJob request that made it, request_id aside ("": made before they were kept).
    sa.Column("request_fingerprint", sa.String(64), nullable=False, default="", server_default=""),
    # Which limit max_execution_seconds is: SYSTEM, PROGRAM or USER ("": created before it was kept).
    sa.Column("time_limit_source", sa.String(16), nullable=False, default="", server_default=""),
    sa.UniqueConstraint("instance", "request_id", name="jobs_job_instance_request_id"),
    sa.Index("jobs_job_instance_created", "instance", "create_time", "id"),
    sa.Index("jobs_job_state_created", "state", "create_time", "id"),
    sa.Index("jobs_job_state_instance_created", "state", "instance", "create_time", "id"),  # fair claims
)

result_table = sa.Table(
    "jobs_job_result",
    metadata,
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("result", sa.Text, nullable=False),
)

log_table = sa.Table(
    "jobs_job_log",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), nullable=False),
    sa.Column("time", _TIME, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("jobs_job_log_job", "job_id", "seq"),
)

interim_table = sa.Table(
    "jobs_job_interim_result",
    metadata,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), nullable=False),
    sa.Column("time", _TIME, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Index("jobs_job_interim_result_job", "job_id", "seq"),
)


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One stored job: everything in the Job message, plus the runtime kind of its program."""

    id: str
    instance: str
    owner: str
    program_id: str
    runtime: str
    backend: str
    state: str
    reason: str
    reason_message: str
    inputs: str
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
    request_fingerprint: str = ""  # digest of the CreateJob request that made it (idempotency.py)
    time_limit_source: str = ""  # which limit max_execution_seconds is: SYSTEM, PROGRAM or USER

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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_job_id() -> str:
    """20 lowercase hex characters, like the ids of IBM's runtime jobs."""
    return secrets.token_hex(10)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite gives back naive datetimes; every time this store writes is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _job(row: sa.Row) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"], instance=m["instance"], owner=m["owner"], program_id=m["program_id"],
        runtime=m["runtime"], backend=m["backend"], state=m["state"], reason=m["reason"],
        reason_message=m["reason_message"], inputs=m["inputs"], log_level=m["log_level"],
        max_execution_seconds=m["max_execution_seconds"], create_time=_utc(m["create_time"]),
        start_time=_utc(m["start_time"]), end_time=_utc(m["end_time"]), request_id=m["request_id"] or "",
        trace_id=m["trace_id"], attempts=m["attempts"], program_version=m["program_version"],
        dependency_waits=m["dependency_waits"], request_fingerprint=m["request_fingerprint"],
        time_limit_source=m["time_limit_source"],
    )


def would_create(
    *, instance: str, owner: str, program_id: str, runtime: str, backend: str, inputs: str, log_level: str,
    max_execution_seconds: float, request_id: str = "", trace_id: str = "", program_version: int = 0,
    request_fingerprint: str = "", time_limit_source: str = "",
) -> JobRecord:
    """The job JobStore.create would store from these arguments, without an id: a dry run's answer."""
    return JobRecord(
        id="", instance=instance, owner=owner, program_id=program_id, runtime=runtime, backend=backend,
        state=QUEUED, reason="", reason_message="", inputs=inputs, log_level=log_level,
        max_execution_seconds=max_execution_seconds, create_time=utcnow(), start_time=None, end_time=None,
        request_id=request_id, trace_id=trace_id[:TRACE_ID_LENGTH], program_version=program_version,
        request_fingerprint=request_fingerprint, time_limit_source=time_limit_source,
    )


def storable(text: str) -> str:
    """text as a column may hold it: PostgreSQL's text cannot hold NUL, and a NUL stored raw in SQLite
    cuts the text short for many readers, so it is kept visible, escaped (a circuit's name in an error)."""
    return text.replace("\x00", "\\x00")


def job_not_found(job_id: str) -> NotFound:
    # The same words whether the job is absent or another instance's.
    return NotFound(f"job {job_id!r} not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id})


class JobStore:
    """Jobs and what they produce, in the tables jobs_*; every method is a short blocking transaction."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url)
        migrations.upgrade(self._engine, MIGRATIONS, version_table=VERSION_TABLE)

    def close(self) -> None:
        self._engine.dispose()

    # -- jobs -------------------------------------------------------------------------------

    def create(
        self, *, instance: str, owner: str, program_id: str, runtime: str, backend: str, inputs: str,
        log_level: str, max_execution_seconds: float, request_id: str = "", trace_id: str = "",
        program_version: int = 0, request_fingerprint: str = "", time_limit_source: str = "",
    ) -> tuple[JobRecord, bool]:
        """Store a new QUEUED job; (job, True). With a request_id the instance used before, that
        earlier job instead: (job, False), so a retried CreateJob never makes a second job (the
        caller checks it was the same request: idempotency.check_same_request)."""
        if request_id:
            existing = self.find_by_request_id(instance, request_id)
            if existing is not None:
                return existing, False
        values = {
            "id": new_job_id(), "instance": instance, "owner": owner, "program_id": program_id,
            "runtime": runtime, "backend": backend, "state": QUEUED, "reason": "", "reason_message": "",
            "inputs": inputs, "log_level": log_level, "max_execution_seconds": max_execution_seconds,
            "create_time": utcnow(), "request_id": request_id or None,
            "trace_id": trace_id[:TRACE_ID_LENGTH],  # the caller's x-request-id, of any length
            "program_version": program_version, "request_fingerprint": request_fingerprint,
            "time_limit_source": time_limit_source,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(job_table.insert().values(**values))
        except sa.exc.IntegrityError:
            existing = self.find_by_request_id(instance, request_id) if request_id else None
            if existing is None:
                raise
            return existing, False  # a concurrent retry with the same key won the race
        return self.get(values["id"]), True

    def find_by_request_id(self, instance: str, request_id: str) -> JobRecord | None:
        """The job the instance created with this idempotency key, if any."""
        query = job_table.select().where(job_table.c.instance == instance, job_table.c.request_id == request_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return _job(row) if row else None

    def get(self, job_id: str, *, instance: str | None = None) -> JobRecord:
        """The job; NotFound JOB_NOT_FOUND when absent or, with instance given, another instance's."""
        query = job_table.select().where(job_table.c.id == job_id)
        if instance is not None:
            query = query.where(job_table.c.instance == instance)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise job_not_found(job_id)
        return _job(row)

    def list(
        self, instance: str | None, *, page_size: int, page_token: str = "", program_id: str = "", state: str = "",
    ) -> tuple[list[JobRecord], str]:
        """The instance's jobs (every job for None), newest first, and the next page's token ('' on the last).

        A page holds fewer than page_size jobs when they would pass LIST_PAGE_BYTES (always one at least)."""
        c = job_table.c
        query = job_table.select()
        if instance is not None:
            query = query.where(c.instance == instance)
        if program_id:
            query = query.where(c.program_id == program_id)
        if state:
            query = query.where(c.state == state)
        position = decode_page_token(page_token, t=str, id=str)
        if position is not None:
            try:
                after_time, after_id = dt.datetime.fromisoformat(position["t"]), position["id"]
            except ValueError:
                raise invalid_page_token() from None
            query = query.where(
                sa.or_(c.create_time < after_time, sa.and_(c.create_time == after_time, c.id < after_id))
            )
        query = query.order_by(c.create_time.desc(), c.id.desc()).limit(page_size + 1)
        jobs, size, more = [], 0, False
        with self._engine.connect() as conn:
            for row in conn.execution_options(yield_per=8).execute(query):  # never all the inputs at once
                job = _job(row)
                size += len(job.inputs.encode()) + len(job.reason_message.encode())
                if len(jobs) == page_size or (jobs and size > LIST_PAGE_BYTES):
                    more = True
                    break
                jobs.append(job)
        if not more:
            return jobs, ""
        return jobs, encode_page_token({"t": jobs[-1].create_time.isoformat(), "id": jobs[-1].id})

    def claim_next_queued(self, runner: str = "", *, max_running_per_instance: int = 0) -> JobRecord | None:
        """Move the next QUEUED job to RUNNING for this runner, counting the attempt, and return it;
        None when none waits (or every instance with queued jobs is at max_running_per_instance).

        Fair across instances: the next job is the oldest queued job of the instance that has the
        fewest jobs running (the oldest waiting job breaks ties), so an instance that floods the
        queue runs beside the others, never ahead of them.

        One UPDATE ... WHERE id = (that job) AND state = 'QUEUED' RETURNING: PostgreSQL picks the
        candidate FOR UPDATE SKIP LOCKED, so replicas pass each other by; SQLite (which has no row
        locks and ignores FOR UPDATE) runs the statement under its one write lock. Either way a job
        is claimed exactly once."""
        c = job_table.c
        queued, running = job_table.alias("queued"), job_table.alias("running")
        running_count = (
            sa.select(sa.func.count()).select_from(running)
            .where(running.c.instance == queued.c.instance, running.c.state == RUNNING).scalar_subquery()
        )
        instances = sa.select(queued.c.instance).where(queued.c.state == QUEUED).group_by(queued.c.instance)
        if max_running_per_instance > 0:
            instances = instances.having(running_count < max_running_per_instance)
        neediest = instances.order_by(running_count, sa.func.min(queued.c.create_time)).limit(1).scalar_subquery()
        oldest = (
            sa.select(c.id).where(c.state == QUEUED, c.instance == neediest).order_by(c.create_time, c.id).limit(1)
            .with_for_update(skip_locked=True).scalar_subquery()
        )
        now = self._now()  # the lease runs on the database's clock, the one all replicas share
        claim = (
            job_table.update().where(c.id == oldest, c.state == QUEUED)
            .values(state=RUNNING, start_time=now, claimed_by=runner or None, heartbeat_time=now,
                    attempts=c.attempts + 1)
            .returning(*job_table.c)
        )
        with self._engine.begin() as conn:
            row = conn.execute(claim).first()
        return _job(row) if row else None

    def finish(
        self, job_id: str, state: str, reason: str = "", message: str = "", result_json: str | None = None,
    ) -> bool:
        """End a queued or running job in state, whoever runs it (a runner ends its own attempt with
        end_attempt), storing its result in the same transaction, so a job is never seen DONE
        without its result. Does nothing (False) when the job already ended."""
        assert state in FINAL_STATES, state
        c = job_table.c
        query = job_table.update().where(c.id == job_id, c.state.in_(ACTIVE_STATES))
        with self._engine.begin() as conn:
            ended = conn.execute(
                query.values(state=state, reason=reason, reason_message=storable(message), end_time=utcnow())
            ).rowcount
            if ended and result_json is not None:
                conn.execute(result_table.insert().values(job_id=job_id, result=result_json))
        return bool(ended)

    def cancel(self, job_id: str, *, instance: str | None = None) -> JobRecord:
        """Cancel a QUEUED or RUNNING job; FailedPrecondition JOB_ALREADY_FINAL once it has ended."""
        c = job_table.c
        query = job_table.update().where(c.id == job_id, c.state.in_(ACTIVE_STATES))
        if instance is not None:
            query = query.where(c.instance == instance)
        with self._engine.begin() as conn:
            cancelled = conn.execute(query.values(
                state=CANCELLED, reason="CANCELLED_BY_USER", reason_message="cancelled by a user",
                end_time=utcnow(),
            )).rowcount
        job = self.get(job_id, instance=instance)
        if not cancelled:
            raise FailedPrecondition(
                f"job {job_id!r} has already ended ({job.state}); only queued or running jobs can be cancelled",
                reason="JOB_ALREADY_FINAL",
                metadata={"job_id": job_id, "state": f"JOB_STATE_{job.state}"},
            )
        return job

    def delete(self, job_id: str, *, instance: str | None = None) -> None:
        """Delete an ended job with its result, logs and interim results; FailedPrecondition
        JOB_NOT_FINAL while it is queued or running."""
        c = job_table.c
        query = job_table.delete().where(c.id == job_id, c.state.in_(FINAL_STATES))
        if instance is not None:
            query = query.where(c.instance == instance)
        with self._engine.begin() as conn:
            deleted = conn.execute(query).rowcount
            if deleted:  # the foreign keys cascade too; this keeps an engine without them clean
                for table in (result_table, log_table, interim_table):
                    conn.execute(table.delete().where(table.c.job_id == job_id))
        if not deleted:
            job = self.get(job_id, instance=instance)
            raise FailedPrecondition(
                f"job {job_id!r} is {job.state}; cancel it or wait for it to end before deleting it",
                reason="JOB_NOT_FINAL",
                metadata={"job_id": job_id, "state": f"JOB_STATE_{job.state}"},
            )

    def get_result(self, job_id: str) -> str | None:
        """The stored result of a DONE job; None when there is none."""
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(result_table.c.result).where(result_table.c.job_id == job_id)
            ).scalar()

    # -- leases of running jobs -------------------------------------------------------------

    def requeue_running(self, *, stale_after: float = 0.0, runner: str | None = None) -> list[JobRecord]:
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
        with self._engine.begin() as conn:
            return [_job(row) for row in conn.execute(query.values(state=QUEUED, start_time=None).returning(*c))]

    # -- logs and interim results -----------------------------------------------------------

    def append_log(self, job_id: str, level: str, message: str, time: dt.datetime | None = None) -> bool:
        """Store one log line of the job; False when the job is gone (deleted while its program ran)."""
        return self._append(log_table, job_id=job_id, time=time or utcnow(), level=level, message=message)

    def append_logs(self, job_id: str, lines: list[tuple[str, str, dt.datetime]]) -> bool:
        """Store (level, message, time) lines of the job in one transaction; False when the job is gone."""
        if not lines:
            return True
        rows = [{"job_id": job_id, "level": level, "message": message, "time": time} for level, message, time in lines]
        try:
            with self._engine.begin() as conn:
                conn.execute(log_table.insert(), rows)
        except sa.exc.IntegrityError:
            return False
        return True

    def add_interim_result(self, job_id: str, data: str) -> bool:
        """Store one interim result (JSON text); False when the job is gone."""
        return self._append(interim_table, job_id=job_id, time=utcnow(), data=data)

    def _append(self, table: sa.Table, **values) -> bool:
        try:
            with self._engine.begin() as conn:
                conn.execute(table.insert().values(**values))
        except sa.exc.IntegrityError:
            return False
        return True

    def list_logs(self, job_id: str, *, page_size: int, page_token: str = "") -> tuple[list[LogRecord], str]:
        """The job's log lines, oldest first, and the next page's token."""
        rows, token = self._page(log_table, job_id, page_size, page_token)
        return [LogRecord(_utc(r.time), r.level, r.message) for r in rows], token

    def list_interim_results(
        self, job_id: str, *, page_size: int, page_token: str = ""
    ) -> tuple[list[InterimRecord], str]:
        """The job's interim results, oldest first, and the next page's token."""
        rows, token = self._page(interim_table, job_id, page_size, page_token)
        return [InterimRecord(_utc(r.time), r.data) for r in rows], token

    def _page(self, table: sa.Table, job_id: str, page_size: int, page_token: str) -> tuple[list[sa.Row], str]:
        query = table.select().where(table.c.job_id == job_id)
        position = decode_page_token(page_token, after=int)
        if position is not None:
            query = query.where(table.c.seq > position["after"])
        with self._engine.connect() as conn:
            rows = list(conn.execute(query.order_by(table.c.seq).limit(page_size + 1)))
        if len(rows) <= page_size:
            return rows, ""
        return rows[:page_size], encode_page_token({"after": rows[page_size - 1].seq})

    # -- a runner's writes, fenced by the attempt it runs ------------------------------------
    # A job's attempts counter is its fencing token: every claim adds one, and every write a runner
    # makes for a job names the attempt it runs. A write for an attempt that is no longer the job's
    # running one (the job was cancelled, timed out, ended, requeued or claimed again) changes
    # nothing and returns False: a zombie (a replica paused or cut off past its lease) or an
    # abandoned program can never touch the job's next attempt or its final state.

    def end_attempt(
        self, job_id: str, attempt: int, state: str, reason: str = "", message: str = "",
        result_json: str | None = None,
    ) -> bool:
        """End the job in state with its result (in one transaction, so a job is never seen DONE
        without it), if attempt is still the job's running one."""
        assert state in FINAL_STATES, state
        with self._engine.begin() as conn:
            ended = conn.execute(self._attempt_update(job_id, attempt).values(
                state=state, reason=reason, reason_message=storable(message), end_time=self._now())).rowcount
            if ended and result_json is not None:
                conn.execute(result_table.insert().values(job_id=job_id, result=result_json))
        return bool(ended)

    def requeue_attempt(self, job_id: str, attempt: int, *, dependency_down: bool = False) -> bool:
        """Put the job back in the queue for another attempt, if attempt is still the job's running
        one: its program host died, or (dependency_down) a service it needs was down, which does not
        count against its attempts."""
        waits = job_table.c.dependency_waits + (1 if dependency_down else 0)
        with self._engine.begin() as conn:
            return bool(conn.execute(self._attempt_update(job_id, attempt).values(
                state=QUEUED, start_time=None, dependency_waits=waits)).rowcount)

    def append_attempt_logs(self, job_id: str, attempt: int, lines: list[tuple[str, str, dt.datetime]]) -> bool:
        """Store (level, message, time) lines of the attempt in one transaction."""
        rows = [{"job_id": job_id, "level": level, "message": message, "time": time} for level, message, time in lines]
        return self._fenced_insert(job_id, attempt, log_table, rows)

    def add_attempt_interim_result(self, job_id: str, attempt: int, data: str) -> bool:
        """Store one interim result (JSON text) of the attempt."""
        return self._fenced_insert(job_id, attempt, interim_table, [{"job_id": job_id, "time": utcnow(), "data": data}])

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

    def _fenced_insert(self, job_id: str, attempt: int, table: sa.Table, rows: list[dict]) -> bool:
        # The fence is an UPDATE that comes first: it takes the job's row lock (PostgreSQL) or the
        # write lock (SQLite) until the rows commit, so a cancel or a re-claim cannot slip in between
        # the check and the insert. Renewing the lease on the way is right: the attempt is alive.
        with self._engine.begin() as conn:
            if not conn.execute(self._attempt_update(job_id, attempt).values(heartbeat_time=self._now())).rowcount:
                return False
            if rows:
                conn.execute(table.insert(), rows)
        return True

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
