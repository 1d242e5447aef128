"""Sessions and batches as qiskit-ibm-runtime users know them: ``Session`` and ``Batch``.

Both are real on the service (``SessionsService``, served by the jobs service): a session groups a
user's jobs on one backend and runs them back to back, ahead of other queued jobs while it is active;
a batch runs its jobs in parallel. The primitives take one as ``mode=``; ``with Session(...)`` also
makes it the session of the primitives created inside the block without a mode (``current_session``).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import grpc
from google.protobuf import duration_pb2

from ._convert import enum_label, optional_datetime
from .exceptions import IBMInputValueError, IBMRuntimeError, _invalid_argument
from .jobs.v1 import session_pb2, sessions_service_pb2

if TYPE_CHECKING:
    from ._jobs import RuntimeJob
    from ._options import RuntimeOptions
    from ._runtime_backend import RuntimeBackend
    from ._service import IBMRuntimeService

__all__ = ["Batch", "Session", "current_session"]

_CURRENT: contextvars.ContextVar[Session | None] = contextvars.ContextVar("qruntime_session", default=None)
_HMS = re.compile(r"^\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")


def current_session() -> Session | None:
    """The session (or batch) of the innermost ``with Session(...)`` block around the caller, if any."""
    return _CURRENT.get()


class Session:
    """A group of iterative jobs on one backend, run back to back (Qiskit Runtime's session).

    A session is created on the service at once, OPEN; it becomes active when its first job starts,
    and from then on its jobs run one at a time, each ahead of other queued jobs while the session is
    active. It lasts at most ``max_time`` from its first job's start (then its queued jobs are
    cancelled), and becomes inactive (losing its priority, still taking jobs) after
    ``interactive_timeout`` without a job. As a context manager it is closed on exit.

    Args:
        backend: the backend (a :class:`RuntimeBackend`, or its name); None lets the service pick the
            least busy one the instance may use.
        max_time: the longest the session may last, in seconds or as ``"2h 30m 40s"``; None: 8 hours.
        service: the service to create it with; by default the backend's.
        interactive_timeout: seconds it stays active without a job; None: 60 s.
        create_new: False wraps no session on the service (``from_id`` uses it).

    Raises:
        IBMInputValueError: an argument is invalid, here or according to the service.
        NotFoundError: no such backend.
        IBMNotAuthorizedError: the backend is not in the instance's plan, or the role may not run jobs.
    """

    _mode: ClassVar[int] = session_pb2.SESSION_MODE_DEDICATED
    _mode_name: ClassVar[str] = "dedicated"

    def __init__(
        self,
        backend: RuntimeBackend | str | None = None,
        max_time: int | float | str | None = None,
        *,
        service: IBMRuntimeService | None = None,
        interactive_timeout: int | float | None = None,
        create_new: bool = True,
    ) -> None:
        service = service if service is not None else getattr(backend, "service", None)
        if service is None:
            raise _invalid_argument("service", "give service=, or a backend from service.backend(...)")
        self._service = service
        self._active = True
        self._message = session_pb2.Session()
        if not create_new:
            return
        request = sessions_service_pb2.CreateSessionRequest(
            backend_name=backend if isinstance(backend, str) else (backend.name if backend is not None else ""),
            mode=self._mode,
        )
        for field, value in (("max_time", max_time), ("interactive_timeout", interactive_timeout)):
            if value is not None:
                getattr(request, field).CopyFrom(_duration(field, value))
        transport = service._transport
        self._message = transport.call(transport.sessions.CreateSession, request).session

    @classmethod
    def from_id(cls, session_id: str, service: IBMRuntimeService) -> Self:
        """The existing session ``session_id`` (e.g. a job's ``session_id``), to add jobs to it or follow it.

        Raises:
            NotFoundError: no such session in the instance.
            IBMInputValueError: it is a batch and this a session, or the reverse.
        """
        session = cls(service=service, create_new=False)
        session._message = session._fetch(session_id)
        if session._message.mode != cls._mode:
            raise IBMInputValueError(
                grpc.StatusCode.INVALID_ARGUMENT, "SESSION_MODE_MISMATCH",
                f"Input ID {session_id} has execution mode {session._details_mode} instead of {cls._mode_name}.",
                {"session_id": session_id})
        session._active = session._message.state != session_pb2.SESSION_STATE_CLOSED
        return session

    @property
    def session_id(self) -> str:
        """The session's id; jobs in it carry it as ``job.session_id``."""
        return self._message.id

    @property
    def service(self) -> IBMRuntimeService:
        """The service the session was created with."""
        return self._service

    @property
    def backend_name(self) -> str:
        """The name of the backend every job of the session runs on."""
        return self._message.backend

    def backend(self) -> str:
        """The name of the session's backend (qiskit-ibm-runtime's spelling)."""
        return self._message.backend

    def run(
        self,
        program_id: str,
        inputs: Mapping[str, Any],
        options: RuntimeOptions | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> RuntimeJob:
        """Run a program as a job of this session (``service.run`` with ``session_id``).

        Raises:
            IBMRuntimeError: the session was closed or cancelled here.
            FailedPreconditionError: the service no longer accepts jobs for it (closed, cancelled,
                or past its max_time).
        """
        if not self._active:
            raise IBMRuntimeError("The session is closed.")
        return self._service.run(program_id, inputs, options, session_id=self.session_id, **kwargs)

    def close(self) -> None:
        """Stop the session accepting jobs; its queued and running jobs still run, and it is closed
        once they have ended."""
        self._active = False
        request = sessions_service_pb2.CloseSessionRequest(session_id=self.session_id)
        self._message = self._call("CloseSession", request).session

    def cancel(self) -> None:
        """End the session now: its queued and running jobs are cancelled."""
        self._active = False
        request = sessions_service_pb2.CancelSessionRequest(session_id=self.session_id)
        self._message = self._call("CancelSession", request).session

    def status(self) -> str:
        """``"Pending"`` (no job started yet, or inactive), ``"In progress, accepting new jobs"``,
        ``"In progress, not accepting new jobs"`` or ``"Closed"``, as qiskit-ibm-runtime reports them."""
        message = self._refresh()
        if message.state in (session_pb2.SESSION_STATE_OPEN, session_pb2.SESSION_STATE_INACTIVE):
            return "Pending"
        if message.state == session_pb2.SESSION_STATE_ACTIVE:
            accepting = "accepting" if message.accepting_jobs else "not accepting"
            return f"In progress, {accepting} new jobs"
        return "Closed"

    def usage(self) -> float:
        """Usage in seconds: a session's time active (from its first job's start until it went
        inactive or closed, or until now), a batch's jobs' usage summed."""
        return self._refresh().usage_seconds

    def details(self) -> dict[str, Any]:
        """The session as the service reports it now, with qiskit-ibm-runtime's keys.

        ``id``, ``backend_name``, ``interactive_timeout`` and ``max_time`` (seconds), ``active_timeout``
        (the same as max_time), ``state`` (``"open"``, ``"active"``, ``"inactive"`` or ``"closed"``),
        ``accepting_jobs``, ``last_job_started``, ``last_job_completed``, ``started_at``, ``closed_at``,
        ``activated_at`` (aware UTC datetimes, None when not yet), ``mode`` (``"dedicated"`` or
        ``"batch"``), ``usage_time`` (seconds), ``timestamps`` (the known transitions, oldest first),
        and qruntime's ``created_at``, ``expires_at``, ``close_reason``, ``queued_jobs``, ``running_jobs``.
        """
        m = self._refresh()
        when = {name: optional_datetime(m, field) for name, field in (
            ("created_at", "create_time"), ("started_at", "start_time"), ("activated_at", "activate_time"),
            ("last_job_started", "last_job_start_time"), ("last_job_completed", "last_job_end_time"),
            ("expires_at", "expire_time"), ("closed_at", "close_time"))}
        max_time = m.max_time.ToNanoseconds() / 1e9
        return {
            "id": m.id,
            "backend_name": m.backend,
            "interactive_timeout": m.interactive_timeout.ToNanoseconds() / 1e9,
            "max_time": max_time,
            "active_timeout": max_time,
            "state": self._state_name(m),
            "accepting_jobs": m.accepting_jobs,
            "last_job_started": when["last_job_started"],
            "last_job_completed": when["last_job_completed"],
            "started_at": when["started_at"],
            "closed_at": when["closed_at"],
            "activated_at": when["activated_at"],
            "mode": self._details_mode,
            "usage_time": m.usage_seconds,
            "timestamps": _timestamps(when),
            "created_at": when["created_at"],
            "expires_at": when["expires_at"],
            "close_reason": m.close_reason,
            "queued_jobs": m.queued_jobs,
            "running_jobs": m.running_jobs,
        }

    @property
    def _details_mode(self) -> str:
        return {session_pb2.SESSION_MODE_BATCH: "batch"}.get(self._message.mode, "dedicated")

    @staticmethod
    def _state_name(message: session_pb2.Session) -> str:
        return enum_label(session_pb2.SessionState.Name, message.state, "SESSION_STATE_").lower()

    def _refresh(self) -> session_pb2.Session:
        self._message = self._fetch(self.session_id)
        return self._message

    def _fetch(self, session_id: str) -> session_pb2.Session:
        return self._call("GetSession", sessions_service_pb2.GetSessionRequest(session_id=session_id)).session

    def _call(self, method: str, request: Any) -> Any:
        transport = self._service._transport
        return transport.call(getattr(transport.sessions, method), request)

    def __enter__(self) -> Self:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _CURRENT.reset(self._token)
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}(session_id={self.session_id!r}, backend={self.backend_name!r})>"


class Batch(Session):
    """A group of independent jobs on one backend, run in parallel (Qiskit Runtime's batch mode).

    Created, closed, cancelled and inspected as a :class:`Session`; its jobs are not run one at a
    time and take no priority over other queued jobs.
    """

    _mode: ClassVar[int] = session_pb2.SESSION_MODE_BATCH
    _mode_name: ClassVar[str] = "batch"


def _duration(field: str, value: int | float | str) -> duration_pb2.Duration:
    """Seconds, or qiskit-ibm-runtime's ``"2h 30m 40s"``, as a Duration."""
    if isinstance(value, str):
        match = _HMS.match(value)
        if not match or not any(match.groups()):
            raise _invalid_argument(field, f"Invalid {field} value: {value!r} is not seconds nor like '2h 30m 40s'")
        hours, minutes, seconds = (int(part or 0) for part in match.groups())
        value = hours * 3600 + minutes * 60 + seconds
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _invalid_argument(field, f"must be a positive number of seconds, not {value!r}")
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(value * 1e9))
    return message


def _timestamps(when: dict[str, datetime | None]) -> list[dict[str, Any]]:
    """The transitions the service keeps the time of: created (open), last activated, closed."""
    found = [("open", when["created_at"]), ("active", when["activated_at"]), ("closed", when["closed_at"])]
    return [{"status": status, "timestamp": at} for status, at in found if at is not None]
