"""Store records as the proto messages of qruntime.jobs.v1."""

from __future__ import annotations

import collections
import datetime as dt
import threading

from google.protobuf import duration_pb2, timestamp_pb2
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2, session_pb2

from . import typed, validation
from .store import (
    INTERIM,
    LOG,
    EventRecord,
    InterimRecord,
    JobRecord,
    LogRecord,
    SessionRecord,
    ended_version,
    job_record,
    utcnow,
)

# Stored names (store.py: enum names without their prefix) -> the proto enums' numbers, looked up
# in a dict: Enum.Value(f"PREFIX_{name}") formats and searches a descriptor on every call.
_JOB_STATES = {v.name.removeprefix("JOB_STATE_"): v.number for v in job_pb2.JobState.DESCRIPTOR.values}
_JOB_REASONS = {v.name.removeprefix("JOB_REASON_"): v.number for v in job_pb2.JobReason.DESCRIPTOR.values}
_LOG_LEVELS = {v.name.removeprefix("LOG_LEVEL_"): v.number for v in job_pb2.LogLevel.DESCRIPTOR.values}
_TIME_LIMIT_SOURCES = {v.name.removeprefix("TIME_LIMIT_SOURCE_"): v.number
                       for v in job_pb2.TimeLimitSource.DESCRIPTOR.values}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NO_TIME = dt.timedelta(0)


def job_message(job: JobRecord, view: int, *, now: dt.datetime | None = None) -> job_pb2.Job:
    """The Job message of a stored job; its inputs only in the FULL view, and there only if the job
    message can carry them (omitted_inputs_bytes says how large they are otherwise). now: the time its
    metrics run to (a page of jobs passes one, read once)."""
    full = view == job_pb2.JOB_VIEW_FULL
    primitive = typed.primitive_input(job) if full else None
    if primitive is not None and primitive.ByteSize() > validation.MAX_INPUTS_BYTES:
        primitive = None  # its proto3 JSON was small enough to read, its binary form is not (packed numbers)
    omitted = full and primitive is None and (job.inputs is None or typed.is_primitive(job))
    # One constructor call, nested messages given as dicts: every message made apart and every field
    # set afterwards is another trip into the protobuf runtime, and a page of 100 jobs makes thousands.
    return job_pb2.Job(
        id=job.id,
        program_id=job.program_id,
        backend=job.backend,
        state=_JOB_STATES[job.state],
        reason=_JOB_REASONS[job.reason or "UNSPECIFIED"],
        reason_message=job.reason_message,
        instance=job.instance,
        owner=job.owner,
        inputs=job.inputs if full and not omitted and not typed.is_primitive(job) else "",
        options={"backend_name": job.backend, "log_level": _LOG_LEVELS[job.log_level]},
        max_execution_time=_duration_fields(job.max_execution_seconds),
        create_time=_timestamp_fields(job.create_time),
        request_id=job.request_id,
        program_version=job.program_version,
        attempts=job.attempts,
        tags=job.tags,
        metrics=_metrics_fields(job, now or utcnow()),
        time_limit_source=_TIME_LIMIT_SOURCES[job.time_limit_source or "UNSPECIFIED"],
        session_id=job.session_id,
        omitted_inputs_bytes=(job.inputs_bytes or 0) if omitted else 0,
        primitive_input=primitive,
        deadline=_timestamp_fields(job.deadline),
        start_time=_timestamp_fields(job.start_time),
        end_time=_timestamp_fields(job.end_time),
    )


