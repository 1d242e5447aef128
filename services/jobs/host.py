"""The program host: the worker process that runs one job's program (`python -m qruntime_jobs.host`).

The jobs service starts hosts ahead of demand (runner.py's pool). A host imports what programs need,
says HostReady on its channel (fd 3), runs the one ProgramTask it is given, reports how the program
ended and exits; the runner kills it when the job is cancelled or runs out of time. The protocol is
proto/qruntime/jobs/v1/program_host.proto.

For an uploaded program the host runs inside the sandbox (kit/sandbox.py): everything in this process
is then untrusted, this module included, and the runner believes nothing it says beyond its shape.

The program sees the shape of IBM's runtime: main(backend, user_messenger, **inputs) with a backend
whose run() executes circuits on the job's backend through the runner, a messenger whose publish()
sends interim results, and Python logging: what it logs at or above the job's level becomes the
job's logs. What it prints is read by the runner from the host's stdout and stderr.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from google.protobuf import timestamp_pb2
from qruntime.jobs.v1 import job_pb2, program_host_pb2

from qruntime_kit.workers import BlockingChannel

# Heavy imports come before HostReady, so a warm host runs its job at once.
from .builtin_programs import BUILTIN_PROGRAMS, InvalidInputError, import_qiskit

import_qiskit()  # what the programs import when they run: here, so a zygote importing this module has it

_LEVELS = {job_pb2.LOG_LEVEL_DEBUG: logging.DEBUG, job_pb2.LOG_LEVEL_INFO: logging.INFO,
           job_pb2.LOG_LEVEL_WARNING: logging.WARNING, job_pb2.LOG_LEVEL_ERROR: logging.ERROR,
           job_pb2.LOG_LEVEL_CRITICAL: logging.CRITICAL}
_LEVEL_ENUMS = {v: k for k, v in _LEVELS.items()}


class BackendError(Exception):
    """The backend refused or failed the circuits; reason is the devices service's (e.g. CIRCUIT_TOO_WIDE)."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


class _Link:
    """The host's end of the channel: sends are serialised, a device call waits for its reply."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._calls = 0

    def send(self, message: program_host_pb2.HostMessage) -> None:
        with self._lock:
            self._channel.send(message.SerializeToString())

    def recv(self) -> program_host_pb2.RunnerMessage:
        return program_host_pb2.RunnerMessage.FromString(self._channel.recv())

    def run_circuits(self, call: program_host_pb2.CircuitsCall) -> program_host_pb2.CircuitsReply:
        # One call at a time: the runner answers in order, and a program's threads share the host.
        with self._lock:
            self._calls += 1
            call.call_id = self._calls
            self._channel.send(program_host_pb2.HostMessage(circuits_call=call).SerializeToString())
            reply = program_host_pb2.RunnerMessage.FromString(self._channel.recv()).circuits_reply
        if reply.call_id != call.call_id:
            raise RuntimeError(f"the runner answered call {reply.call_id}, not {call.call_id}")
        return reply


class HostBackend:
    """The backend a job runs on, as its program sees it: name, num_qubits, max_shots and run()."""

    def __init__(self, link: _Link, description: program_host_pb2.HostBackend) -> None:
        self._link = link
        self._description = description

    @property
    def name(self) -> str:
        """The backend's name, e.g. "ibmq_qasm_simulator"."""
        return self._description.name

    @property
    def num_qubits(self) -> int:
        """How many qubits the backend has."""
        return self._description.num_qubits

    @property
    def max_shots(self) -> int:
        """The most shots per circuit the backend takes."""
        return self._description.max_shots

    @property
    def requires_isa(self) -> bool:
        """Whether it runs only circuits written in basis_gates on coupling_map (physical systems)."""
        return self._description.requires_isa

    @property
    def basis_gates(self) -> list[str]:
        """The gates the backend runs natively."""
        return list(self._description.basis_gates)

    @property
    def coupling_map(self) -> list[tuple[int, int]]:
        """Its two-qubit couplings (control, target); empty means all-to-all."""
        return [(edge.control, edge.target) for edge in self._description.coupling_map]

    def run(
        self, circuits: Any, shots: int = 1024, seed: int | None = None, memory: bool = False
    ) -> list[dict[str, Any]]:
        """Run the circuits in one device call; one {"counts", "memory", "register_names"} per circuit.
        Raises BackendError when the backend refuses or fails them."""
        from qruntime.encoding import dump_circuits_qpy

        for name, value, bits in (("shots", shots, 32), ("seed", seed, 64)):
            if value is not None and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                raise BackendError("INVALID_ARGUMENT", f"INVALID_{name.upper()}",
                                   f"{name} {value} is out of the range of a {bits}-bit integer")
        call = program_host_pb2.CircuitsCall(circuits_qpy=dump_circuits_qpy(circuits), shots=shots, memory=memory)
        if seed is not None:
            call.seed = seed
        reply = self._link.run_circuits(call)
        if reply.HasField("error"):
            raise BackendError(reply.error.code, reply.error.reason, reply.error.message)
        return [
            {"counts": dict(r.counts), "memory": list(r.memory), "register_names": list(r.register_names)}
            for r in reply.response.results
        ]

    def run_primitive(self, primitive: Any) -> Any:
        """Run a V2 primitive's PUBs (a qruntime.primitives.v1.PrimitiveInput) in one device call; its
        PrimitiveResult. The devices worker decodes, binds and measures them (the built-in estimator's
        way). Raises BackendError when the backend refuses or fails them."""
        call = program_host_pb2.CircuitsCall()
        call.primitive.CopyFrom(primitive)
        reply = self._link.run_circuits(call)
        if reply.HasField("error"):
            raise BackendError(reply.error.code, reply.error.reason, reply.error.message)
        return reply.response.primitive_result

    def __repr__(self) -> str:
        return f"<HostBackend {self.name!r}>"


