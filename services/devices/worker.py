"""A simulation worker: `python -m qruntime_devices.worker`, started by the pool (pool.py) under limits.

It decodes a request's circuits, checks them as the backend's adapter says (the memory guard too),
and simulates them, one request at a time, answering over its channel (fd 3) as protocol.py says. It
keeps the adapters the service sent it, with what they build (noise models, transpilers), for the
next request. Whatever the input does to it (run it out of memory, crash it, hang it), the service
sees only that this process ended, and answers that one call with an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pickle
import signal
import sys
import time

import structlog
from qiskit import ClassicalRegister, QuantumCircuit
from qruntime.devices.v1 import backend_pb2, devices_service_pb2
from qruntime.primitives.v1 import primitives_pb2

from qruntime_kit.errors import Internal, ResourceExhausted, ServiceError
from qruntime_kit.heap import freeze_startup_heap
from qruntime_kit.logging import configure_logging, get_logger
from qruntime_kit.workers import BlockingChannel, ChannelClosed

from . import primitives, protocol
from .adapters import PHYSICAL, BackendAdapter, not_quick  # qiskit and Aer: the seconds a worker takes to start
from .circuits import decode_circuits
from .decoded import DecodedCircuits
from .memory import check_fits
from .reduction import active_qubits

log = get_logger("devices.worker")
_INT64_MAX = (1 << 63) - 1
_NICENESS = 10  # below the service: it must keep answering health checks while its workers compute
_PR_SET_PDEATHSIG = 1


class Worker:
    def __init__(self, channel: BlockingChannel, max_reply: int) -> None:
        self._channel = channel
        self._max_reply = max_reply
        self._adapters: dict[str, BackendAdapter] = {}
        self._decoded = DecodedCircuits()  # a job's PUB circuits, decoded once (an iterative program's)

    def serve(self) -> None:
        """Answer frames until the service closes the channel."""
        while True:
            try:
                tag, body = protocol.split(self._channel.recv())
            except ChannelClosed:
                return
            try:
                reply = self._answer(tag, body)
            except ServiceError as err:
                reply = protocol.error_frame(err)
            except MemoryError:  # where no memory cgroup caps us, the address-space limit lands here
                # What is left of this process is not worth trusting: end, saying why by the exit status.
                raise SystemExit(protocol.EXIT_OUT_OF_MEMORY) from None
            except Exception as err:
                log.exception("the simulation worker failed")
                reply = protocol.error_frame(Internal(
                    f"the simulator failed: {type(err).__name__}: {err}", reason="SIMULATOR_FAILED"
                ))
            self._channel.send(reply)

    def _load(self, body: bytes) -> bytes:
        name = body.partition(b"\0")[0].decode()
        try:
            self._adapters[name] = pickle.loads(body.partition(b"\0")[2])  # the service trusts its own adapters
        except Exception as err:  # e.g. its class cannot be imported here
            log.exception("a backend could not be loaded into the worker", backend=name)
            raise Internal(f"backend {name} could not be loaded into a simulation worker: {type(err).__name__}: "
                           f"{err}", reason="BACKEND_NOT_LOADABLE", metadata={"backend": name}) from None
        return protocol.READY

    def _answer(self, tag: bytes, body: bytes) -> bytes:
        pb = devices_service_pb2
        if tag == protocol.ADAPTER:
            return self._load(body)
        if tag == protocol.WARM:
            self._adapter(body.decode()).warm_up()
            return protocol.READY
        if tag == protocol.CHECK:
            request = pb.CheckCircuitsRequest.FromString(body)
            _, checked = self._check(request.backend, request.circuits_qpy, request.shots,
                                     as_program_input=request.as_program_input,
                                     primitive=request.primitive if request.HasField("primitive") else None)
            return protocol.CHECKED + checked.SerializeToString()
        if tag == protocol.RUN:
            budget, serialized = protocol.run_body(body)
            request = pb.RunCircuitsRequest.FromString(serialized)
            job = {"job_id": request.job_id} if request.job_id else {}
            with structlog.contextvars.bound_contextvars(**job, backend=request.backend):
                return protocol.RAN + self._run(request, budget)
        raise Internal(f"the worker got a frame it does not know ({tag!r})", reason="WORKER_PROTOCOL_ERROR")

    def _check(self, backend: str, circuits_qpy: bytes, shots: int, *, as_program_input: bool = False,
               primitive: primitives_pb2.PrimitiveInput | None = None, job_id: str = ""):
        """The decoded circuits (a Prepared primitive when primitive is given) and their summaries, once
        every check passed."""
        adapter = self._adapter(backend)
        if primitive is not None:
            return self._check_primitive(adapter, primitive, job_id)
        circuits = decode_circuits(circuits_qpy)
        # On a physical system a circuit names every qubit of the system; those it leaves idle stay |0⟩,
        # and its program measures what its gates touch.
        touched_only = adapter.kind == PHYSICAL
        checked = [completed(c, touched_only=touched_only) for c in circuits] if as_program_input else circuits
        estimates = adapter.check(checked, shots)
        return circuits, devices_service_pb2.CheckCircuitsResponse(
            circuits=[_summary(circuit, found) for circuit, found in zip(circuits, estimates, strict=True)])

    def _check_primitive(self, adapter: BackendAdapter, primitive: primitives_pb2.PrimitiveInput, job_id: str):
        prepared = primitives.prepare(primitive, adapter, self._decoded.decoder(job_id))
        summaries = []
        for shots, circuits in prepared.batches:
            estimates = adapter.memory_estimates(circuits, shots)
            if adapter.memory_limit:
                check_fits(circuits, estimates, limit=adapter.memory_limit, backend=adapter.name)
            summaries += [_summary(c, found) for c, found in zip(circuits, estimates, strict=True)]
        return prepared, devices_service_pb2.CheckCircuitsResponse(circuits=summaries)

    def _run(self, request: devices_service_pb2.RunCircuitsRequest, budget: int) -> bytes:
        primitive = request.primitive if request.HasField("primitive") else None
        circuits, checked = self._check(request.backend, request.circuits_qpy, request.shots, primitive=primitive,
                                        job_id=request.job_id)
        if request.only_if_quick:  # before CHECKED: refused so, the worker stays
            batches = circuits.batches if primitive is not None else [(request.shots, circuits)]
            if not self._adapter(request.backend).quick(batches):
                raise not_quick("its circuits are too large to run at once")
        # From CHECKED on, a death is the simulation's, not the input's. Past the memory the service
        # holds for the run already, it says GO once the simulation may have what it needs.
        self._channel.send(protocol.CHECKED + checked.SerializeToString())
        if protocol.needs(checked) > budget:
            go = self._channel.recv()
            if go != protocol.GO:
                raise SystemExit(f"expected GO, got {go[:1]!r}")
        seed = request.seed if request.HasField("seed") else None
        adapter = self._adapter(request.backend)
        if primitive is not None:
            reply = self._run_primitive(adapter, circuits, primitive).SerializeToString()
        else:
            results = adapter.execute(circuits, request.shots, seed, request.memory)
            reply = devices_service_pb2.RunCircuitsResponse(results=results).SerializeToString()
        if len(reply) > self._max_reply:
            raise ResourceExhausted(
                f"the results take {len(reply)} bytes, more than the {self._max_reply} one answer may; "
                "run fewer circuits or shots at once, or without per-shot memory",
                reason="RESULTS_TOO_LARGE",
                metadata={"result_bytes": len(reply), "max_bytes": self._max_reply},
            )
        return reply

    @staticmethod
    def _run_primitive(adapter: BackendAdapter, prepared: primitives.Prepared,
                       primitive: primitives_pb2.PrimitiveInput) -> devices_service_pb2.RunCircuitsResponse:
        options = getattr(primitive, primitive.WhichOneof("primitive")).options
        seed = options.seed if options.HasField("seed") else None
        started = time.perf_counter()
        results = [adapter.execute(circuits, shots, seed, prepared.memory) for shots, circuits in prepared.batches]
        seconds = time.perf_counter() - started
        return devices_service_pb2.RunCircuitsResponse(
            primitive_result=prepared.assemble(results, adapter.name, seconds))

    def _adapter(self, name: str) -> BackendAdapter:
        try:
            return self._adapters[name]
        except KeyError:
            raise Internal(f"the worker has no backend {name!r}", reason="WORKER_PROTOCOL_ERROR") from None


def _summary(circuit: QuantumCircuit, found) -> backend_pb2.CircuitSummary:
    return backend_pb2.CircuitSummary(
        name=circuit.name, num_qubits=circuit.num_qubits, num_clbits=circuit.num_clbits,
        simulated_qubits=found.qubits, simulation_method=found.method,
        estimated_memory_bytes=min(found.bytes, _INT64_MAX),
    )


def completed(circuit: QuantumCircuit, *, touched_only: bool = False) -> QuantumCircuit:
    """A program input as its program may run it at worst: every qubit measured (so every qubit is
    simulated; with touched_only, every qubit an instruction touches) and its parameters bound to a
    value that keeps it out of the cheap Clifford methods."""
    if circuit.num_parameters:
        circuit = circuit.assign_parameters([0.1234] * circuit.num_parameters)
    if not touched_only:
        return circuit.measure_all(inplace=False)
    touched = active_qubits(circuit)
    circuit = circuit.copy()
    measured = ClassicalRegister(len(touched), "completed")
    circuit.add_register(measured)
    circuit.measure(list(touched), measured)
    return circuit


def _die_with(service_pid: int) -> None:
    """Be killed when the service dies (say, kill -9), rather than simulate on for nobody."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != service_pid:  # it died before we asked
        raise SystemExit("the service is gone")


def main() -> None:
    channel = BlockingChannel(max_frame=1 << 31)  # what the service sends is bounded by its own limits
    tag, body = protocol.split(channel.recv())
    if tag != protocol.HELLO:
        raise SystemExit(f"expected HELLO first, got {tag!r}")
    hello = json.loads(body)
    _die_with(hello["service_pid"])
    # The service's import path, so that adapters it imported from anywhere unpickle here too.
    sys.path[:] = hello["sys_path"]
    configure_logging(hello["log_format"], hello["log_level"])
    os.nice(_NICENESS)
    worker = Worker(channel, max_reply=hello["max_reply_bytes"])
    freeze_startup_heap()  # qiskit and Aer, imported
    channel.send(protocol.READY)
    worker.serve()


if __name__ == "__main__":
    main()
