"""Every circuit among a job's inputs, checked by the devices service before the job is accepted.

The jobs service never decodes a circuit: it finds the encoded ones in the inputs' JSON and sends
each QPY file to DevicesService.CheckCircuits, which decodes and checks it in a limited worker. So a
circuit that could never run (QPY that does not decode, a header claiming ten million qubits, more
memory than the deployment allows simulations, wider than the backend) is refused by CreateJob with
INVALID_ARGUMENT naming the input, and never stored, queued or retried.

The circuits are checked as a program's inputs (`as_program_input`): programs bind parameters and add
measurements before they run them, so only what that cannot change is checked. A primitive job's PUBs
are checked as they will run. A job that names no backend has its checks sent with SelectBackend, so
that the backend chosen is one that accepts them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Iterator
from typing import Any

import grpc
from qruntime.devices.v1 import devices_service_pb2, devices_service_pb2_grpc
from qruntime.encoding import TYPE_KEY, VALUE_KEY
from qruntime.primitives.v1 import primitives_pb2

from qruntime_kit.errors import InvalidArgument, ServiceError
from qruntime_kit.outbound import MAX_MESSAGE_BYTES, call

CIRCUIT_TYPE = "QuantumCircuit"
# Checks of one job's circuits in flight at once: the devices service runs at most a few itself.
_CONCURRENT_CHECKS = 4
# The devices service takes a circuit in one message (CheckCircuits, RunCircuits), with room to spare:
# inputs uploaded in chunks may hold larger ones, which no backend could be sent.
MAX_CIRCUIT_BYTES = MAX_MESSAGE_BYTES - 1024 * 1024


def encoded_circuits(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, base64 QPY) of every encoded circuit in value, e.g. ("inputs.circuits[0]", "UVBZ...")."""
    if isinstance(value, dict):
        if value.keys() == {TYPE_KEY, VALUE_KEY} and value[TYPE_KEY] == CIRCUIT_TYPE:
            yield path, value[VALUE_KEY]
            return
        for key, item in value.items():
            yield from encoded_circuits(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from encoded_circuits(item, f"{path}[{index}]")


def _qpy(text: Any) -> bytes:
    """The bytes of a base64 value; empty when it is not one."""
    try:
        return base64.b64decode(text, validate=True) if isinstance(text, str) else b""
    except binascii.Error:
        return b""


PRIMITIVE_PATH = "primitive_input"
Check = tuple[str, devices_service_pb2.CheckCircuitsRequest]  # (what the user calls it, the check sans backend)


def circuit_checks(inputs: dict[str, Any], primitive: primitives_pb2.PrimitiveInput | None) -> list[Check]:
    """The checks of a job's circuits, backend left empty: one per circuit in JSON inputs (up to 32 MiB
    of base64 to walk: call it off the event loop), or one for a primitive job's PUBs."""
    if primitive is not None:
        return [(PRIMITIVE_PATH, devices_service_pb2.CheckCircuitsRequest(primitive=primitive))]
    checks = []
    for path, text in encoded_circuits(inputs, "inputs"):
        qpy = _qpy(text)
        if not qpy:
            raise InvalidArgument(f"{path} is not a circuit: its value is not base64 QPY", reason="INVALID_QPY",
                                  field_violations=[(path, "must be a circuit serialized with qiskit.qpy, in base64")])
        if len(qpy) > MAX_CIRCUIT_BYTES:
            raise InvalidArgument(
                f"{path} is a circuit of {len(qpy)} bytes of QPY; a backend takes circuits of at most "
                f"{MAX_CIRCUIT_BYTES}", reason="CIRCUIT_TOO_LARGE",
                metadata={"input": path, "bytes": len(qpy), "max_bytes": MAX_CIRCUIT_BYTES},
                field_violations=[(path, f"a circuit of at most {MAX_CIRCUIT_BYTES} bytes of QPY")])
        checks.append((path, devices_service_pb2.CheckCircuitsRequest(circuits_qpy=qpy, as_program_input=True)))
    return checks


async def check_circuits(devices: devices_service_pb2_grpc.DevicesServiceStub, metadata, backend: str,
                         checks: list[Check]) -> None:
    """Raise InvalidArgument unless every check passes on backend (the devices service's reason kept, the
    input named); its other errors (NOT_FOUND, UNAVAILABLE, ...) pass through."""
    slots = asyncio.Semaphore(_CONCURRENT_CHECKS)

    async def check(path: str, given: devices_service_pb2.CheckCircuitsRequest) -> None:
        request = devices_service_pb2.CheckCircuitsRequest()
        request.CopyFrom(given)
        request.backend = backend
        async with slots:
            try:
                await call(devices.CheckCircuits, request, metadata=metadata)
            except ServiceError as err:
                if err.code != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                raise refused(path, backend, err) from None

    tasks = [asyncio.create_task(check(path, request)) for path, request in checks]
    try:
        for done in asyncio.as_completed(tasks):
            await done  # the first refusal ends the request; the others are cancelled below
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def refused(path: str, backend: str, err: ServiceError) -> InvalidArgument:
    """The devices service's refusal of the input at path, as the user's error: a primitive's names the
    PUB and its field; a JSON input's names the input."""
    if path == PRIMITIVE_PATH:
        return InvalidArgument(
            f"{err.message} (on {backend})", reason=err.reason, metadata={**err.metadata, "backend": backend},
            field_violations=[(f"{PRIMITIVE_PATH}.{field}", why) for field, why in err.field_violations],
        )
    return InvalidArgument(
        f"{path} cannot run on {backend}: {err.message}", reason=err.reason,
        metadata={**err.metadata, "input": path, "backend": backend}, field_violations=[(path, err.message)],
    )


def refused_everywhere(checks: list[Check], err: ServiceError) -> InvalidArgument:
    """SelectBackend's NO_BACKEND_RUNS_CIRCUITS, naming the input the least busy backend refused."""
    index = int(err.metadata.get("check", "0"))
    path = checks[index][0] if 0 <= index < len(checks) else "inputs"
    return InvalidArgument(err.message, reason=err.reason, metadata={**err.metadata, "input": path},
                           field_violations=[(path, why) for _, why in err.field_violations])
