"""The simulation workers: processes that decode, check and simulate circuits for the devices service.

qiskit-aer holds Python's interpreter lock while it simulates, and a hostile QPY file can take
gigabytes and minutes to decode, so none of that happens in the service process: each request goes
to a worker (worker.py), started with the kit's `spawn` in its own process group and memory cgroup.

- `size` workers are kept started (warm: at start-up, each then loading every backend in the
  background; lazy: from the first request on). When a request takes the last idle one, a spare
  starts, so that the next request finds a worker at once; workers past `size` end after
  LINGER_SECONDS idle. Simulations are bounded by the backends' slots (queues.py),
  checks by CHECK_CONCURRENCY, so the pool stays within those.
- A worker keeps the adapters it was sent (pickled: the service trusts its own adapters), with
  what they build (noise models), and a request goes to an idle worker that has its backend loaded
  when there is one.
- A worker's hard memory cap is what all simulations may use plus BASELINE_BYTES for the
  interpreter, qiskit and Aer themselves: one simulation may use all of the budget (queues.py makes
  the runs share it by their estimates), and a wrong estimate costs that worker only.
- A caller that gives up (cancel, deadline) kills its worker at once, which frees the machine; a
  worker that dies fails only its own request, with an error that says how it ended; a fresh worker
  is started in the background whenever fewer than `size` are left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pickle
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from google.protobuf.message import DecodeError
from qruntime.devices.v1 import devices_service_pb2 as pb

from qruntime_kit.errors import ServiceError, Unavailable
from qruntime_kit.limits import Limits, create_cgroup
from qruntime_kit.logging import get_logger
from qruntime_kit.outbound import MAX_MESSAGE_BYTES
from qruntime_kit.workers import ChannelClosed, Exit, WorkerProcess, spawn, worker_environment

from . import protocol
from .adapters import SIMULATOR, BackendAdapter
from .failures import Lost, WorkerLimits

log = get_logger("devices")
T = TypeVar("T")

WORKER_ARGV = (sys.executable, "-m", "qruntime_devices.worker")
# A worker with qiskit, Aer, qiskit-ibm-runtime's calibration snapshots and every default backend
# loaded holds about 230 MB, and about 400 MB once the emulated systems' noise models are built (the
# 127- and 133-qubit ones take most of it; measured here); the rest is headroom for decoding a request
# of up to 64 MiB and encoding its results.
BASELINE_BYTES = 1 << 30
# Where no memory cgroup can be made the kit caps address space instead (RLIMIT_AS), and an idle
# worker maps about 1.8 GB of it (thread stacks, malloc arenas, libraries; measured here).
ADDRESS_SPACE_BASELINE_BYTES = 3 << 30
START_SECONDS = 120.0  # starting takes seconds (imports); past this the start failed
LINGER_SECONDS = 60.0
CHECK_CONCURRENCY = 2
_MAX_FRAME = MAX_MESSAGE_BYTES + 1024  # a request or answer as large as gRPC allows, plus the tag


@dataclasses.dataclass(eq=False)
class _Worker:
    process: WorkerProcess
    loaded: set[str] = dataclasses.field(default_factory=set)
    last_job: str = ""  # the job of its last run: it has that job's circuits decoded (decoded.py)
    busy: bool = False
    retire: asyncio.TimerHandle | None = None


class _Answered(Exception):
    """The worker answered a step of a request with an error (and is fine)."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def _memory_cgroups() -> bool:
    """Whether workers get a memory cgroup here (else the kit falls back to RLIMIT_AS)."""
    probe = create_cgroup("probe", Limits(memory_bytes=1 << 30))
    if probe is None:
        return False
    probe.destroy()
    return probe.limits_memory


def _pickled(name: str, adapter: BackendAdapter) -> bytes:
    """What an ADAPTER frame carries; checked when the service starts, as every worker needs it."""
    try:
        return name.encode() + b"\0" + pickle.dumps(adapter)
    except Exception as err:
        raise ValueError(
            f"backend {name} cannot be sent to the simulation workers: its adapter does not pickle ({err}); "
            "define its class in an importable module, and leave out what does not pickle (see adapters.py)"
        ) from err


