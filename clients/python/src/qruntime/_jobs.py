"""Jobs as users see them: their status, result, logs and interim results."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from . import encoding
from ._backends import runtime_backend
from ._convert import enum_label, optional_datetime
from .devices.v1 import devices_service_pb2
from .exceptions import (
    IBMRuntimeError,
    RuntimeInvalidStateError,
    RuntimeJobFailureError,
    RuntimeJobTimeoutError,
)
from .jobs.v1 import job_pb2, jobs_service_pb2

if TYPE_CHECKING:
    from ._channel import Transport
    from ._runtime_backend import RuntimeBackend

__all__ = ["JobStatus", "ResultDecoder", "RuntimeJob"]

POLL_START_S = 0.01
"""The first pause between two status checks while waiting for a job."""
POLL_FACTOR = 1.5
"""Each pause is this much longer than the one before ..."""
POLL_CAP_S = 0.5
"""... up to this many seconds."""


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
    """One run of a program on a backend. Methods that report state ask the service afresh."""

    def __init__(
        self, job: job_pb2.Job, transport: Transport, result_decoder: ResultDecoder | None = None
    ) -> None:
        self._job = job
        self._transport = transport
        self._result_decoder = result_decoder
        self._raw_result: str | None = None

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
        """The job's inputs, decoded on first use."""
        return encoding.loads(self._job.inputs) if self._job.inputs else {}

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
        """Poll until the job ends (backing off from 10 ms to 0.5 s between checks); its final status.

        Raises:
            RuntimeJobTimeoutError: the job had not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_START_S
        status = self._cached_status()
        while not status.final:
            status = self.status()
            if status.final:
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeJobTimeoutError(f"job {self._job.id!r} was still {status} after {timeout} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * POLL_FACTOR, POLL_CAP_S)
        return status

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
            request = jobs_service_pb2.GetJobResultRequest(job_id=self._job.id)
            self._raw_result = self._transport.call(self._transport.jobs.GetJobResult, request).result
        return _decode(self._raw_result, decoder or self._result_decoder)

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
