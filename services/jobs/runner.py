"""The program runner: runs one job's program in a program host (a worker process) and says how it ended.

The jobs service never runs a program itself. The runner takes a host from a warm pool (hosts.py),
sends it the job, and serves it until it ends: stores its log lines and interim results (within
the per-job caps), makes its device calls (on the job's backend, under the job's id: the host's
channel is scoped to its one job), and reads what it prints. When the job is cancelled, passes its
time limit or breaks a cap, the runner kills the host's whole process group at once; a host is
killed after its job in any case.

A host that dies on its own (the kernel's memory cap, a crash) ends the run with `retry=True`: the
executor puts the job back in the queue until its attempts are used up. A service the job needs
that is down or unreachable (devices, programs, or auth for the service's token) is never the job's
fault: the run ends with `dependency_down=True`, and the executor puts the job back in the queue to
wait, without counting the attempt against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import signal
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError
from qruntime.devices.v1 import backend_pb2, devices_service_pb2
from qruntime.jobs.v1 import job_pb2, program_host_pb2

from qruntime_kit.errors import ServiceError
from qruntime_kit.logging import get_logger
from qruntime_kit.outbound import MAX_MESSAGE_BYTES
from qruntime_kit.workers import ChannelClosed, FrameTooLarge

from . import typed
from .backend import BackendError, DevicesClient, SuiteError
from .builtin_programs import BUILTIN_PROGRAMS
from .control import JobControl
from .direct import direct_sample, refused_outcome, sampler_outcome, sampling_request
from .hosts import Host, HostPool, HostStartError
from .outcome import Outcome
from .store import CANCELLED, DONE, ERROR, JobRecord, JobStore

log = get_logger("jobs.runner")
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}
MAX_RESULT_BYTES = MAX_MESSAGE_BYTES - 1024 * 1024  # GetJobResult's response holds it with room to spare
# The reasons a host may give for a failed program; anything else it says is a program error.
_PROGRAM_REASONS = {job_pb2.JOB_REASON_PROGRAM_ERROR, job_pb2.JOB_REASON_INVALID_INPUT,
                    job_pb2.JOB_REASON_BACKEND_ERROR}
_OUTPUT_CHUNK = 64 * 1024
_MAX_LINE = 16 * 1024  # a longer printed line is stored in pieces
# What each TimeLimitSource is, in the words of a job's TIME_LIMIT_EXCEEDED message.
LIMIT_SOURCES = {"SYSTEM": "the system limit of its backend's kind", "PROGRAM": "its program's max_execution_time",
                 "USER": "the limit the job asked for"}
INPUTS_PART_BYTES = 16 * 1024 * 1024  # a host's inputs past this come after its task, in parts of this size
BACKEND_CACHE_SECONDS = 60.0  # a backend's size and shot limit change with a new release, not by the minute


def task_frames(task: program_host_pb2.ProgramTask, inputs: str) -> list[bytes]:
    """The frames that give a host its task: the task holding its inputs, or, when they are larger
    than INPUTS_PART_BYTES (uploaded in chunks: far larger than a frame may be), the task followed by
    its inputs in parts (ProgramTask.inputs_parts)."""
    data = inputs.encode()
    if len(data) <= INPUTS_PART_BYTES:
        task.inputs = inputs
        return [program_host_pb2.RunnerMessage(task=task).SerializeToString()]
    starts = range(0, len(data), INPUTS_PART_BYTES)
    task.inputs_parts = len(starts)
    view = memoryview(data)
    return [program_host_pb2.RunnerMessage(task=task).SerializeToString()] + [
        program_host_pb2.RunnerMessage(inputs_part=program_host_pb2.InputsPart(
            data=bytes(view[start:start + INPUTS_PART_BYTES]))).SerializeToString() for start in starts]


def dependency_down(message: str) -> Outcome:
    """The outcome of a run that a down or unreachable service ended, through no fault of the job."""
    return Outcome(ERROR, "INTERNAL_ERROR", message, dependency_down=True)


def _is_down(error: ServiceError) -> bool:
    """Whether a peer's error means it (or one it needs) is down or unreachable, not that it refused."""
    return error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclasses.dataclass(frozen=True)
