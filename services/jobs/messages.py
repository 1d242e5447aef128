"""Store records as the proto messages of qruntime.jobs.v1."""

from __future__ import annotations

import datetime as dt

from google.protobuf import duration_pb2, timestamp_pb2
from qruntime.jobs.v1 import job_pb2, session_pb2

from . import typed, validation
from .store import INTERIM, LOG, EventRecord, InterimRecord, JobRecord, LogRecord, SessionRecord, utcnow
from .watch import Position


def job_message(job: JobRecord, view: int) -> job_pb2.Job:
    """The Job message of a stored job; its inputs only in the FULL view, and there only if the job
    message can carry them (omitted_inputs_bytes says how large they are otherwise)."""
    full = view == job_pb2.JOB_VIEW_FULL
    primitive = typed.primitive_input(job) if full else None
    if primitive is not None and primitive.ByteSize() > validation.MAX_INPUTS_BYTES:
        primitive = None  # its proto3 JSON was small enough to read, its binary form is not (packed numbers)
    omitted = full and primitive is None and (job.inputs is None or typed.is_primitive(job))
    message = job_pb2.Job(
        id=job.id,
        program_id=job.program_id,
        backend=job.backend,
        state=job_pb2.JobState.Value(f"JOB_STATE_{job.state}"),
        reason=job_pb2.JobReason.Value(f"JOB_REASON_{job.reason or 'UNSPECIFIED'}"),
        reason_message=job.reason_message,
        instance=job.instance,
        owner=job.owner,
        inputs=job.inputs if full and not omitted and not typed.is_primitive(job) else "",
        options=job_pb2.JobOptions(
            backend_name=job.backend, log_level=job_pb2.LogLevel.Value(f"LOG_LEVEL_{job.log_level}")
        ),
        max_execution_time=duration(job.max_execution_seconds),
        create_time=timestamp(job.create_time),
        request_id=job.request_id,
        program_version=job.program_version,
        attempts=job.attempts,
        tags=job.tags,
        metrics=metrics_message(job),
        time_limit_source=job_pb2.TimeLimitSource.Value(f"TIME_LIMIT_SOURCE_{job.time_limit_source or 'UNSPECIFIED'}"),
        session_id=job.session_id,
        omitted_inputs_bytes=(job.inputs_bytes or 0) if omitted else 0,
    )
    if primitive is not None:
        message.primitive_input.CopyFrom(primitive)
    if job.deadline is not None:
        message.deadline.CopyFrom(timestamp(job.deadline))
    if job.start_time is not None:
        message.start_time.CopyFrom(timestamp(job.start_time))
    if job.end_time is not None:
        message.end_time.CopyFrom(timestamp(job.end_time))
    return message


def session_message(session: SessionRecord) -> session_pb2.Session:
    """The Session message of a stored session."""
    message = session_pb2.Session(
        id=session.id, instance=session.instance, owner=session.owner, backend=session.backend,
        mode=session_pb2.SessionMode.Value(f"SESSION_MODE_{session.mode}"),
        state=session_pb2.SessionState.Value(f"SESSION_STATE_{session.state}"),
        accepting_jobs=session.accepting_jobs, max_time=duration(session.max_seconds),
        interactive_timeout=duration(session.idle_seconds), create_time=timestamp(session.create_time),
        close_reason=session.close_reason, usage_seconds=session.usage_seconds,
        queued_jobs=session.queued_jobs, running_jobs=session.running_jobs,
    )
    for field in ("start_time", "activate_time", "last_job_start_time", "last_job_end_time", "expire_time",
                  "close_time"):
        value = getattr(session, field)
        if value is not None:
            getattr(message, field).CopyFrom(timestamp(value))
    return message


def metrics_message(job: JobRecord) -> job_pb2.JobMetrics:
    """How long the job waited and ran (up to now, while it does)."""
    now = utcnow()
    started = job.start_time or (None if job.is_final else now)
    queued = ((started or job.end_time or now) - job.create_time).total_seconds()
    running = ((job.end_time or now) - job.start_time).total_seconds() if job.start_time else 0.0
    return job_pb2.JobMetrics(time_queued=duration(max(queued, 0.0)), time_running=duration(max(running, 0.0)),
                              usage_seconds=job.usage_seconds)


def event_message(event: EventRecord | Position) -> job_pb2.JobEvent:
    """The JobEvent of a stored event or a queue position snapshot."""
    if isinstance(event, Position):
        return job_pb2.JobEvent(sequence=event.after, time=timestamp(utcnow()),
                                queue_position=job_pb2.QueuePosition(jobs_ahead=event.jobs_ahead))
    message = job_pb2.JobEvent(sequence=event.number, time=timestamp(event.time))
    if event.kind == LOG:
        message.log.CopyFrom(log_entry_message(LogRecord(event.time, event.level, event.text)))
    elif event.kind == INTERIM:
        message.interim_result.CopyFrom(interim_result_message(InterimRecord(event.time, event.text)))
    else:
        message.state_change.CopyFrom(job_pb2.JobStateChange(
            state=job_pb2.JobState.Value(f"JOB_STATE_{event.state}"),
            reason=job_pb2.JobReason.Value(f"JOB_REASON_{event.reason or 'UNSPECIFIED'}"),
            reason_message=event.text, attempt=event.attempt,
        ))
    return message


def log_entry_message(entry: LogRecord) -> job_pb2.LogEntry:
    return job_pb2.LogEntry(
        time=timestamp(entry.time), level=job_pb2.LogLevel.Value(f"LOG_LEVEL_{entry.level}"), message=entry.message
    )


def interim_result_message(entry: InterimRecord) -> job_pb2.InterimResult:
    return job_pb2.InterimResult(time=timestamp(entry.time), data=entry.data)


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(dt.timedelta(seconds=seconds))
    return message


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def state_name(state: int) -> str:
    """The stored name of a JobState value: JOB_STATE_DONE -> "DONE"."""
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def log_level_name(level: int) -> str:
    """The stored name of a LogLevel value; UNSPECIFIED means INFO."""
    return job_pb2.LogLevel.Name(level or job_pb2.LOG_LEVEL_INFO).removeprefix("LOG_LEVEL_")
