"""Worker processes: the one way a service runs work it must be able to limit and kill.

The services decide, store and answer; simulations, decoding a user's circuit and user programs run
in workers started here. A worker:
- runs in a session (and process group) of its own, so kill() ends it and everything it started;
- joins its own memory and pids cgroups and gets its rlimits *before* it execs (a small launcher,
  below, does that in the child), so no child of it escapes the caps;
- talks to its parent over one channel, a socket pair, in frames of at most max_frame bytes: the
  launcher puts the channel on fd 3 and any extra descriptors the caller passes on 4, 5, ... in
  order, and closes every other descriptor the service had open.

What crosses a channel is bytes; callers put protobuf messages in them and never pickle anything a
worker sends back, since a worker may run hostile input.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence

from .limits import Cgroup, Limits, create_cgroup
from .logging import get_logger

log = get_logger("kit.workers")
CHANNEL_FD = 3  # the channel's descriptor number in every worker
_HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
NO_LIMITS = Limits()

# Runs in the child with `python -I -S -c`: joins the cgroups, sets rlimits, moves the channel and
# the extra descriptors to 3, 4, ..., then execs the worker's command. No site, no imports of ours:
# it starts in milliseconds and cannot be influenced by the environment it runs in.
_LAUNCHER = """
import fcntl, json, os, resource, sys
spec = json.loads(os.environ["QRUNTIME_LAUNCH"])
for procs in spec["procs"]:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
fds = spec["fds"]
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1024) for fd in fds]  # above 3, 4, ... so none is overwritten
for fd in fds:
    os.close(fd)
for target, fd in enumerate(moved, start=3):
    os.dup2(fd, target)
    os.close(fd)
os.closerange(3 + len(moved), os.sysconf("SC_OPEN_MAX"))
for name, value in spec["rlimits"].items():  # last: RLIMIT_NOFILE would forbid the moves above
    resource.setrlimit(getattr(resource, name), (value, value))
if spec["cwd"]:
    os.chdir(spec["cwd"])
argv = sys.argv[1:]
os.execvpe(argv[0], argv, spec["env"])
"""


class ChannelClosed(Exception):
    """The other end closed the channel, or sent a frame past the size limit."""


class FrameTooLarge(ChannelClosed):
    """The other end sent a frame past the size limit; the channel is no longer usable."""


class AsyncChannel:
    """The parent's end of a worker's channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int) -> None:
        self._reader = reader
        self._writer = writer
        self._max_frame = max_frame

    async def send(self, payload: bytes) -> None:
        if len(payload) > self._max_frame:
            raise ValueError(f"a frame of {len(payload)} bytes is past the limit of {self._max_frame}")
        try:
            self._writer.write(_HEADER.pack(len(payload)) + payload)
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as err:
            raise ChannelClosed(str(err)) from None

    async def recv(self) -> bytes:
        """The next frame; ChannelClosed at the end or on a frame past the limit."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > self._max_frame:
                raise FrameTooLarge(f"the worker sent a frame of {size} bytes; the limit is {self._max_frame}")
            return await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            raise ChannelClosed("the worker closed its channel") from err

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


class BlockingChannel:
    """A worker's end of its channel (fd 3), for the worker's own blocking code."""

    def __init__(self, fd: int = CHANNEL_FD, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._sock = socket.socket(fileno=fd)
        self._max_frame = max_frame

    def send(self, payload: bytes) -> None:
        self._sock.sendall(_HEADER.pack(len(payload)) + payload)

    def recv(self) -> bytes:
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        if size > self._max_frame:
            raise FrameTooLarge(f"a frame of {size} bytes is past the limit of {self._max_frame}")
        return self._read(size)

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self._sock.recv(min(left, 1 << 20))
            if not chunk:
                raise ChannelClosed("the service closed the channel")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


@dataclasses.dataclass(frozen=True)
class Exit:
    """How a worker ended."""

    returncode: int
    out_of_memory: bool = False  # the kernel killed it (or a child) for passing its memory cap

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    def describe(self) -> str:
        if self.out_of_memory:
            return "killed by the kernel for using more memory than its limit"
        if self.signal is not None:
            return f"killed by signal {signal.Signals(self.signal).name}"
        return f"exited with status {self.returncode}"


class Worker:
    """One running worker: its channel, its output pipes (when captured), kill() and wait().

    Subclasses say how its end is learnt: WorkerProcess from the child it is, ForkedWorker (zygote.py)
    from the zygote that forked it."""

    def __init__(
        self, pid: int, channel: AsyncChannel, cgroup: Cgroup | None, label: str,
        stdout: asyncio.StreamReader | None = None, stderr: asyncio.StreamReader | None = None,
    ) -> None:
        self.pid = pid
        self.channel = channel
        self.label = label
        self.stdout = stdout
        self.stderr = stderr
        self._cgroup = cgroup
        self._killed = False
        self._exit: Exit | None = None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has ended (negative: the signal that ended it), else None."""
        raise NotImplementedError

    async def _returncode(self) -> int:
        raise NotImplementedError

    @property
    def killed(self) -> bool:
        """Whether kill() was called (so its end was ours, not its own)."""
        return self._killed

    def kill_now(self) -> None:
        """SIGKILL the worker's process group at once, without waiting; kill() finishes the job."""
        self._killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def kill(self) -> Exit:
        """SIGKILL the worker's process group and everything in its cgroups; returns once it is gone.
        (wait() then kills what is left in the cgroups: processes that left the group.)"""
        self.kill_now()
        return await self.wait()

    async def wait(self) -> Exit:
        """Wait for the worker to end, release its cgroups, and say how it ended."""
        if self._exit is None:
            returncode = await self._returncode()
            oom = False
            if self._cgroup is not None:
                oom = self._cgroup.oom_kills() > 0
                await asyncio.to_thread(self._cgroup.destroy)
            self.channel.close()
            self._exit = Exit(returncode, out_of_memory=oom)
        return self._exit