class OutputLimits:
    """What one job may produce besides its result; past any of them it ends OUTPUT_LIMIT_EXCEEDED."""

    log_bytes: int = 8 * 1024 * 1024  # logged and printed text together
    interim_results: int = 1_000
    interim_bytes: int = 32 * 1024 * 1024


SourceFetcher = Callable[[JobRecord], Awaitable[str]]


class ProgramRunner:
    """Runs jobs' programs in hosts: built-in ones in the trusted pool, uploaded ones in the sandboxed pool."""

    def __init__(
        self, store: JobStore, devices: DevicesClient, *, trusted: HostPool, sandboxed: HostPool | None,
        sandbox_problem: str = "", fetch_source: SourceFetcher | None = None, limits: OutputLimits | None = None,
    ) -> None:
        self._store = store
        self._devices = devices
        self._pools = {"BUILTIN": trusted, "PYTHON": sandboxed}
        self._sandbox_problem = sandbox_problem
        self._fetch_source = fetch_source
        self._limits = limits or OutputLimits()
        self._backends: dict[str, tuple[float, backend_pb2.Backend]] = {}

    async def run(self, job: JobRecord, control: JobControl) -> Outcome:
        """Run the job's program under its time limit; returns when it ends, when the limit passes
        or once control is cancelled. If this coroutine is cancelled (shutdown), the host is killed
        as it goes."""
        if job.runtime not in self._pools:
            return Outcome(ERROR, "RUNTIME_UNAVAILABLE", f"this release cannot run {job.runtime} programs")
        if job.runtime == "BUILTIN" and job.program_id not in BUILTIN_PROGRAMS:
            return Outcome(ERROR, "RUNTIME_UNAVAILABLE",
                           f"this release of the jobs service has no built-in program {job.program_id!r}")
        pool = self._pools[job.runtime]
        if pool is None:
            return Outcome(ERROR, "RUNTIME_UNAVAILABLE",
                           f"program {job.program_id!r} is an uploaded Python program, and this deployment "
                           f"cannot sandbox uploaded programs: {self._sandbox_problem}")
        primitive = await asyncio.to_thread(typed.primitive_input, job)
        if primitive is not None:
            return await self._without_host(
                job, typed.run_request(job.id, job.backend, primitive, job.attempts), control, typed.refused_outcome,
                lambda response, started: typed.done_outcome(job.backend, primitive, response, started))
        sample = await asyncio.to_thread(direct_sample, job)
        if sample is not None:
            return await self._without_host(
                job, sampling_request(job.id, job.backend, sample), control, refused_outcome,
                lambda response, started: sampler_outcome(job.backend, sample, response, started))
        try:
            backend = await self._backend(job.backend)
            source = await self._fetch_source(job) if job.runtime == "PYTHON" and self._fetch_source else ""
        except BackendError as err:
            if _is_down(err.error):
                return dependency_down(f"the devices service is unavailable: {err.error.message}")
            return Outcome(ERROR, "BACKEND_ERROR", f"the job's backend cannot be used: {err.error.message}")
        except SuiteError as err:
            return dependency_down(str(err))
        except ServiceError as err:  # from the programs service, or auth for the service's token
            if err.code == grpc.StatusCode.NOT_FOUND:
                return Outcome(ERROR, "PROGRAM_DELETED", f"program {job.program_id!r} version "
                               f"{job.program_version} was deleted before the job ran")
            if _is_down(err):
                return dependency_down(f"the program's source could not be fetched: {err.message}")
            return Outcome(ERROR, "INTERNAL_ERROR", f"the program's source could not be fetched: {err}")
        task = program_host_pb2.ProgramTask(
            job_id=job.id, program_id=job.program_id, source=source,
            log_level=job_pb2.LogLevel.Value(f"LOG_LEVEL_{job.log_level}"),
            backend=program_host_pb2.HostBackend(
                name=backend.name, num_qubits=backend.configuration.num_qubits,
                max_shots=backend.configuration.max_shots,
                requires_isa=backend.kind == backend_pb2.BACKEND_KIND_PHYSICAL,
                basis_gates=backend.configuration.basis_gates, coupling_map=backend.configuration.coupling_map,
            ),
        )
        frames = await asyncio.to_thread(task_frames, task, job.inputs or "{}")  # up to hundreds of MiB to encode
        try:
            host = await pool.acquire()
        except HostStartError as err:
            log.error("no program host", error=str(err))
            return Outcome(ERROR, "INTERNAL_ERROR", "the jobs service could not start a worker for the program",
                           retry=True)
        limit = job.max_execution_seconds if job.max_execution_seconds > 0 else None
        timer = asyncio.timeout(limit)  # from the moment the program has its host, not while it waits for one
        try:
            async with timer:
                return await _Run(self, job, host, control).serve(frames)
        except TimeoutError:
            if not timer.expired():
                raise
            which = LIMIT_SOURCES.get(job.time_limit_source, "its time limit")
            return Outcome(ERROR, "TIME_LIMIT_EXCEEDED",
                           f"the job ran longer than its time limit of {limit:g} seconds ({which}) and was ended")
        finally:
            pool.release(host)

    async def _without_host(self, job: JobRecord, request, control: JobControl, refused, finish) -> Outcome:
        """A job that needs no host: the sampler's common case (direct.py) and primitive jobs (typed.py),
        its circuits straight to the devices service; finish(response, started) shapes the result."""
        limit = job.max_execution_seconds if job.max_execution_seconds > 0 else None
        started = dt.datetime.now(dt.UTC)
        run = asyncio.create_task(self._devices.run_circuits(request, timeout=limit or 3 * 3600))
        stopped = asyncio.create_task(control.wait())
        try:
            done, _ = await asyncio.wait({run, stopped}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            run.cancel()
            stopped.cancel()
        if run not in done:
            if stopped in done:
                return Outcome(CANCELLED, "CANCELLED_BY_USER", "cancelled by a user")
            return Outcome(ERROR, "TIME_LIMIT_EXCEEDED",
                           f"the job ran longer than its time limit of {limit:g} seconds and was ended")
        try:
            response = run.result()
        except BackendError as err:
            if _is_down(err.error):
                return dependency_down(f"the devices service is unavailable: {err.error.message}")
            return refused(err)
        except SuiteError as err:
            return dependency_down(str(err))
        return await asyncio.to_thread(finish, response, started)

    async def _backend(self, name: str) -> backend_pb2.Backend:
        """The backend's description, asked of the devices service at most once a minute."""
        cached = self._backends.get(name)
        if cached is not None and time.monotonic() - cached[0] < BACKEND_CACHE_SECONDS:
            return cached[1]
        backend = await self._devices.backend(name, timeout=60)
        self._backends[name] = (time.monotonic(), backend)
        return backend


class _Run:
    """One job's program in one host."""

    def __init__(self, runner: ProgramRunner, job: JobRecord, host: Host, control: JobControl) -> None:
        self._runner = runner
        self._store = runner._store
        self._limits = runner._limits
        self._job = job
        self._host = host
        self._control = control
        self._level = LEVELS.get(job.log_level, logging.INFO)
        self._log_bytes = 0
        self._interim_count = 0
        self._interim_bytes = 0
        self._stop: Outcome | None = None  # why the runner killed the host, when it did
        self._calls: set[asyncio.Task] = set()
        self._pending_logs: list[tuple[str, str, dt.datetime]] = []
        self._flusher: asyncio.Task | None = None
        self._ending = False  # the program has ended: lines still pending go with its outcome

    async def serve(self, task: list[bytes]) -> Outcome:
        """Give the host its task (the frames task_frames made) and serve the program until it ends."""
        worker = self._host.worker
        log.info("program started", program_id=self._job.program_id, backend=self._job.backend,
                 host=worker.pid, sandboxed=self._host.sandboxed)
        readers = [asyncio.create_task(self._read_output(stream, level))
                   for stream, level in ((worker.stdout, logging.INFO), (worker.stderr, logging.WARNING))
                   if stream is not None]
        frames = asyncio.create_task(self._frames(task))
        stopped = asyncio.create_task(self._control.wait())
        try:
            await asyncio.wait({frames, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (frames, stopped, *self._calls):
                pending.cancel()
            # Killed now, reaped later (the pool discards it): its pipes close, so the readers get what
            # it printed and end; a process it let escape its group keeps them open for a second at most.
            self._host.worker.kill_now()
            await asyncio.wait(readers, timeout=1)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, frames, stopped, *self._calls, return_exceptions=True)
            self._ending = True
            if self._flusher is not None:  # the lines being written are stored before the job's end is
                await asyncio.shield(self._flusher)
        if frames.done() and not frames.cancelled():
            outcome = frames.result()
        else:
            outcome = Outcome(CANCELLED, "CANCELLED_BY_USER", "cancelled by a user")
        return dataclasses.replace(outcome, logs=tuple(self._pending_logs))

    async def _frames(self, task: list[bytes]) -> Outcome:
        channel = self._host.worker.channel
        with contextlib.suppress(ChannelClosed):
            for frame in task:
                await channel.send(frame)
        while True:
            try:
                frame = await channel.recv()
            except ChannelClosed as err:
                return await self._ended_without_end(err)
            try:
                message = program_host_pb2.HostMessage.FromString(frame)
            except DecodeError:
                return Outcome(ERROR, "PROGRAM_ERROR", "the program's host sent a message that is not one")
            kind = message.WhichOneof("kind")
            if kind == "log":
                entry = message.log
                level = job_pb2.LogLevel.Name(entry.level).removeprefix("LOG_LEVEL_")
                time = entry.time.ToDatetime(dt.UTC) if entry.HasField("time") else None
                await self._write_log(LEVELS.get(level, logging.INFO), entry.message, time)
            elif kind == "interim_result":
                await self._publish(message.interim_result.data)
            elif kind == "circuits_call":
                call = asyncio.create_task(self._run_circuits(message.circuits_call))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)
            elif kind == "end":
                return self._end(message.end)
            else:
                message = f"the program's host sent an unexpected {kind or 'empty'} message"
                return Outcome(ERROR, "PROGRAM_ERROR", message)
            if self._stop is not None:
                return self._stop

    def _end(self, end: program_host_pb2.ProgramEnd) -> Outcome:
        if end.HasField("failure"):
            reason = end.failure.reason
            if reason not in _PROGRAM_REASONS:
                reason = job_pb2.JOB_REASON_PROGRAM_ERROR
            name = job_pb2.JobReason.Name(reason).removeprefix("JOB_REASON_")
            return Outcome(ERROR, name, end.failure.message[:4096])
        size = len(end.result.encode())
        if size > MAX_RESULT_BYTES:  # stored DONE, it could never be read back in one message
            message = f"the program returned a result of {size} bytes; at most {MAX_RESULT_BYTES} can be read back"
            return Outcome(ERROR, "PROGRAM_ERROR", message)
        log.info("program returned", program_id=self._job.program_id, result_bytes=size)
        return Outcome(DONE, result=end.result)

    async def _ended_without_end(self, why: ChannelClosed) -> Outcome:
        if self._stop is not None:  # killed by us: its output is no longer read, so its end is not awaited
            return self._stop
        ended = await self._host.worker.wait()
        if self._control.cancelled:
            return Outcome(CANCELLED, "CANCELLED_BY_USER", "cancelled by a user")
        if isinstance(why, FrameTooLarge):  # most likely its result
            return Outcome(ERROR, "PROGRAM_ERROR", f"the program sent too much at once: {why}")
        reason = "OUT_OF_MEMORY" if ended.out_of_memory else "WORKER_CRASHED"
        how = ended.describe()
        if self._host.sandboxed and 128 < ended.returncode < 128 + 65:  # how the sandbox's pid 1 reports a kill
            how = f"killed by signal {signal.Signals(ended.returncode - 128).name}"
        message = f"the program's worker process {how}"
        log.warning("program host died", ended=ended.describe())
        await self._write_log(logging.ERROR, message, force=True)
        return Outcome(ERROR, reason, message, retry=True)

    async def _run_circuits(self, call: program_host_pb2.CircuitsCall) -> None:
        # Scoped to the job: its backend and its id, whatever the host would like.
        request = devices_service_pb2.RunCircuitsRequest(
            backend=self._job.backend, circuits_qpy=call.circuits_qpy, shots=call.shots, memory=call.memory,
            job_id=self._job.id,
            # A retry of this call (DevicesClient retries UNAVAILABLE) gets the first run's result.
            idempotency_key=f"{self._job.id}/{self._job.attempts}/{call.call_id}",
        )
        if call.HasField("seed"):
            request.seed = call.seed
        if call.HasField("primitive"):  # checked by the devices worker as a primitive job's PUBs are
            request.primitive.CopyFrom(call.primitive)
        reply = program_host_pb2.CircuitsReply(call_id=call.call_id)
        try:
            reply.response.CopyFrom(await self._runner._devices.run_circuits(
                request, timeout=self._job.max_execution_seconds or 3 * 3600))
        except BackendError as err:
            if err.error.code == grpc.StatusCode.UNAVAILABLE:  # not the program's to handle: run it again later
                self._kill(dependency_down(f"the devices service is unavailable: {err.error.message}"))
                return
            reply.error.CopyFrom(program_host_pb2.DeviceError(
                code=err.error.code.name, reason=err.error.reason, message=err.error.message))
        except SuiteError as err:
            log.warning("device call failed", error=str(err))
            self._kill(dependency_down(str(err)))
            return
        except Exception:  # the program must not wait for an answer that never comes
            log.exception("device call failed")
            self._kill(Outcome(ERROR, "INTERNAL_ERROR", "the device call failed; the jobs service logged why"))
            return
        with contextlib.suppress(ChannelClosed):
            await self._host.worker.channel.send(
                program_host_pb2.RunnerMessage(circuits_reply=reply).SerializeToString())

    async def _publish(self, data: str) -> None:
        self._interim_count += 1
        self._interim_bytes += len(data)
        limits = self._limits
        if self._interim_count > limits.interim_results or self._interim_bytes > limits.interim_bytes:
            self._kill(Outcome(ERROR, "OUTPUT_LIMIT_EXCEEDED", (
                f"the program published more interim results than a job may ({limits.interim_results} results, "
                f"{limits.interim_bytes} bytes)")))
            return
        if not await asyncio.to_thread(self._store.add_attempt_interim_result, self._job.id, self._job.attempts, data):
            self._moved_on()

    async def _read_output(self, stream: asyncio.StreamReader, level: int) -> None:
        """Store what the program prints as log lines, within the job's log cap. Once the runner has
        killed the host, the rest is read and dropped: asyncio reports a process's end only once its
        pipes are read to their end."""
        pending = b""
        while chunk := await stream.read(_OUTPUT_CHUNK):
            if self._stop is not None:
                continue
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if len(pending) > _MAX_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                await self._write_log(level, line.decode(errors="replace").rstrip("\r"))
        if pending and self._stop is None:
            await self._write_log(level, pending.decode(errors="replace"))

    async def _write_log(
        self, level: int, text: str, time: dt.datetime | None = None, *, force: bool = False
    ) -> None:
        if level < self._level and not force:
            return
        text = text.replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL
        self._log_bytes += len(text) + 1
        if self._log_bytes > self._limits.log_bytes and not force:
            message = f"the program logged or printed more than a job may ({self._limits.log_bytes} bytes)"
            self._kill(Outcome(ERROR, "OUTPUT_LIMIT_EXCEEDED", message))
            return
        name = logging.getLevelName(level)
        self._pending_logs.append((name, text, time or dt.datetime.now(dt.UTC)))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_logs())
        log.log(level, "program log", level_name=name, text=text[:1000])

    async def _flush_logs(self) -> None:
        # One transaction for all the lines that came while the last one was written: a program that
        # prints fast costs a few commits, not one per line. One flusher at a time keeps their order.
        while self._pending_logs and not self._ending:
            lines, self._pending_logs = self._pending_logs, []
            if not await asyncio.to_thread(self._store.append_attempt_logs, self._job.id, self._job.attempts, lines):
                self._moved_on()

    def _moved_on(self) -> None:
        """The store refused a write: the job is no longer this attempt's (cancelled, timed out,
        requeued or claimed again). Stop the program now rather than at the next lease renewal."""
        if not self._control.cancelled:
            log.info("the job has moved on; stopping its program", attempt=self._job.attempts)
        self._control.cancel()

    def _kill(self, outcome: Outcome) -> None:
        """End the job with outcome: kill the host, so its channel closes and serve() returns it.
        Not awaiting its end: asyncio says a process has ended only once its output pipes are read
        to their end, and the caller may be the reader of those pipes (serve() reaps it)."""
        if self._stop is None:
            self._stop = outcome
            log.warning("stopping the program", reason=outcome.reason, why=outcome.message)
            self._host.worker.kill_now()

