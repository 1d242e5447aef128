"""DevicesService over gRPC: translates requests into calls on the backend adapters and their queues.

Users see (and may check circuits on) the backends their instance's plan allows (Lite: simulators,
Standard: physical systems); the suite's services see every backend and are the only callers that
may run circuits. Operators take backends out of service and back (require_operator). Circuits are
never decoded here: the workers do it (pool.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc

from qruntime_kit.auth import Principal, current_principal
from qruntime_kit.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from qruntime_kit.interceptors import describe_call
from qruntime_kit.logging import get_logger
from qruntime_kit.store import decode_page_token, encode_page_token, page_size

from .adapters import PHYSICAL, SIMULATOR, BackendAdapter
from .queues import ExecutionQueues
from .recent_runs import RecentRuns

log = get_logger("devices")

DEFAULT_SHOTS = 1024
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
# The kind of backend each plan may use.
PLAN_KINDS = {"lite": SIMULATOR, "standard": PHYSICAL}
KINDS = {SIMULATOR: backend_pb2.BACKEND_KIND_SIMULATOR, PHYSICAL: backend_pb2.BACKEND_KIND_PHYSICAL}
MAX_REASON_CHARS = 200
MAX_SELECTION_CHECKS = 1000
OPERATE = "backend.operate"  # the action an operator role grants


def require_operator(principal: Principal) -> None:
    """Raise PermissionDenied unless the caller may take backends out of service and back: the
    deployment's operators (the identity's operator flag, carried in their tokens)."""
    if principal.operator:
        return
    raise PermissionDenied(
        "only operators may change a backend's status", reason="OPERATOR_ONLY", metadata={"action": OPERATE}
    )


def allows(principal: Principal, adapter: BackendAdapter) -> bool:
    """Whether the caller's plan lets it use the backend; services may use all."""
    return principal.is_service or PLAN_KINDS.get(principal.plan) == adapter.kind