class UserMessenger:
    """What a program publishes interim results with, as in IBM's runtime."""

    def __init__(self, link: _Link) -> None:
        self._link = link

    def publish(self, message: Any, final: bool = False) -> None:
        """Send message (anything qruntime.encoding encodes) as the job's next interim result.
        final is accepted for programs written for IBM's runtime and ignored: a program's result is
        what its main() returns."""
        from qruntime.encoding import dumps

        self._link.send(program_host_pb2.HostMessage(interim_result=program_host_pb2.HostInterimResult(
            data=dumps(message))))


class _JobLogHandler(logging.Handler):
    """Sends log records at or above the job's level to the runner as the job's log lines."""

    def __init__(self, link: _Link, level: int) -> None:
        super().__init__(level)
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        try:
            time = timestamp_pb2.Timestamp()
            time.FromDatetime(dt.datetime.fromtimestamp(record.created, dt.UTC))
            level = _LEVEL_ENUMS.get(record.levelno) or _LEVEL_ENUMS[_nearest(record.levelno)]
            self._link.send(program_host_pb2.HostMessage(log=program_host_pb2.HostLog(
                time=time, level=level, message=self.format(record))))
        except Exception:  # noqa: BLE001 - a log line must never break the program
            self.handleError(record)


def _nearest(levelno: int) -> int:
    return max((v for v in _LEVELS.values() if v <= levelno), default=logging.DEBUG)


def _failure(reason: int, message: str) -> program_host_pb2.ProgramEnd:
    return program_host_pb2.ProgramEnd(failure=program_host_pb2.ProgramFailure(reason=reason, message=message))