class WorkerProcess(Worker):
    """A worker this process started itself (spawn)."""

    def __init__(
        self, process: asyncio.subprocess.Process, channel: AsyncChannel, cgroup: Cgroup | None, label: str
    ) -> None:
        super().__init__(process.pid, channel, cgroup, label, process.stdout, process.stderr)
        self.process = process

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def _returncode(self) -> int:
        return await self.process.wait()


def worker_environment() -> dict[str, str]:
    """The service's environment without its own settings (QRUNTIME_*: keys, database URLs)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QRUNTIME_")}


async def spawn(
    argv: Sequence[str],
    *,
    limits: Limits = NO_LIMITS,
    label: str = "worker",
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    extra_fds: Sequence[int] = (),
    capture_output: bool = False,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> WorkerProcess:
    """Start argv as a worker under limits. Its channel is fd 3, extra_fds become 4, 5, ...;
    with capture_output its stdout and stderr are pipes the caller must read (else they are the
    service's own). env defaults to worker_environment()."""
    cgroup = await asyncio.to_thread(create_cgroup, label, limits)
    parent_end, child_end = socket.socketpair()
    fds = [child_end.fileno(), *extra_fds]
    spec = {
        "procs": cgroup.procs_files if cgroup is not None else [],
        "rlimits": limits.rlimits(memory_by_cgroup=cgroup is not None and cgroup.limits_memory),
        "fds": fds,
        "cwd": cwd or "",
        "env": dict(worker_environment() if env is None else env),
    }
    output = subprocess.PIPE if capture_output else None
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", _LAUNCHER, *argv,
            # In the environment, not on the command line: other local users can read argv in ps.
            env={"QRUNTIME_LAUNCH": json.dumps(spec)},
            stdin=subprocess.DEVNULL, stdout=output, stderr=output, pass_fds=fds, start_new_session=True,
        )
    except BaseException:
        parent_end.close()
        if cgroup is not None:
            await asyncio.to_thread(cgroup.destroy)
        raise
    finally:
        child_end.close()
    reader, writer = await asyncio.open_unix_connection(sock=parent_end, limit=1 << 20)
    log.debug("worker started", worker=label, pid=process.pid, cgroup=cgroup is not None)
    return WorkerProcess(process, AsyncChannel(reader, writer, max_frame), cgroup, label)
