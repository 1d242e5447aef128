"""SessionsService over gRPC, served by the jobs service: sessions and batches of a user's jobs.

A session groups one user's jobs on one backend. The store keeps its state and schedules its jobs
(store.claim_next_queued: a dedicated session's jobs run one at a time and, while it is ACTIVE,
ahead of other queued jobs; a batch's run in parallel), the executor's keeper moves sessions on
as time passes (store.sweep_sessions: max_time, the idle timeout, closing once drained). What
Qiskit Runtime does, we do: max_time counts from the first job's start, and when it passes the
session's queued jobs are cancelled and its running ones run to their end; an idle session loses
its priority but keeps accepting jobs.

Sessions belong to the caller's instance (another's answers NOT_FOUND like one that does not
exist); only their owner adds jobs to them (CreateJob, check_session_job). Roles are the jobs'
ones: job.create to create, close and cancel, job.read to read.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from qruntime.jobs.v1 import session_pb2, sessions_service_pb2, sessions_service_pb2_grpc

from qruntime_kit.auth import current_principal
from qruntime_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from qruntime_kit.logging import get_logger
from qruntime_kit.store import page_size

from .messages import session_message
from .store import CLOSED, SessionRecord, utcnow

if TYPE_CHECKING:
    from .servicer import JobsServicer

log = get_logger("jobs.sessions")

MAX_SESSION_SECONDS = 8 * 60 * 60  # the longest max_time, and the default
DEFAULT_IDLE_SECONDS = 60.0  # interactive_timeout, when not asked
SESSIONS_PAGE = {"default": 50, "maximum": 200}


class SessionsServicer(sessions_service_pb2_grpc.SessionsServiceServicer):
    """Answers with the jobs servicer's dependencies (its store, executor and peers)."""

    def __init__(self, jobs: JobsServicer) -> None:
        self._jobs = jobs

    async def CreateSession(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        instance = principal.require_instance("sessions")
        mode = _mode(request.mode)
        max_seconds, idle_seconds = session_times(request)
        deps = self._jobs.deps
        metadata = await deps.credentials.metadata(on_behalf_of=principal)
        backend, chosen = await self._jobs.resolve_backend(request.backend_name, metadata)
        session = await asyncio.to_thread(
            deps.store.create_session, instance=instance, owner=principal.subject, backend=backend.name, mode=mode,
            max_seconds=max_seconds, idle_seconds=idle_seconds)
        log.info("session created", session_id=session.id, backend=session.backend, backend_chosen=chosen,
                 mode=mode, max_seconds=max_seconds, idle_seconds=idle_seconds, instance=instance)
        return sessions_service_pb2.CreateSessionResponse(session=session_message(session))

    async def GetSession(self, request, context):
        principal = current_principal()
        principal.require("job.read")
        session = await asyncio.to_thread(self._jobs.deps.store.get_session, request.session_id,
                                          instance=_scope(principal))
        return sessions_service_pb2.GetSessionResponse(session=session_message(session))

    async def ListSessions(self, request, context):
        principal = current_principal()
        principal.require("job.read")
        if request.state not in session_pb2.SessionState.values():
            raise InvalidArgument(f"state {request.state} is not a SessionState", reason="INVALID_STATE",
                                  field_violations=[("state", "must be a SessionState value")])
        state = session_pb2.SessionState.Name(request.state).removeprefix("SESSION_STATE_") if request.state else ""
        sessions, token = await asyncio.to_thread(
            self._jobs.deps.store.list_sessions, _scope(principal), page_size=page_size(request.page_size,
                                                                                        **SESSIONS_PAGE),
            page_token=request.page_token, state=state, backend=request.backend_name)
        return sessions_service_pb2.ListSessionsResponse(sessions=[session_message(s) for s in sessions],
                                                         next_page_token=token)

    async def CloseSession(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        session = await asyncio.to_thread(self._jobs.deps.store.close_session, request.session_id,
                                          instance=_scope(principal))
        log.info("session closed", session_id=session.id, state=session.state, queued_jobs=session.queued_jobs,
                 running_jobs=session.running_jobs)
        return sessions_service_pb2.CloseSessionResponse(session=session_message(session))

    async def CancelSession(self, request, context):
        principal = current_principal()
        principal.require("job.create")
        deps = self._jobs.deps
        session, running = await asyncio.to_thread(deps.store.cancel_session, request.session_id,
                                                   instance=_scope(principal))
        for job_id in running:  # if they run here; other replicas see it at their next claim renewal
            deps.executor.cancel(job_id)
        log.info("session cancelled", session_id=session.id, running_jobs_cancelled=len(running))
        return sessions_service_pb2.CancelSessionResponse(session=session_message(session))


def check_session_job(session: SessionRecord, owner: str, backend_name: str) -> None:
    """Whether CreateJob may add a job of `owner` asking for `backend_name` to the session (the store
    checks again, in the job's transaction, that it still accepts jobs)."""
    if session.owner != owner:
        raise PermissionDenied(
            f"session {session.id!r} is another user's; only its owner may add jobs to it",
            reason="SESSION_NOT_OWNED", metadata={"session_id": session.id},
        )
    if backend_name and backend_name != session.backend:
        raise InvalidArgument(
            f"session {session.id!r} runs on {session.backend}, not {backend_name}; leave options.backend_name "
            "empty or name the session's backend",
            reason="SESSION_BACKEND_MISMATCH", metadata={"session_id": session.id, "backend": session.backend},
            field_violations=[("options.backend_name", f"must be empty or {session.backend}")],
        )
    expired = session.expire_time is not None and session.expire_time <= utcnow()
    if not session.accepting_jobs or expired or session.state == CLOSED:
        why = session.close_reason or f"it reached its max_time of {session.max_seconds:g} s"
        raise FailedPrecondition(
            f"session {session.id!r} does not accept jobs any more ({why}); create a new session",
            reason="SESSION_NOT_ACCEPTING_JOBS",
            metadata={"session_id": session.id, "state": f"SESSION_STATE_{session.state}"},
        )


def session_times(request: sessions_service_pb2.CreateSessionRequest) -> tuple[float, float]:
    """The session's max_time and interactive timeout in seconds, defaults applied; InvalidArgument
    INVALID_SESSION_TIME naming the field when one is out of range."""
    def seconds(field: str) -> float:
        if not request.HasField(field):
            return 0.0
        value = getattr(request, field)
        if value.seconds < 0 or value.nanos < 0:
            raise _invalid_time(field, "must not be negative")
        return value.ToTimedelta().total_seconds()

    max_seconds = seconds("max_time") or MAX_SESSION_SECONDS
    if max_seconds > MAX_SESSION_SECONDS:
        raise _invalid_time("max_time", f"at most {MAX_SESSION_SECONDS} s (8 hours)")
    idle_seconds = seconds("interactive_timeout") or min(DEFAULT_IDLE_SECONDS, max_seconds)
    if idle_seconds > max_seconds:
        raise _invalid_time("interactive_timeout", f"at most max_time ({max_seconds:g} s)")
    return max_seconds, idle_seconds


def _invalid_time(field: str, rule: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {rule}", reason="INVALID_SESSION_TIME", field_violations=[(field, rule)])


def _mode(mode: int) -> str:
    if mode not in session_pb2.SessionMode.values():
        raise InvalidArgument(f"mode {mode} is not a SessionMode", reason="INVALID_SESSION_MODE",
                              field_violations=[("mode", "must be a SessionMode value")])
    return session_pb2.SessionMode.Name(mode or session_pb2.SESSION_MODE_DEDICATED).removeprefix("SESSION_MODE_")


def _scope(principal) -> str | None:
    """The instance whose sessions the principal sees; None (all) for the suite's services."""
    return None if principal.is_service else principal.instance_crn