class DevicesServicer(devices_service_pb2_grpc.DevicesServiceServicer):
    def __init__(self, backends: Mapping[str, BackendAdapter], queues: ExecutionQueues) -> None:
        self._backends = dict(sorted(backends.items()))
        self._queues = queues
        self._recent = RecentRuns()

    async def ListBackends(self, request, context):
        principal = current_principal()
        size = page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        after = (decode_page_token(request.page_token, after=str) or {"after": ""})["after"]
        names = [
            name for name, adapter in self._backends.items() if name > after and allows(principal, adapter)
        ]
        page = names[:size]
        return devices_service_pb2.ListBackendsResponse(
            backends=[self._backend_message(name) for name in page],
            next_page_token=encode_page_token({"after": page[-1]}) if len(names) > size else "",
        )

    async def GetBackend(self, request, context):
        self._allowed_backend(current_principal(), request.name)
        return devices_service_pb2.GetBackendResponse(backend=self._backend_message(request.name))

    async def GetBackendProperties(self, request, context):
        adapter = self._allowed_backend(current_principal(), request.name)
        properties = await asyncio.to_thread(adapter.properties)
        return devices_service_pb2.GetBackendPropertiesResponse(properties=properties)

    async def RunCircuits(self, request, context):
        principal = current_principal()
        if not principal.is_service:
            raise PermissionDenied(
                "only the suite's services may run circuits directly; "
                "submit a job with JobsService.CreateJob",
                reason="SERVICE_ONLY",
            )
        # On this call's lines, its rpc line included: each call is served in a context of its own.
        describe_call(**({"job_id": request.job_id} if request.job_id else {}), backend=request.backend)
        self._allowed_backend(principal, request.backend, field="backend")
        request.shots = request.shots or DEFAULT_SHOTS
        seed = request.seed if request.HasField("seed") else None
        kind = request.primitive.WhichOneof("primitive") if request.HasField("primitive") else None
        what = ({"primitive": kind, "pubs": len(getattr(request.primitive, kind).pubs)} if kind else
                {"qpy_bytes": len(request.circuits_qpy), "shots": request.shots, "seed": seed,
                 "memory": request.memory})
        if not request.only_if_quick:
            log.info("run circuits", **what, pending=self._queues.pending(request.backend),
                     idempotency_key=request.idempotency_key)
        else:  # a quick run takes milliseconds: its call's rpc line says what it ran (queues.py)
            describe_call(**what, only_if_quick=True)
        return await self._recent.run(request, lambda: self._queues.run(request))

    async def CheckCircuits(self, request, context):
        self._allowed_backend(current_principal(), request.backend, field="backend")
        request.shots = request.shots or DEFAULT_SHOTS
        return await self._queues.check(request)

    async def SelectBackend(self, request, context):
        principal = current_principal()
        negative = [field for field, bad in (
            ("min_num_qubits", request.min_num_qubits < 0),
            ("queued_jobs", any(n < 0 for n in request.queued_jobs.values())),
            ("running_jobs", any(n < 0 for n in request.running_jobs.values())),
        ) if bad]
        if negative:
            raise InvalidArgument(
                f"{', '.join(negative)} must not be negative", reason="INVALID_SELECTION",
                field_violations=[(field, "must not be negative") for field in negative],
            )
        able = [
            name for name, adapter in self._backends.items()
            if allows(principal, adapter) and adapter.universal
            and adapter.configuration().num_qubits >= request.min_num_qubits
        ]
        candidates = [name for name in able if self._queues.status(name).operational]
        if not candidates:
            why = f"{len(able)} that can run it are in maintenance" if able else "none has enough qubits"
            raise FailedPrecondition(
                f"no backend your instance's plan allows with at least {request.min_num_qubits} qubits is "
                f"operational now ({why}); name one in options.backend_name to queue the job on it anyway, "
                "or retry later",
                reason="NO_BACKEND_AVAILABLE",
                metadata={"min_num_qubits": request.min_num_qubits},
            )
        if len(request.checks) > MAX_SELECTION_CHECKS:
            raise InvalidArgument(
                f"{len(request.checks)} checks; at most {MAX_SELECTION_CHECKS}", reason="INVALID_SELECTION",
                field_violations=[("checks", f"at most {MAX_SELECTION_CHECKS}")])

        def load(name: str) -> int:  # a running job's pending run is the same work: counted once
            return request.queued_jobs.get(name, 0) + max(request.running_jobs.get(name, 0),
                                                          self._queues.pending(name))

        # Least busy first, equals in random order (fairness, not secrecy).
        ordered = sorted(candidates, key=lambda name: (load(name), random.random()))  # noqa: S311
        refusals: dict[str, InvalidArgument] = {}
        for name in ordered:
            refusal = await self._refusal(name, request.checks)
            if refusal is None:
                break
            refusals[name] = refusal
        else:
            first = refusals[ordered[0]]  # the least busy backend's
            raise InvalidArgument(
                f"none of the {len(ordered)} operational backends your instance's plan allows accepts the job's "
                "circuits: " + "; ".join(f"{name}: {err.message}" for name, err in refusals.items()),
                reason="NO_BACKEND_RUNS_CIRCUITS",
                metadata={"backends": ",".join(refusals), "check": first.metadata.get("check", "0")},
                field_violations=[(f"backend {name}", f"{err.reason}: {err.message}")
                                  for name, err in refusals.items()],
            )
        tied = [other for other in candidates if other != name and load(other) == load(name)]
        wide = f" with at least {request.min_num_qubits} qubits" if request.min_num_qubits else ""
        reason = (
            f"least busy of {len(candidates)} operational backends{wide}: {request.queued_jobs.get(name, 0)} jobs "
            f"queued + {request.running_jobs.get(name, 0)} running ({self._queues.pending(name)} runs pending)"
        )
        if tied and not refusals:
            reason += f"; tied with {', '.join(tied)}, picked at random"
        if refusals:
            reason += "; " + ", ".join(f"{other} refused the circuits ({err.reason})"
                                       for other, err in refusals.items())
        return devices_service_pb2.SelectBackendResponse(backend=self._backend_message(name), reason=reason)

    async def _refusal(self, backend: str, checks) -> InvalidArgument | None:
        """Why backend refuses the checks (the first refused, by index; metadata `check` says which), or None.
        Every check runs to its end: cancelling one would kill the worker doing it."""
        async def check(index: int, given: devices_service_pb2.CheckCircuitsRequest) -> None:
            request = devices_service_pb2.CheckCircuitsRequest()
            request.CopyFrom(given)
            request.backend, request.shots = backend, given.shots or DEFAULT_SHOTS
            try:
                await self._queues.check(request)
            except InvalidArgument as err:
                err.metadata = {**err.metadata, "check": str(index)}
                raise

        outcomes = await asyncio.gather(*(check(i, c) for i, c in enumerate(checks)), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, InvalidArgument):
                raise outcome
        return next((outcome for outcome in outcomes if isinstance(outcome, InvalidArgument)), None)

    async def UpdateBackendStatus(self, request, context):
        principal = current_principal()
        require_operator(principal)
        self._allowed_backend(principal, request.name, any_plan=True)  # operators tend every backend
        if len(request.reason) > MAX_REASON_CHARS:
            raise InvalidArgument(
                f"reason has {len(request.reason)} characters; at most {MAX_REASON_CHARS}",
                reason="REASON_TOO_LONG", field_violations=[("reason", f"at most {MAX_REASON_CHARS} characters")],
            )
        self._queues.set_operational(request.name, request.operational, " ".join(request.reason.split()))
        log.info("backend status changed by an operator", backend=request.name, operational=request.operational,
                 operator=principal.subject)
        return devices_service_pb2.UpdateBackendStatusResponse(backend=self._backend_message(request.name))

    def _allowed_backend(self, principal: Principal, name: str, field: str = "name",
                         any_plan: bool = False) -> BackendAdapter:
        if not name:
            raise InvalidArgument(
                "name a backend", reason="BACKEND_MISSING", field_violations=[(field, "must name a backend")]
            )
        adapter = self._backends.get(name)
        if adapter is None:
            raise NotFound(
                f"no backend is named {name!r}", reason="BACKEND_NOT_FOUND", metadata={"backend": name}
            )
        if not any_plan and not allows(principal, adapter):
            plan = principal.plan or "none"
            raise PermissionDenied(
                f"backend {name} is a {adapter.kind}; your instance's {plan} plan does not include it",
                reason="BACKEND_NOT_IN_PLAN",
                metadata={"backend": name, "plan": plan},
            )
        return adapter

    def _backend_message(self, name: str) -> backend_pb2.Backend:
        return backend_message(name, self._backends[name], self._queues.status(name))


def backend_message(name: str, adapter: BackendAdapter, status: backend_pb2.BackendStatus) -> backend_pb2.Backend:
    """The Backend message of the adapter registered under name. Its configuration always states the
    system time limit, which the jobs service enforces, also when a plugged-in adapter leaves it out."""
    backend = backend_pb2.Backend(  # a copy: the adapter's own configuration is not changed
        name=name, kind=KINDS[adapter.kind], configuration=adapter.configuration(), status=status,
        description=adapter.description,
    )
    if not backend.configuration.HasField("max_execution_time"):
        backend.configuration.max_execution_time.FromSeconds(adapter.max_execution_time)
    if adapter.emulation is not None:
        backend.emulation.CopyFrom(adapter.emulation)
    return backend
