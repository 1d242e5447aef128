"""Program hosts started ahead of demand: a warm pool of worker processes, each used for one job.

A job takes a started host from its pool, and the pool starts the replacement. A host is never
reused: after its job it is killed with everything it started, so no job sees another's leftovers.
When the pool is empty a job starts its own host (a cold start) rather than wait.

Two pools run side by side, and only the trust differs. Built-in programs run in limited workers
forked from a zygote (kit/zygote.py) that has imported Qiskit once, so a host costs milliseconds,
not the second of CPU a fresh interpreter spends importing. Uploaded programs run in the same host
started afresh inside the operating system's sandbox (kit/sandbox.py), never forked from a process
that ran anything else,
with a private scratch folder in memory (so it counts against the host's memory limit and cannot
fill the disk) and a host uid of its own (per-user kernel budgets such as RLIMIT_NPROC are then
its alone).

Such a start costs about a second of CPU, which would otherwise be spent beside the job that set it
going: a VQE's 50-step loop took 14.6 ms a step with its replacement starting alongside and 10.2 ms
without, on two cores, whatever the replacement's CPU priority (it finds the idle core). So a
sandboxed pool replaces a host when the job that took it ends, or REFILL_DELAY_SECONDS after the job
took it if it runs longer; a forked host is replaced at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import sys

from qruntime.jobs.v1 import program_host_pb2

from qruntime_kit.limits import Limits
from qruntime_kit.logging import get_logger
from qruntime_kit.sandbox import sandbox_argv, seccomp_fd
from qruntime_kit.workers import CHANNEL_FD, ChannelClosed, Worker, spawn
from qruntime_kit.zygote import Zygote, ZygoteDied

log = get_logger("jobs.hosts")
HOST_MODULE = "qruntime_jobs.host"
START_TIMEOUT_SECONDS = 60.0
# A host's frames: the largest is a program's result or a device call's circuits.
MAX_FRAME_BYTES = 64 * 1024 * 1024
SCRATCH_BYTES = 256 * 1024 * 1024  # a sandboxed program's /scratch, in memory
REFILL_DELAY_SECONDS = 10.0  # a long uploaded job shares the cores with its host's replacement after this
# Sandboxed hosts run as host uids 100000 + n, one each (recycled after 50,000 hosts); no account
# on the machine uses them, so no file on it belongs to them.
_FIRST_UID, _UIDS = 100_000, 50_000
_next_uid = itertools.count()


class HostStartError(Exception):
    """A host could not be started (the machine is out of processes or memory, or the sandbox failed)."""


@dataclasses.dataclass
class Host:
    """A started host waiting for its task."""

    worker: Worker
    sandboxed: bool = False

    async def discard(self) -> None:
        """Kill the host with everything it started (its scratch in memory goes with it)."""
        await self.worker.kill()


class HostPool:
    """Hosts of one kind of trust, `warm` of them started ahead of demand."""

    def __init__(self, *, sandboxed: bool, warm: int, limits: Limits,
                 refill_delay: float | None = None) -> None:
        """refill_delay: seconds after a job takes a host that its replacement starts, if the job
        has not ended by then (None: a sandboxed pool's REFILL_DELAY_SECONDS, a trusted one's 0)."""
        self.sandboxed = sandboxed
        self._warm = warm
        self._refill_delay = (REFILL_DELAY_SECONDS if sandboxed else 0.0) if refill_delay is None else refill_delay
        self._limits = limits
        self._ready: asyncio.Queue[Host] = asyncio.Queue()
        self._starting = 0
        self._fillers: set[asyncio.Task] = set()
        self._discards: set[asyncio.Task] = set()  # hosts killed, being reaped
        self._stopped = False
        self._zygote: asyncio.Task[Zygote] | None = None  # trusted pools: the zygote, once started

    @property
    def kind(self) -> str:
        return "sandboxed" if self.sandboxed else "trusted"

    @property
    def warm_now(self) -> tuple[int, int]:
        """(hosts started and waiting for a job, hosts starting for the pool)."""
        return self._ready.qsize(), self._starting

    def start(self) -> None:
        """Start filling the pool in the background."""
        self._refill()

    async def acquire(self) -> Host:
        """A started host for one job: a warm one when there is one, else a new one. Give it back
        with release() when the job ends."""
        while not self._ready.empty():
            host = self._ready.get_nowait()
            if host.worker.returncode is None:
                self._replace_later()
                return host
            log.warning("a warm program host had died; discarding it", pool=self.kind,
                        ended=(await host.worker.wait()).describe())
            await host.discard()
            self._refill()
        self._replace_later()
        return await self._start_host()

    def release(self, host: Host) -> None:
        """Kill a host whose job is over at once; reap it and free its cgroups in the background, off
        the path of the job's outcome. The pool refills now if it waited for the job's end."""
        host.worker.kill_now()
        task = asyncio.create_task(host.discard(), name=f"host-discard-{host.worker.pid}")
        self._discards.add(task)
        task.add_done_callback(self._discards.discard)
        self._refill()

    def _replace_later(self) -> None:
        """Refill for a host a job took: at once, or after the pool's delay unless release() comes first."""
        if self._refill_delay:
            asyncio.get_running_loop().call_later(self._refill_delay, self._refill)
        else:
            self._refill()

    async def stop(self) -> None:
        """Stop refilling and kill the hosts that wait (and the zygote)."""
        self._stopped = True
        for task in list(self._fillers):
            task.cancel()
        await asyncio.gather(*self._fillers, *self._discards, return_exceptions=True)
        while not self._ready.empty():
            await self._ready.get_nowait().discard()
        if self._zygote is not None:
            zygote, self._zygote = self._zygote, None
            zygote.cancel()
            with contextlib.suppress(BaseException):
                await (await zygote).stop()

    async def _forked(self) -> Worker:
        """A trusted host forked from the zygote, started (again) if it is not running."""
        for attempt in (1, 2):
            if self._zygote is None or (self._zygote.done() and (
                    self._zygote.cancelled() or self._zygote.exception() or not self._zygote.result().alive)):
                self._zygote = asyncio.create_task(Zygote.start(HOST_MODULE, label="host-zygote"))
            zygote = await asyncio.shield(self._zygote)
            try:
                return await zygote.fork(limits=self._limits, label="host", max_frame=MAX_FRAME_BYTES)
            except ZygoteDied:
                if attempt == 2:
                    raise
                log.warning("the program hosts' zygote died; starting another")
        raise AssertionError("unreachable")

    def _refill(self) -> None:
        if self._stopped:
            return
        missing = self._warm - self._ready.qsize() - self._starting
        for _ in range(max(0, missing)):
            self._starting += 1
            task = asyncio.create_task(self._fill_one(), name=f"host-pool-{self.kind}")
            self._fillers.add(task)
            task.add_done_callback(self._fillers.discard)

    async def _fill_one(self) -> None:
        try:
            host = await self._start_host()
        except HostStartError:
            log.exception("could not start a warm program host", pool=self.kind)
            return
        finally:
            self._starting -= 1
        if self._stopped:
            await host.discard()
        else:
            self._ready.put_nowait(host)

    async def _start_host(self) -> Host:
        try:
            if self.sandboxed:
                uid = _FIRST_UID + next(_next_uid) % _UIDS
                with seccomp_fd() as fd:
                    argv = sandbox_argv([sys.executable, "-m", HOST_MODULE], scratch=None, scratch_bytes=SCRATCH_BYTES,
                                        keep_fds=[CHANNEL_FD], seccomp_fd=CHANNEL_FD + 1, host_uid=uid)
                    worker = await spawn(argv, limits=self._limits, label="host", extra_fds=[fd],
                                         capture_output=True, max_frame=MAX_FRAME_BYTES)
            else:
                worker = await self._forked()
        except Exception as err:
            raise HostStartError(f"could not start a {self.kind} program host: {err}") from err
        host = Host(worker, self.sandboxed)
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                frame = await worker.channel.recv()
            ready = program_host_pb2.HostMessage.FromString(frame).HasField("ready")
        except (TimeoutError, ChannelClosed, ValueError) as err:
            ended = (await host.worker.kill()).describe()
            stderr = await _drain(worker)
            await host.discard()
            raise HostStartError(f"a {self.kind} program host did not start ({ended}): {err} {stderr}") from None
        except BaseException:  # cancelled (the pool stops): the half-started host goes too
            await asyncio.shield(host.discard())
            raise
        if not ready:
            await host.discard()
            raise HostStartError(f"a {self.kind} program host spoke before it was ready")
        return host


async def _drain(worker: Worker) -> str:
    """The last words of a host that failed to start, for the log."""
    if worker.stderr is None:
        return ""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            return (await worker.stderr.read(4096)).decode(errors="replace").strip()
    return ""

