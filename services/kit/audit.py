"""The audit trail: every call that creates, changes or deletes something, and every refused call,
becomes an audit event (who, which instance, the action by its full name, outcome, request id,
time), written to the auth service before the call is answered, which keeps them append-only for
account administrators. A handler may instead store its call's success event itself, in the same
transaction as the call's effect, in an outbox its service forwards to auth (pending_success): the
event is then as durable as the effect, the two are stored together or not at all, and the call does
not wait for the sink.

One interceptor records for every service, from one table of what each mutating method does: a
service adds a method by adding a line to AUDITED_ACTIONS, nothing in its own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog

from .auth import Principal

_CREATE, _UPDATE, _DELETE = "create", "update", "delete"
# The methods that create, change or delete something, and their actions' full names.
AUDITED_ACTIONS: dict[str, str] = {
    "/qruntime.jobs.v1.JobsService/CreateJob": "quantum-computing.job.create",
    "/qruntime.jobs.v1.JobsService/CancelJob": "quantum-computing.job.cancel",
    "/qruntime.jobs.v1.JobsService/DeleteJob": "quantum-computing.job.delete",
    "/qruntime.jobs.v1.JobsService/UpdateJobTags": "quantum-computing.job.update",
    # An upload's chunks are not recorded one by one: the upload's creation and the job's are.
    "/qruntime.jobs.v1.JobsService/CreateInputUpload": "quantum-computing.job-input-upload.create",
    "/qruntime.jobs.v1.SessionsService/CreateSession": "quantum-computing.session.create",
    "/qruntime.jobs.v1.SessionsService/CloseSession": "quantum-computing.session.close",
    "/qruntime.jobs.v1.SessionsService/CancelSession": "quantum-computing.session.cancel",
    "/qruntime.programs.v1.ProgramsService/CreateProgram": "quantum-computing.program.create",
    "/qruntime.programs.v1.ProgramsService/UpdateProgram": "quantum-computing.program.update",
    "/qruntime.programs.v1.ProgramsService/DeleteProgram": "quantum-computing.program.delete",
    "/qruntime.devices.v1.DevicesService/UpdateBackendStatus": "quantum-computing.backend.update",
    **{f"/qruntime.admin.v1.AdminService/{method}": f"qruntime.admin.{noun}.{verb}" for method, noun, verb in (
        ("CreateUser", "user", _CREATE), ("DisableUser", "user", "disable"), ("EnableUser", "user", "enable"),
        ("CreateAccount", "account", _CREATE), ("InviteUser", "invitation", _CREATE),
        ("AcceptInvitation", "invitation", "accept"), ("DeclineInvitation", "invitation", "decline"),
        ("RemoveMember", "member", _DELETE), ("CreateInstance", "instance", _CREATE),
        ("DeleteInstance", "instance", _DELETE), ("CreateAccessGroup", "access-group", _CREATE),
        ("DeleteAccessGroup", "access-group", _DELETE), ("AddAccessGroupMember", "access-group", _UPDATE),
        ("RemoveAccessGroupMember", "access-group", _UPDATE), ("CreatePolicy", "policy", _CREATE),
        ("DeletePolicy", "policy", _DELETE), ("CreateServiceId", "service-id", _CREATE),
        ("CreateApiKey", "api-key", _CREATE),
        ("DisableApiKey", "api-key", "disable"), ("EnableApiKey", "api-key", "enable"),
        ("DeleteApiKey", "api-key", _DELETE),
    )},
}
# The action a refused read is recorded as, by service.
_READS = {"jobs": "quantum-computing.job.read", "programs": "quantum-computing.program.read",
          "devices": "quantum-computing.device.read", "auth": "qruntime.auth.read", "admin": "qruntime.admin.read"}
_TARGET_FIELDS = ("job_id", "session_id", "program_id", "policy_id", "key_id", "access_group", "user", "instance",
                  "account_id", "name", "email", "api_key")
_DENIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
SUCCESS, DENIED, FAILURE = "success", "denied", "failure"
DENIED_CODES = _DENIED


def action_of(method: str) -> str:
    if method in AUDITED_ACTIONS:
        return AUDITED_ACTIONS[method]
    if method == "/qruntime.devices.v1.DevicesService/RunCircuits":
        return "quantum-computing.device.run"
    service = method.lstrip("/").split(".")[1] if method.startswith("/qruntime.") else ""
    return _READS.get(service, method)


@dataclasses.dataclass
class AuditEvent:
    """One audited call, as the auth service stores it."""

    time: float
    account_id: str
    subject: str
    instance: str
    action: str
    method: str
    outcome: str
    code: str
    reason: str
    request_id: str
    target: str


def event_of(method: str, principal: Principal | None, request, outcome: str, code: str, reason: str) -> AuditEvent:
    subject = ""
    if principal is not None:
        subject = f"service:{principal.subject}" if principal.is_service else principal.subject
    return AuditEvent(
        time=time.time(), account_id=principal.account_id if principal else "", subject=subject,
        instance=principal.instance_crn if principal else "", action=action_of(method), method=method,
        outcome=outcome, code=code, reason=reason,
        request_id=structlog.contextvars.get_contextvars().get("request_id", ""), target=_target(request),
    )


def _target(request) -> str:
    if request is None:
        return ""
    for name in _TARGET_FIELDS:
        value = getattr(request, name, None) if name in request.DESCRIPTOR.fields_by_name else None
        if isinstance(value, str) and value:
            return "(an API key)" if name == "api_key" else value[:200]
    for nested in ("program", "policy"):
        if nested in request.DESCRIPTOR.fields_by_name and request.HasField(nested):
            inner = getattr(request, nested)
            return getattr(inner, "id", "") or getattr(inner, "name", "") or getattr(inner, "user_id", "")
    return ""


Writer = Callable[[list[AuditEvent]], Awaitable[None]]


@dataclasses.dataclass
class PendingSuccess:
    """An audited call's success event, for its handler to store with the call's effect (pending_success)."""

    event: Callable[[], AuditEvent]
    stored: bool = False  # set by the handler once the event is committed with the effect


# Set by the audit interceptor for each audited call, None for others. A mutable holder: the thread
# that a handler's transaction runs in sees it, and marks it stored.
PENDING_SUCCESS: contextvars.ContextVar[PendingSuccess | None] = contextvars.ContextVar("pending_success",
                                                                                      default=None)


def pending_success() -> PendingSuccess | None:
    """The audited call's success event, for a handler that stores it in the same transaction as the
    call's effect, in an outbox its service forwards to the auth service (the jobs store's). Once that
    transaction has committed, with nothing left that can fail the call, the handler sets .stored and
    the call is answered without the sink's write (a thread's round trip and a commit at auth; over
    gRPC between processes, a call). None outside an audited call."""
    return PENDING_SUCCESS.get()


def event_json(event: AuditEvent) -> str:
    """An event as an outbox keeps it."""
    return json.dumps(dataclasses.asdict(event), separators=(",", ":"))


def event_from_json(text: str) -> AuditEvent:
    return AuditEvent(**json.loads(text))


class AuditSink:
    """Writes events to the auth service as they come, in batches: what arrives while one batch is
    being written goes in the next (a group commit), so a quiet service writes each event at once and
    a busy one writes few large batches. A batch that cannot be written is kept and tried again every
    RETRY_SECONDS (up to MAX_PENDING events, then the oldest are dropped, logged).

    add() returns a future that completes once the event is written: the audit interceptor awaits it
    (WAIT_SECONDS at most) before the call is answered, so an answered call is in the trail even if
    its service is killed the moment after."""

    MAX_PENDING = 10_000
    RETRY_SECONDS = 0.5
    WAIT_SECONDS = 2.0

    def __init__(self, write: Writer) -> None:
        self._write = write
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def add(self, event: AuditEvent) -> asyncio.Future[None]:
        """Queue the event; the future completes when it is written (or dropped)."""
        loop = asyncio.get_running_loop()
        written = loop.create_future()
        self._pending.append((event, written))
        if len(self._pending) > self.MAX_PENDING:
            dropped = len(self._pending) - self.MAX_PENDING
            for _, future in self._pending[:dropped]:
                _complete(future)
            del self._pending[:dropped]
            structlog.get_logger("audit").error("audit events dropped: the auth service did not take them",
                                                dropped=dropped)
        if self._task is None:
            self._task = loop.create_task(self._run())
        self._wake.set()
        return written

    async def write_at_once(self, events: list[AuditEvent]) -> None:
        """Write events now, as a batch of their own, raising if they cannot be: for a caller that keeps
        them durably itself until they are written (an outbox)."""
        await self._write(events)

    async def flush(self) -> None:
        """Write what is pending now."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self._write([event for event, _ in batch])
        except Exception as err:  # auth unreachable: keep them for the next try
            self._pending[:0] = batch
            structlog.get_logger("audit").warning("cannot write audit events yet", error=str(err),
                                                  pending=len(self._pending))
            raise
        for _, future in batch:
            _complete(future)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - logged by flush; tried again soon
                await asyncio.sleep(self.RETRY_SECONDS)
            if self._pending:
                self._wake.set()

    async def close(self) -> None:
        """Write what is left, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()


def _complete(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