class WorkerPool:
    """The worker processes of one devices service."""

    def __init__(
        self,
        adapters: Mapping[str, BackendAdapter],
        *,
        size: int,
        simulation_memory: int,
        check_seconds: float,
        warm: bool,
        log_format: str = "console",
        log_level: str = "info",
    ) -> None:
        self._adapters = dict(adapters)
        self._size = size
        self._check_seconds = check_seconds
        self._warm = warm
        baseline = BASELINE_BYTES if _memory_cgroups() else ADDRESS_SPACE_BASELINE_BYTES
        self.worker_memory = simulation_memory + baseline
        self._failures = WorkerLimits(self.worker_memory, simulation_memory, check_seconds)
        self._limits = Limits(
            memory_bytes=self.worker_memory,
            # The pids cgroup caps threads too (Aer starts one per core). Not for other users: there the
            # kit falls back to RLIMIT_NPROC, which counts every process the user runs anywhere.
            max_processes=max(64, 4 * (os.cpu_count() or 1)) if os.geteuid() == 0 else None,
            # No open_files: the kit's launcher moves descriptors above 1024 after it sets the
            # rlimits, so any limit of 1024 or less fails every start (EINVAL).
        )
        # Aer's OpenMP threads wait for work passively: spinning (the default) after each parallel region
        # burnt CPU the service and the program hosts were waiting for (two small noisy circuits on an
        # emulated system: 69 ms of CPU a run instead of 45 ms, on a busy 2-core machine).
        # Qiskit's user settings (~/.qiskit/settings.conf) are the service account's, not a user's, and
        # reading them was a stat of the file for every QPY load (2% of a Bell circuit's worker time).
        self._env = {**worker_environment(), "PYTHONDONTWRITEBYTECODE": "1", "OMP_WAIT_POLICY": "passive",
                     "QISKIT_IGNORE_USER_SETTINGS": "TRUE"}
        self._hello = protocol.HELLO + json.dumps({
            "sys_path": sys.path, "service_pid": os.getpid(), "log_format": log_format, "log_level": log_level,
            "max_reply_bytes": MAX_MESSAGE_BYTES,
        }).encode()
        self._pickled = {name: _pickled(name, adapter) for name, adapter in self._adapters.items()}
        self._workers: set[_Worker] = set()
        self._starting = 0
        self._waiting = 0
        self._start_failures = 0
        self._start_error = ""
        self._changed = asyncio.Event()
        self._checks = asyncio.Semaphore(CHECK_CONCURRENCY)
        self._starts: set[asyncio.Task] = set()  # cancelled at close
        self._kills: set[asyncio.Task] = set()  # awaited at close: a kill must happen
        self._closed = False

    def pids(self, *, busy: bool | None = None) -> list[int]:
        """The workers' process ids (only the busy, or only the idle ones, if asked)."""
        return sorted(w.process.pid for w in self._workers if busy is None or w.busy == busy)

    def loaded(self) -> dict[int, frozenset[str]]:
        """The backends each worker (by pid) has loaded."""
        return {w.process.pid: frozenset(w.loaded) for w in self._workers}

    async def start(self) -> None:
        """Start the warm workers in the background; lazy pools start them on first use."""
        if self._warm:
            for _ in range(self._size):
                self._start_worker()

    async def close(self) -> None:
        """Refuse new requests, stop starting workers, and kill every worker."""
        self._closed = True
        self._notify()
        for task in self._starts:
            task.cancel()
        await asyncio.gather(*self._starts, return_exceptions=True)
        workers, self._workers = list(self._workers), set()
        await asyncio.gather(*(w.process.kill() for w in workers), *self._kills, return_exceptions=True)

    async def check(self, request: pb.CheckCircuitsRequest) -> pb.CheckCircuitsResponse:
        """Decode and check the circuits in a worker, within the check time limit."""
        async with self._checks:
            try:
                return await self._call(
                    request.backend, protocol.CHECK + request.SerializeToString(),
                    time_limit=self._check_seconds, answer=protocol.CHECKED, parse=pb.CheckCircuitsResponse.FromString,
                )
            except Lost as lost:
                raise self._failures.not_checked(lost) from None

    async def run(
        self, request: pb.RunCircuitsRequest,
        admit: Callable[[pb.CheckCircuitsResponse], Awaitable[None]] | None = None, budget: int = 0,
    ) -> pb.RunCircuitsResponse:
        """Decode and check the circuits in a worker (within the check time limit), await
        admit(their summaries) (say, for the run's share of memory), then simulate them; cancelling
        the call kills the worker. budget is simulation memory the caller holds for the run already:
        a run that needs no more simulates without waiting for admit (which still follows)."""
        try:
            return await self._call(
                request.backend, protocol.run_frame(budget, request.SerializeToString()),
                time_limit=self._check_seconds, answer=protocol.RAN, parse=pb.RunCircuitsResponse.FromString,
                admit=admit, budget=budget, job=request.job_id,
            )
        except Lost as lost:
            raise self._failures.failed(lost) from None

    # -- one request on one worker

    async def _call(self, backend: str, frame: bytes, job: str = "", **exchange) -> T:
        worker = await self._acquire(backend, job)
        if job:
            worker.last_job = job
        return await self._exchange(worker, backend, frame, **exchange)

    async def _exchange(
        self, worker: _Worker, backend: str, frame: bytes, *, time_limit: float | None, answer: bytes,
        parse: Callable[[bytes], T], admit: Callable[[pb.CheckCircuitsResponse], Awaitable[None]] | None = None,
        budget: int = 0,
    ) -> T:
        """Send frame to the (busy) worker and wait for its answer, within time_limit; for a run the
        worker's CHECKED comes first, the time limit ends there, and GO follows admit unless the run
        fits its budget (protocol.py). The worker goes back to the pool after an answer, and is killed
        after anything else."""
        simulating = False
        try:
            if backend not in worker.loaded:
                # Loading a backend may import for seconds (qiskit-ibm-runtime): it has a time limit of
                # its own, so that the request's limit measures its input alone.
                await worker.process.channel.send(protocol.ADAPTER + self._pickled[backend])
                await self._answer(worker, protocol.READY, START_SECONDS)
                worker.loaded.add(backend)
            await worker.process.channel.send(frame)
            if answer == protocol.RAN:
                checked = pb.CheckCircuitsResponse.FromString(await self._answer(worker, protocol.CHECKED, time_limit))
                if admit is not None:
                    await admit(checked)
                if protocol.needs(checked) > budget:
                    await worker.process.channel.send(protocol.GO)
                simulating, time_limit = True, None
            result = parse(await self._answer(worker, answer, time_limit))
        except _Answered as answered:  # the worker refused the request, and is fine
            self._release(worker)
            raise answered.error from None
        except (ChannelClosed, TimeoutError, protocol.ProtocolError, DecodeError) as err:
            ended = await self._discard(worker)
            garbled = str(err) if isinstance(err, protocol.ProtocolError | DecodeError) else ""
            timed_out = isinstance(err, TimeoutError)
            raise Lost(ended, simulating=simulating, timed_out=timed_out, garbled=garbled) from None
        except BaseException:  # cancelled: the caller gave up, and the machine is freed at once
            self._kill_soon(worker, "its call was cancelled")
            raise
        self._release(worker)
        return result

    @staticmethod
    async def _answer(worker: _Worker, expected: bytes, time_limit: float | None) -> bytes:
        """The body of the worker's next frame, tagged expected; _Answered when it sent an ERROR,
        ProtocolError when anything else."""
        async with asyncio.timeout(time_limit):
            tag, body = protocol.split(await worker.process.channel.recv())
        if tag == protocol.ERROR:
            raise _Answered(protocol.error_from_worker(body))
        if tag != expected:
            raise protocol.ProtocolError(f"an answer tagged {tag!r} where {expected!r} was due")
        return body

    # -- taking and giving back workers

    async def _acquire(self, backend: str, job: str = "") -> _Worker:
        """An idle worker, preferring the one that ran the job's last run (it has the job's circuits
        decoded), then one that has the backend loaded; starts one when none is idle."""
        self._waiting += 1
        failures = self._start_failures
        try:
            while True:
                if self._closed:
                    raise Unavailable("the devices service is shutting down", reason="SHUTTING_DOWN")
                idle = [w for w in self._workers if not w.busy]
                if idle:
                    worker = next((w for w in idle if job and w.last_job == job), None) or next(
                        (w for w in idle if backend in w.loaded), idle[0])
                    worker.busy = True
                    if worker.retire is not None:
                        worker.retire.cancel()
                    if len(idle) == 1 and not self._starting and not self._closed:
                        # Keep one spare: the next request (a CreateJob's check, say) must not wait
                        # seconds for a start behind simulations that hold every worker.
                        self._start_worker()
                    return worker
                if self._start_failures != failures:
                    raise Unavailable(
                        f"no simulation worker could be started: {self._start_error}",
                        reason="WORKER_START_FAILED",
                    )
                if self._starting < self._waiting:  # one start per waiter beyond those under way
                    self._start_worker()
                await self._changed.wait()
        finally:
            self._waiting -= 1

    def _release(self, worker: _Worker) -> None:
        worker.busy = False
        if len(self._workers) > self._size:
            worker.retire = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._retire_idle, worker)
        self._notify()

    def _retire_idle(self, worker: _Worker) -> None:
        if worker in self._workers and not worker.busy and len(self._workers) > self._size:
            self._workers.discard(worker)
            self._kill_in_background(worker)
            log.debug("idle simulation worker retired", pid=worker.process.pid)

    async def _discard(self, worker: _Worker) -> Exit:
        """Take a worker that failed out of the pool, make sure it is gone, and replace it."""
        self._workers.discard(worker)
        ended = await worker.process.kill()  # also reaps one that already died, and reads its cgroup
        log.warning("simulation worker ended", pid=worker.process.pid, how=ended.describe(),
                    out_of_memory=ended.out_of_memory)
        self._replenish()
        return ended

    def _kill_soon(self, worker: _Worker, why: str) -> None:
        self._workers.discard(worker)
        self._kill_in_background(worker)
        log.info("simulation worker killed", pid=worker.process.pid, why=why)
        self._replenish()

    def _replenish(self) -> None:
        if not self._closed and len(self._workers) + self._starting < self._size:
            self._start_worker()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _kill_in_background(self, worker: _Worker) -> None:
        task = asyncio.create_task(worker.process.kill())
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    # -- starting workers

    def _start_worker(self) -> None:
        self._starting += 1
        task = asyncio.create_task(self._started_worker())
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    async def _started_worker(self) -> None:
        started = time.perf_counter()
        try:
            process = await spawn(WORKER_ARGV, limits=self._limits, label="simulation", env=self._env,
                                  max_frame=_MAX_FRAME)
            try:
                await process.channel.send(self._hello)
                async with asyncio.timeout(START_SECONDS):
                    ready = await process.channel.recv()
                if ready != protocol.READY:
                    raise protocol.ProtocolError(f"its first answer was {ready[:1]!r}, not READY")
            except (ChannelClosed, TimeoutError, protocol.ProtocolError) as err:
                ended = await process.kill()
                raise RuntimeError(f"the worker {ended.describe()} while starting ({err or 'too slow'})") from None
            except BaseException:  # cancelled: the pool is closing
                await process.kill()
                raise
        except Exception as err:
            self._start_failures += 1
            self._start_error = str(err)
            log.error("a simulation worker did not start", error=str(err))
            return
        finally:
            self._starting -= 1
            self._notify()
        if self._closed:
            await process.kill()
            return
        worker = _Worker(process)
        self._workers.add(worker)
        self._notify()
        log.debug("simulation worker started", pid=process.pid, ms=round((time.perf_counter() - started) * 1000))
        if self._warm:
            await self._warm_up(worker)

    async def _warm_up(self, worker: _Worker) -> None:
        """Load every backend into the worker and warm it up (noise models, a first run), simulators
        first as they take milliseconds; a step is skipped while a caller has the worker (the caller's
        request loads what it needs)."""
        for name in sorted(self._adapters, key=lambda n: (self._adapters[n].kind != SIMULATOR, n)):
            if worker.busy or worker not in self._workers or self._closed:
                continue
            worker.busy = True
            started = time.perf_counter()
            try:
                await self._exchange(worker, name, protocol.WARM + name.encode(), time_limit=START_SECONDS,
                                     answer=protocol.READY, parse=bytes)
            except ServiceError as err:  # the backend's first run builds what it needs, or fails typed
                log.error("backend warm-up failed", backend=name, error=err.message)
                continue
            except Lost as lost:
                log.error("backend warm-up failed", backend=name, error=f"the worker {lost}")
                return
            log.debug("backend warmed up", backend=name, pid=worker.process.pid,
                      ms=round((time.perf_counter() - started) * 1000, 1))
