"""Checks an uploaded program's source in a worker process, never in the service's own.

Compiling a user's source can take seconds of CPU and hundreds of MiB, or crash the compiler outright
(a 23 MB upload once froze the whole suite for 45 s). So each check runs source_worker.py in a fresh
worker (qruntime_kit.workers.spawn): `python -I -S`, no QRUNTIME_* settings in its environment, a
memory cap, a CPU cap, a wall clock after which its whole process group is killed, and no files.
The event loop only waits on the worker's channel. A source that kills its worker is the caller's
problem (INVALID_ARGUMENT), never the service's: the service keeps answering.

At most `workers` checks run at once per replica; a few more wait their turn, and past that an upload
is refused as RESOURCE_EXHAUSTED rather than queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path

from qruntime_kit.errors import Internal, ResourceExhausted, Unavailable
from qruntime_kit.limits import Limits
from qruntime_kit.logging import get_logger
from qruntime_kit.workers import ChannelClosed, Exit, WorkerProcess, spawn

from .source_worker import MAX_PROBLEM_CHARS

log = get_logger("programs.source_check")
WORKER_SCRIPT = str(Path(__file__).with_name("source_worker.py"))
MiB = 1024 * 1024
MAX_VERDICT_BYTES = 64 * 1024  # a verdict is a few short lines; anything longer is not one
MAX_PROBLEMS = 10
_OUTPUT_KEPT = 2048  # bytes of a worker's stdout/stderr kept for the log


@dataclasses.dataclass(frozen=True)
class CheckLimits:
    """What one check may use, and how many run at once."""

    seconds: float = 15.0  # wall clock from spawn to verdict; then the worker is killed
    memory_bytes: int = 512 * MiB  # a dense 1 MB of code needs about 220 MiB to compile
    workers: int = 2  # checks running at once in this replica
    waiting: int = 8  # checks waiting for a free worker at most; more are refused

    def worker_limits(self) -> Limits:
        return Limits(
            memory_bytes=self.memory_bytes,
            max_processes=4,  # it starts none; a few in case the interpreter makes a helper thread
            cpu_seconds=math.ceil(self.seconds),  # behind the wall clock, should that ever fail
            file_bytes=0,  # it writes no file
            # open_files stays unset: the kit's launcher sets rlimits before it moves the channel to a
            # descriptor above 1024, so any cap below that stops every worker at launch.
        )


class SourceChecker:
    """Checks program sources in limited worker processes, a bounded number at once."""

    def __init__(self, limits: CheckLimits = CheckLimits()) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.workers)
        self._admitted = 0  # checks running or waiting for a slot

    async def problems(self, source: str) -> list[str]:
        """What is wrong with source as a program (empty: nothing), decided in a worker process.

        A source that makes its worker run out of time or memory, or crash, gets a problem that says
        so. Raises ResourceExhausted when too many checks are already waiting, Unavailable when no
        worker can be started, Internal when the worker fails in a way its input cannot explain."""
        if self._admitted >= self.limits.workers + self.limits.waiting:
            raise ResourceExhausted(
                "too many uploads are being checked right now; retry in a few seconds",
                reason="SOURCE_CHECKS_BUSY",
                metadata={"running": str(self.limits.workers), "waiting": str(self.limits.waiting)},
            )
        self._admitted += 1
        try:
            async with self._slots:
                return await self._check(source.encode())
        finally:
            self._admitted -= 1

    async def _check(self, payload: bytes) -> list[str]:
        started = time.monotonic()
        try:
            worker = await spawn(
                [sys.executable, "-I", "-S", WORKER_SCRIPT], limits=self.limits.worker_limits(),
                label="source-check", capture_output=True, max_frame=max(len(payload), MAX_VERDICT_BYTES),
            )
        except OSError as err:
            log.error("cannot start a source check worker", error=str(err))
            raise Unavailable("the program's source cannot be checked right now; retry shortly",
                              reason="SOURCE_CHECK_UNAVAILABLE") from None
        output = asyncio.gather(_kept(worker.stdout), _kept(worker.stderr))
        timed_out, reply = False, None
        try:
            reply = await asyncio.wait_for(_exchange(worker, payload), self.limits.seconds)
        except TimeoutError:
            timed_out = True
        except ChannelClosed:
            await _ended(worker)
        finally:
            # Whatever happened (an answer, a timeout, the caller gone), the worker has no more to say.
            ended = await worker.kill() if worker.process.returncode is None else await worker.wait()
        _, stderr = await output
        seconds = round(time.monotonic() - started, 3)
        if reply is not None:
            problems = _verdict(reply)
            log.info("source checked", bytes=len(payload), seconds=seconds, problems=len(problems))
            return problems
        problems = self._timed_out() if timed_out else self._died(ended, stderr)
        log.warning("source check worker ended without a verdict", bytes=len(payload), seconds=seconds,
                    exit=ended.describe(), problem=problems[0], stderr=stderr.decode(errors="replace"))
        return problems

    def _timed_out(self) -> list[str]:
        return [f"checking it took longer than {self.limits.seconds:g} s, the limit: simplify the source"]

    def _died(self, ended: Exit, stderr: bytes) -> list[str]:
        """The problem to report for a worker that ended without a verdict."""
        if ended.out_of_memory:
            return [f"checking it needed more than {self.limits.memory_bytes // MiB} MiB of memory, the limit: "
                    "simplify the source"]
        if ended.signal == signal.SIGXCPU:
            return [f"checking it took more than {math.ceil(self.limits.seconds)} s of CPU, the limit: "
                    "simplify the source"]
        if ended.signal == signal.SIGKILL:  # not by us: the kernel, for memory it could not count to the cgroup
            return [f"checking it was killed, most likely for using more than {self.limits.memory_bytes // MiB} MiB "
                    "of memory: simplify the source"]
        if ended.signal is not None:  # the compiler crashed on it (SIGSEGV: a C stack exhausted)
            return [f"does not compile: the Python compiler crashed on it ({signal.Signals(ended.signal).name})"]
        # No signal and no verdict: our worker failed, not the caller's source.
        log.error("source check worker failed", exit=ended.describe(), stderr=stderr.decode(errors="replace"))
        raise Internal("the program's source could not be checked; the service logged why",
                       reason="SOURCE_CHECK_FAILED")


async def _exchange(worker: WorkerProcess, payload: bytes) -> bytes:
    await worker.channel.send(payload)
    return await worker.channel.recv()


async def _ended(worker: WorkerProcess) -> Exit:
    """How the worker ended, once it has closed its channel; killed if it lingers after that."""
    try:
        return await asyncio.wait_for(asyncio.shield(worker.wait()), 1.0)
    except TimeoutError:
        return await worker.kill()


async def _kept(stream: asyncio.StreamReader | None) -> bytes:
    """Read stream to its end (so the worker never blocks on a full pipe), keeping its first bytes."""
    kept = b""
    if stream is None:
        return kept
    with contextlib.suppress(ConnectionError):
        while chunk := await stream.read(65536):
            kept = (kept + chunk)[:_OUTPUT_KEPT]
    return kept


def _verdict(reply: bytes) -> list[str]:
    """The problems of a worker's answer, parsed with limits: it is data from a process that ran
    hostile input, so anything but a small {"problems": [str, ...]} is refused."""
    try:
        if len(reply) > MAX_VERDICT_BYTES:
            raise ValueError(f"{len(reply)} bytes")
        verdict = json.loads(reply)
        problems = verdict["problems"]
        if not (isinstance(problems, list) and len(problems) <= MAX_PROBLEMS
                and all(isinstance(p, str) for p in problems)):
            raise ValueError("not a short list of strings")
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        log.error("source check worker sent no verdict", error=str(err)[:200])
        raise Internal("the program's source could not be checked; the service logged why",
                       reason="SOURCE_CHECK_FAILED") from None
    return [p[:MAX_PROBLEM_CHARS] for p in problems]