class JobPages:
    """ListJobs' responses in the BASIC view, from ended jobs' Job messages encoded once and reused.

    Nothing changes an ended job but its tags (store.py: every write is conditioned on the job being queued
    or running, and its end writes its end time, usage and last event at once), so its message, metrics
    included, is the same at every listing; its key holds its tags and its last event's number
    (store.ended_version). The encodings of the latest `capacity` jobs listed are kept (about 300 bytes
    each). A page comes as the store's rows (JobStore.list_rows): a job whose message is kept is never
    made a record, nor a message. Thread-safe: pages are built in worker threads."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._encoded: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def response(self, rows: list, next_page_token: str) -> jobs_service_pb2.ListJobsResponse:
        keys = [ended_version(row) for row in rows]
        with self._lock:
            found = [self._encoded.get(key) if key else None for key in keys]
            for key, data in zip(keys, found, strict=True):
                if data is not None:
                    self._encoded.move_to_end(key)
        response = jobs_service_pb2.ListJobsResponse(next_page_token=next_page_token)
        now, made = utcnow(), {}
        for row, key, data in zip(rows, keys, found, strict=True):
            if data is not None:
                response.jobs.add().MergeFromString(data)  # decoding is cheap; building a message is not
                continue
            message = job_message(job_record(row), job_pb2.JOB_VIEW_BASIC, now=now)
            response.jobs.append(message)
            if key:  # not while its metrics run on
                made[key] = message.SerializeToString()
        if made:
            with self._lock:
                self._encoded.update(made)
                while len(self._encoded) > self._capacity:
                    self._encoded.popitem(last=False)
        return response


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


def _metrics_fields(job: JobRecord, now: dt.datetime) -> dict:
    """JobMetrics' fields: how long the job waited and ran (up to now, while it does), from the times'
    differences as they are (timedeltas: no round trip through float seconds)."""
    started = job.start_time or (None if job.is_final else now)
    queued = (started or job.end_time or now) - job.create_time
    running = (job.end_time or now) - job.start_time if job.start_time else _NO_TIME
    return {"time_queued": _delta_fields(max(queued, _NO_TIME)), "time_running": _delta_fields(max(running, _NO_TIME)),
            "usage_seconds": job.usage_seconds}


def event_message(event: EventRecord) -> job_pb2.JobEvent:
    """The JobEvent of a stored event."""
    time = _timestamp_fields(event.time)
    if event.kind == LOG:
        return job_pb2.JobEvent(sequence=event.number, time=time, log={
            "time": time, "level": _LOG_LEVELS[event.level], "message": event.text})
    if event.kind == INTERIM:
        return job_pb2.JobEvent(sequence=event.number, time=time, interim_result={"time": time, "data": event.text})
    return job_pb2.JobEvent(sequence=event.number, time=time, state_change={
        "state": _JOB_STATES[event.state], "reason": _JOB_REASONS[event.reason or "UNSPECIFIED"],
        "reason_message": event.text, "attempt": event.attempt})


def watch_entry(event: EventRecord) -> bytes:
    """The event as one entry of a WatchJobResponse's events, encoded: the encoding of a WatchJobResponse
    is its entries' joined (protobuf appends a repeated field's entries as they come)."""
    return jobs_service_pb2.WatchJobResponse(events=[event_message(event)]).SerializeToString()


def queue_position_entry(jobs_ahead: int, after: int) -> bytes:
    """A snapshot of a queued job's place (jobs_ahead queued jobs before it; after: the number of the
    last event before it) as one encoded entry of a WatchJobResponse's events (see watch_entry)."""
    event = job_pb2.JobEvent(sequence=after, time=_timestamp_fields(utcnow()),
                             queue_position={"jobs_ahead": jobs_ahead})
    return jobs_service_pb2.WatchJobResponse(events=[event]).SerializeToString()


def log_entry_message(entry: LogRecord) -> job_pb2.LogEntry:
    return job_pb2.LogEntry(time=_timestamp_fields(entry.time), level=_LOG_LEVELS[entry.level], message=entry.message)


def interim_result_message(entry: InterimRecord) -> job_pb2.InterimResult:
    return job_pb2.InterimResult(time=_timestamp_fields(entry.time), data=entry.data)


def duration(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(**_duration_fields(seconds))


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(**_timestamp_fields(value))


def _duration_fields(seconds: float) -> dict[str, int]:
    """seconds as a Duration's fields, to the microsecond, as Duration.FromTimedelta makes them (without its
    detours)."""
    return _delta_fields(dt.timedelta(seconds=seconds))


def _delta_fields(delta: dt.timedelta) -> dict[str, int]:
    """A timedelta as a Duration's fields (see _duration_fields)."""
    whole, micros = delta.days * 86_400 + delta.seconds, delta.microseconds
    if whole < 0 and micros:  # a Duration's seconds and nanos share a sign
        whole, micros = whole + 1, micros - 1_000_000
    return {"seconds": whole, "nanos": micros * 1000}


def _timestamp_fields(value: dt.datetime | None) -> dict[str, int] | None:
    """value as a Timestamp's fields (naive means UTC; None for None), by arithmetic: Timestamp.FromDatetime
    goes through a time tuple."""
    if value is None:
        return None
    delta = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)) - _EPOCH
    return {"seconds": delta.days * 86_400 + delta.seconds, "nanos": delta.microseconds * 1000}


def state_name(state: int) -> str:
    """The stored name of a JobState value: JOB_STATE_DONE -> "DONE"."""
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def log_level_name(level: int) -> str:
    """The stored name of a LogLevel value; UNSPECIFIED means INFO."""
    return job_pb2.LogLevel.Name(level or job_pb2.LOG_LEVEL_INFO).removeprefix("LOG_LEVEL_")
