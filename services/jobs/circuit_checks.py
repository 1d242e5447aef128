"""Every circuit among a job's inputs, checked by the devices service before the job is accepted.

The jobs service never decodes a circuit: it finds the encoded ones in the inputs' JSON and sends
each QPY file to DevicesService.CheckCircuits, which decodes and checks it in a limited worker. So a
circuit that could never run (QPY that does not decode, a header claiming ten million qubits, more
memory than the deployment allows simulations, wider than the backend) is refused by CreateJob with
INVALID_ARGUMENT naming the input, and never stored, queued or retried.

The circuits are checked as a program's inputs (`as_program_input`): programs bind parameters and add
measurements before they run them, so only what that cannot change is checked.
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
from qruntime_kit.outbound import call

CIRCUIT_TYPE = "QuantumCircuit"
# Checks of one job's circuits in flight at once: the devices service runs at most a few itself.
_CONCURRENT_CHECKS = 4


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


async def check_input_circuits(
    devices: devices_service_pb2_grpc.DevicesServiceStub, metadata, backend: str, inputs: dict[str, Any]
) -> None:
    """Raise InvalidArgument unless every circuit in inputs can run on backend (the devices service's
    reason kept, the input named); its other errors (NOT_FOUND, UNAVAILABLE, ...) pass through."""
    # Up to 32 MiB of base64 to walk and decode: off the event loop.
    found = await asyncio.to_thread(lambda: [(path, _qpy(text)) for path, text in encoded_circuits(inputs, "inputs")])
    if not found:
        return
    slots = asyncio.Semaphore(_CONCURRENT_CHECKS)

    async def check(path: str, qpy: bytes) -> None:
        if not qpy:
            raise InvalidArgument(f"{path} is not a circuit: its value is not base64 QPY", reason="INVALID_QPY",
                                  field_violations=[(path, "must be a circuit serialized with qiskit.qpy, in base64")])
        request = devices_service_pb2.CheckCircuitsRequest(backend=backend, circuits_qpy=qpy, as_program_input=True)
        async with slots:
            try:
                await call(devices.CheckCircuits, request, metadata=metadata)
            except ServiceError as err:
                if err.code != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                raise InvalidArgument(
                    f"{path} cannot run on {backend}: {err.message}", reason=err.reason,
                    metadata={**err.metadata, "input": path, "backend": backend},
                    field_violations=[(path, err.message)],
                ) from None

    checks = [asyncio.create_task(check(path, qpy)) for path, qpy in found]
    try:
        for done in asyncio.as_completed(checks):
            await done  # the first refusal ends the request; the others are cancelled below
    finally:
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)


async def check_primitive(devices: devices_service_pb2_grpc.DevicesServiceStub, metadata, backend: str,
                          primitive: primitives_pb2.PrimitiveInput) -> None:
    """Raise InvalidArgument unless every PUB can run on backend: the devices service decodes and checks
    them in a worker, and its refusal (naming the PUB and the field) is passed on with the backend added."""
    request = devices_service_pb2.CheckCircuitsRequest(backend=backend, primitive=primitive)
    try:
        await call(devices.CheckCircuits, request, metadata=metadata)
    except ServiceError as err:
        if err.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        raise InvalidArgument(
            f"{err.message} (on {backend})", reason=err.reason, metadata={**err.metadata, "backend": backend},
            field_violations=[(f"primitive_input.{field}", why) for field, why in err.field_violations],
        ) from None
