"""Jobs as users see them: their status, result, logs and interim results."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc
from google.protobuf import json_format

from . import encoding
from ._backends import runtime_backend
from ._convert import enum_label, optional_datetime
from ._uploads import read_inputs
from .devices.v1 import devices_service_pb2
from .exceptions import (
    IBMRuntimeError,
    RuntimeInvalidStateError,
    RuntimeJobFailureError,
    RuntimeJobTimeoutError,
    RuntimeServiceError,
)
from .jobs.v1 import job_pb2, jobs_service_pb2

if TYPE_CHECKING:
    from ._channel import Transport
    from ._runtime_backend import RuntimeBackend

__all__ = ["JobStatus", "ResultDecoder", "RuntimeJob"]

RECONNECT_PAUSE_S = 0.5
"""How long to wait before following a job again after its stream broke (the service restarting)."""
RECONNECTS = 20
"""How many broken streams in a row a wait survives before it gives up with the last error."""


class _DecoderClass(Protocol):
    def decode(self, raw_result: str) -> Any: ...


ResultDecoder: TypeAlias = Callable[[str], Any] | _DecoderClass
"""Turns a job's raw JSON result into a value: a function, or an object with a ``decode`` method
(the qiskit-ibm-runtime ``ResultDecoder`` style)."""


class JobStatus(StrEnum):
    """Where a job is in its life; compares equal to its name, e.g. ``JobStatus.DONE == "DONE"``."""

    QUEUED = "QUEUED"
    """Accepted, waiting to run."""
    RUNNING = "RUNNING"
    """The program is running."""
    DONE = "DONE"
    """Finished; the result can be read."""
    ERROR = "ERROR"
    """Ended without a result."""
    CANCELLED = "CANCELLED"
    """Cancelled before it finished."""

    @property
    def final(self) -> bool:
        """Whether the job has ended and will not change state again."""
        return self in (JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELLED)


_STATUS_BY_STATE = {
    job_pb2.JOB_STATE_QUEUED: JobStatus.QUEUED,
    job_pb2.JOB_STATE_RUNNING: JobStatus.RUNNING,
    job_pb2.JOB_STATE_DONE: JobStatus.DONE,
    job_pb2.JOB_STATE_ERROR: JobStatus.ERROR,
    job_pb2.JOB_STATE_CANCELLED: JobStatus.CANCELLED,
}


class _JobId(str):
    """A job id that can also be called.

    qiskit-ibm-runtime's early RuntimeJob had ``job.job_id`` as an attribute and later made it a
    method ``job.job_id()``; users' scripts use both. A str subclass whose call returns the plain str
    keeps both spellings working with one value (it prints, compares and hashes as the id).
    """

    __slots__ = ()

    def __call__(self) -> str:
        return str.__str__(self)


class RuntimeJob:
    """One run of a program on a backend. Methods that report state ask the service afresh; waiting
    follows the job's event stream (``JobsService.WatchJob``), never polls."""

    def __init__(
        self, job: job_pb2.Job, transport: Transport, result_decoder: ResultDecoder | None = None, *,
        first_result: jobs_service_pb2.GetJobResultResponse | None = None,
    ) -> None:
        self._job = job
        self._transport = transport
        self._result_decoder = result_decoder
        self._raw_result: str | None = None
        # The result's first part, when it came with the job (a quick job's) or the event stream.
        self._first_result = first_result
        self._streaming: _ResultStream | None = None

    @property
    def job_id(self) -> _JobId:
        """The job's id: a str, and callable for the ``job.job_id()`` spelling."""
        return _JobId(self._job.id)

    @property
    def program_id(self) -> str:
        """The program the job runs."""
        return self._job.program_id

    @property
    def backend_name(self) -> str:
        """The name of the backend the job runs on."""
        return self._job.backend

    @cached_property
    def inputs(self) -> dict[str, Any]:
        """The job's inputs, fetched (jobs come without them) and decoded on first use; inputs larger than
        one message are read in chunks. A primitive job's are typed: see RuntimeJobV2.inputs ({} here)."""
        job = self._full_view()
        raw, primitive = read_inputs(self._transport, job.id) if job.omitted_inputs_bytes else (job.inputs, False)
        return encoding.loads(raw) if raw and not primitive else {}

    def _full_view(self) -> job_pb2.Job:
        """The job with its inputs, unless they are larger than one message (see Job.omitted_inputs_bytes)."""
        request = jobs_service_pb2.GetJobRequest(job_id=self._job.id, view=job_pb2.JOB_VIEW_FULL)
        return self._transport.call(self._transport.jobs.GetJob, request).job

    @property
    def session_id(self) -> str | None:
        """The id of the session or batch the job belongs to; None for a job on its own."""
        return self._job.session_id or None

    @property
    def tags(self) -> list[str]:
        """The job's tags, as last fetched."""
        return list(self._job.tags)

    def update_tags(self, new_tags: list[str]) -> list[str]:
        """Replace the job's tags; returns them as stored (sorted, without repeats)."""
        request = jobs_service_pb2.UpdateJobTagsRequest(job_id=self._job.id, tags=new_tags)
        self._job = self._transport.call(self._transport.jobs.UpdateJobTags, request).job
        return self.tags

    def metrics(self) -> dict[str, Any]:
        """When the job was created, started and ended, how long it queued and ran, and its usage."""
        self.status()  # fetches the job afresh
        job = self._job
        return {
            "timestamps": {name: optional_datetime(job, f"{name}_time") for name in ("create", "start", "end")},
            "time_queued_s": job.metrics.time_queued.ToTimedelta().total_seconds(),
            "time_running_s": job.metrics.time_running.ToTimedelta().total_seconds(),
            "usage": {"seconds": job.metrics.usage_seconds},
        }

    @property
    def creation_date(self) -> datetime | None:
        """When the service accepted the job (UTC)."""
        return optional_datetime(self._job, "create_time")

    @property
    def proto(self) -> job_pb2.Job:
        """The JobsService message, as last fetched."""
        return self._job

    def backend(self) -> RuntimeBackend:
        """The backend the job runs on."""
        request = devices_service_pb2.GetBackendRequest(name=self._job.backend)
        response = self._transport.call(self._transport.devices.GetBackend, request)
        return runtime_backend(response.backend, self._transport)

    def status(self) -> JobStatus:
        """The job's status, fetched from the service."""
        request = jobs_service_pb2.GetJobRequest(job_id=self._job.id)
        self._job = self._transport.call(self._transport.jobs.GetJob, request).job
        return self._cached_status()

    def wait_for_final_state(self, timeout: float | None = None) -> JobStatus:
        """Follow the job's events until it ends; its final status.

        Raises:
            RuntimeJobTimeoutError: the job had not ended after ``timeout`` seconds.
        """
        if not self._cached_status().final:
            # The stream ends with the result of a job that ends DONE: result() then needs no other call.
            for _ in self.events(timeout=timeout, include_result=True):
                pass
        return self._cached_status()

    def events(
        self, after: int = 0, timeout: float | None = None, *, on_call: Callable[[grpc.Future], None] | None = None,
        include_result: bool = False,
    ) -> Iterator[job_pb2.JobEvent]:
        """The job's events after number ``after``, as they happen, until it ends: its state changes,
        queue positions, log lines and interim results (``JobsService.WatchJob``). A broken stream is
        resumed from the last event received, so none is missed or repeated. ``on_call`` receives each
        gRPC call, which another thread may ``cancel()`` to stop the stream (it then raises CANCELLED).
        With ``include_result`` the stream of a job that ends DONE brings its result too, kept for
        :meth:`result`.

        Raises:
            RuntimeJobTimeoutError: the job had not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        broken = 0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                status = self._cached_status()
                raise RuntimeJobTimeoutError(f"job {self._job.id!r} was still {status} after {timeout} s")
            request = jobs_service_pb2.WatchJobRequest(job_id=self._job.id, after_sequence=after,
                                                       include_result=include_result)
            try:
                for response in self._transport.stream(self._transport.jobs.WatchJob, request, timeout=left,
                                                       on_call=on_call):
                    broken = 0
                    if response.HasField("result"):
                        self._first_result = response.result
                    for event in response.events:
                        if not event.HasField("queue_position"):
                            after = event.sequence
                        if event.HasField("state_change"):
                            self._entered(event)
                        yield event
                return
            except RuntimeServiceError as err:
                if err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the deadline check above says so
                if err.code != grpc.StatusCode.UNAVAILABLE or (broken := broken + 1) > RECONNECTS:
                    raise
            time.sleep(RECONNECT_PAUSE_S)

    def result(self, timeout: float | None = None, decoder: ResultDecoder | None = None) -> Any:
        """Wait for the job to end and return its result, decoded (by default with ``encoding.loads``).

        Raises:
            RuntimeJobFailureError: the job ended in ERROR.
            RuntimeInvalidStateError: the job was cancelled, so it has no result.
            RuntimeJobTimeoutError: the job had not ended after ``timeout`` seconds.
        """
        status = self.wait_for_final_state(timeout)
        if status is JobStatus.ERROR:
            raise RuntimeJobFailureError(self._job.id, self._reason(), self._job.reason_message)
        if status is JobStatus.CANCELLED:
            raise RuntimeInvalidStateError(f"job {self._job.id!r} was cancelled; it has no result")
        if self._raw_result is None:
            self._raw_result = self._fetch_result()
        return _decode(self._raw_result, decoder or self._result_decoder)

    def stream_results(self, callback: Callable[[str, Any], None], decoder: ResultDecoder | None = None) -> None:
        """Call ``callback(job_id, interim_result)`` in a background thread for every interim result the
        program publishes (those published already first), until the job ends or
        :meth:`cancel_result_streaming`.

        Raises:
            RuntimeInvalidStateError: results are streamed already, or the job has ended.
        """
        if self._streaming is not None and self._streaming.is_alive():
            raise RuntimeInvalidStateError(f"the interim results of job {self._job.id!r} are streamed already")
        if self._cached_status().final:
            raise RuntimeInvalidStateError(f"job {self._job.id!r} has ended; read interim_results() instead")
        self._streaming = _ResultStream(self, callback, decoder or self._result_decoder)
        self._streaming.start()

    def cancel_result_streaming(self) -> None:
        """Stop calling the callback given to :meth:`stream_results`."""
        if self._streaming is not None:
            self._streaming.stop()
            self._streaming = None

    def _result_part(self, offset: int = 0) -> jobs_service_pb2.GetJobResultResponse:
        """GetJobResult's answer from offset; the first part comes from the event stream when it brought it."""
        if offset == 0 and self._first_result is not None:
            return self._first_result
        request = jobs_service_pb2.GetJobResultRequest(job_id=self._job.id, offset=offset)
        return self._transport.call(self._transport.jobs.GetJobResult, request)

    def _fetch_result(self) -> str:
        """The job's raw result, reassembled from its chunks and checked against its checksum."""
        chunks, offset = [], 0
        while True:
            response = self._result_part(offset)
            if response.HasField("primitive_result"):  # a typed job read as JSON: its proto3 JSON mapping
                return json_format.MessageToJson(response.primitive_result, indent=None)
            chunks.append(response.result)
            offset = response.next_offset
            if not offset:
                break
        raw = "".join(chunks)
        if response.sha256 and hashlib.sha256(raw.encode()).digest() != response.sha256:
            raise IBMRuntimeError(f"the result of job {self._job.id!r} arrived damaged (its checksum differs)")
        return raw

    def _entered(self, event: job_pb2.JobEvent) -> None:
        """Keep the cached job in step with a state change the stream reported."""
        change = event.state_change
        self._job.state, self._job.reason, self._job.reason_message = change.state, change.reason, change.reason_message
        if change.attempt:
            self._job.attempts = change.attempt
        if change.state in (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_ERROR, job_pb2.JOB_STATE_CANCELLED):
            self._job.end_time.CopyFrom(event.time)

    def cancel(self) -> None:
        """Cancel the job.

        Raises:
            FailedPreconditionError: the job has ended already.
        """
        request = jobs_service_pb2.CancelJobRequest(job_id=self._job.id)
        self._job = self._transport.call(self._transport.jobs.CancelJob, request).job

    def logs(self) -> str:
        """Everything the program logged, one ``"<time> <LEVEL> <message>"`` line per entry."""
        request = jobs_service_pb2.ListJobLogsRequest(job_id=self._job.id)
        lines = []
        for entry in self._transport.paginate(self._transport.jobs.ListJobLogs, request, "entries"):
            when = optional_datetime(entry, "time")
            stamp = when.isoformat(timespec="milliseconds") if when else "-"
            level = enum_label(job_pb2.LogLevel.Name, entry.level, "LOG_LEVEL_")
            lines.append(f"{stamp} {level} {entry.message}")
        return "\n".join(lines)

    def interim_results(self, decoder: ResultDecoder | None = None) -> list[Any]:
        """The interim results the program published so far, oldest first, decoded."""
        request = jobs_service_pb2.ListJobInterimResultsRequest(job_id=self._job.id)
        pages = self._transport.paginate(
            self._transport.jobs.ListJobInterimResults, request, "interim_results"
        )
        return [_decode(item.data, decoder) for item in pages]

    def error_message(self) -> str | None:
        """Why the job failed, if it ended in ERROR; None otherwise."""
        if self.status() is not JobStatus.ERROR:
            return None
        return self._job.reason_message or self._reason()

    def done(self) -> bool:
        """Whether the job finished with a result."""
        return self.status() is JobStatus.DONE

    def running(self) -> bool:
        """Whether the program is running now."""
        return self.status() is JobStatus.RUNNING

    def cancelled(self) -> bool:
        """Whether the job was cancelled."""
        return self.status() is JobStatus.CANCELLED

    def in_final_state(self) -> bool:
        """Whether the job has ended."""
        return self.status().final

    def _cached_status(self) -> JobStatus:
        status = _STATUS_BY_STATE.get(self._job.state)
        if status is None:
            raise IBMRuntimeError(
                f"the service reported job {self._job.id!r} in unknown state {self._job.state}"
            )
        return status

    def _reason(self) -> str:
        return enum_label(job_pb2.JobReason.Name, self._job.reason, "JOB_REASON_")

    def __repr__(self) -> str:
        return (
            f"<RuntimeJob({self._job.id!r}, program_id={self.program_id!r}, backend={self.backend_name!r})>"
        )


def _decode(raw: str, decoder: ResultDecoder | None) -> Any:
    if decoder is None:
        return encoding.loads(raw) if raw else None
    decode = getattr(decoder, "decode", None)  # check first: a decoder class is callable too
    return decode(raw) if callable(decode) else decoder(raw)  # type: ignore[operator]


class _ResultStream(threading.Thread):
    """Follows a job's events in the background, handing its interim results to a callback."""

    def __init__(self, job: RuntimeJob, callback: Callable[[str, Any], None], decoder: ResultDecoder | None) -> None:
        super().__init__(name=f"qruntime-results-{job.job_id}", daemon=True)
        self._job = job
        self._callback = callback
        self._decoder = decoder
        self._stopped = threading.Event()
        self._call: grpc.Future | None = None

    def run(self) -> None:
        try:
            for event in self._job.events(on_call=self._calling):
                if self._stopped.is_set():
                    return
                if event.HasField("interim_result"):
                    self._callback(str(self._job.job_id), _decode(event.interim_result.data, self._decoder))
        except IBMRuntimeError:
            if not self._stopped.is_set():
                raise

    def _calling(self, call: grpc.Future) -> None:
        self._call = call
        if self._stopped.is_set():
            call.cancel()

    def stop(self) -> None:
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()