def run_task(link: _Link, task: program_host_pb2.ProgramTask, inputs_text: str) -> program_host_pb2.ProgramEnd:
    """Run the task's program on its inputs (their JSON text) and say how it ended."""
    from qruntime.encoding import dumps, loads

    log = logging.getLogger("qruntime.program")
    root = logging.getLogger()
    root.handlers[:] = [_JobLogHandler(link, _LEVELS.get(task.log_level, logging.INFO))]
    root.setLevel(_LEVELS.get(task.log_level, logging.INFO))
    try:
        main = _program_main(task)
    except Exception as err:  # noqa: BLE001 - an uploaded program that does not load is its own fault
        log.error("".join(traceback.format_exception(err)).rstrip())
        message = f"the program could not be loaded: {type(err).__name__}: {err}"
        return _failure(job_pb2.JOB_REASON_PROGRAM_ERROR, message)
    try:
        inputs = loads(inputs_text or "{}")
    except (ValueError, TypeError) as err:
        return _logged(log, job_pb2.JOB_REASON_INVALID_INPUT, f"the inputs could not be decoded: {err}")
    if not isinstance(inputs, dict):
        return _logged(log, job_pb2.JOB_REASON_INVALID_INPUT, "the inputs must be a JSON object")
    backend, messenger = HostBackend(link, task.backend), UserMessenger(link)
    try:
        inspect.signature(main).bind(backend, messenger, **inputs)
    except TypeError as err:
        message = f"the inputs do not fit program {task.program_id!r}: {err}"
        return _logged(log, job_pb2.JOB_REASON_INVALID_INPUT, message)
    try:
        value = main(backend, messenger, **inputs)
    except SystemExit as err:  # exit() is a program's way to fail, not its host's death
        return _logged(log, job_pb2.JOB_REASON_PROGRAM_ERROR, f"the program exited (status {err.code!r})")
    except Exception as err:  # noqa: BLE001 - whatever the program raised ends its job
        return _classify(err, log)
    try:
        return program_host_pb2.ProgramEnd(result=dumps(value))
    except (TypeError, ValueError) as err:
        message = f"the program returned a value that cannot be encoded: {err}"
        return _logged(log, job_pb2.JOB_REASON_PROGRAM_ERROR, message)


def _program_main(task: program_host_pb2.ProgramTask) -> Any:
    if not task.source:
        main = BUILTIN_PROGRAMS.get(task.program_id)
        if main is None:
            raise LookupError(f"this release has no built-in program {task.program_id!r}")
        return main
    namespace: dict[str, Any] = {"__name__": "__qruntime_program__"}
    exec(compile(task.source, f"<program {task.program_id}>", "exec"), namespace)  # noqa: S102 - sandboxed
    main = namespace.get("main")
    if not callable(main):
        raise LookupError("the program defines no function main(backend, user_messenger, **inputs)")
    return main


def _logged(log: logging.Logger, reason: int, message: str) -> program_host_pb2.ProgramEnd:
    log.error(message)
    return _failure(reason, message)


def _classify(err: Exception, log: logging.Logger) -> program_host_pb2.ProgramEnd:
    """The end of a program that raised err: the first telling exception in its chain decides."""
    for cause in _chain(err):
        if isinstance(cause, BackendError):
            return _logged(log, job_pb2.JOB_REASON_BACKEND_ERROR,
                           f"the backend refused or failed the circuits ({cause.reason}): {cause.message}")
        if isinstance(cause, InvalidInputError):
            return _logged(log, job_pb2.JOB_REASON_INVALID_INPUT, str(cause))
    log.error("".join(traceback.format_exception(err)).rstrip())
    return _failure(job_pb2.JOB_REASON_PROGRAM_ERROR, f"{type(err).__name__}: {err}")


def _chain(err: BaseException | None):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _warm_up() -> None:
    """Do once, before the job comes, what every job does first (build, encode and decode a circuit):
    a host forked from the zygote then copies the memory that touches while it waits, not while its
    job runs."""
    from qruntime import ReferenceCircuits
    from qruntime.encoding import dumps, loads

    loads(dumps({"circuits": [ReferenceCircuits.bell()]}))


def _inputs_in_parts(link: _Link, parts: int) -> str:
    """The task's inputs that follow it in parts (ProgramTask.inputs_parts), joined."""
    data = bytearray()
    for _ in range(parts):
        message = link.recv()
        if not message.HasField("inputs_part"):
            raise ValueError(f"the runner sent {message.WhichOneof('kind')} where a part of the inputs belongs")
        data += message.inputs_part.data
    return data.decode()


def main(argv: Sequence[str] | None = None) -> int:
    link = _Link(BlockingChannel())
    _warm_up()
    link.send(program_host_pb2.HostMessage(ready=program_host_pb2.HostReady()))
    message = link.recv()
    if not message.HasField("task"):
        return 2
    task = message.task
    end = run_task(link, task, _inputs_in_parts(link, task.inputs_parts) if task.inputs_parts else task.inputs)
    sys.stdout.flush()  # before the end: the runner kills the host once it has it
    sys.stderr.flush()
    link.send(program_host_pb2.HostMessage(end=end))
    return 0


if __name__ == "__main__":
    sys.exit(main())
