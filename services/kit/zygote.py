"""A zygote: one preloaded process that forks trusted workers in milliseconds.

Starting a Python worker that imports Qiskit costs about a second of CPU. For trusted code (the
built-in programs) the suite pays it once: the zygote imports a module, then forks one child per
worker on request. A forked child is a worker like any other (workers.py): it leaves the zygote's
session, joins its own memory and pids cgroups (made by the service), gets its rlimits, its
channel on fd 3 and its own stdout and stderr pipes, closes everything else, and runs the module's
main(). Untrusted code never runs in a forked child: the sandbox starts from a fresh interpreter.

The service talks to the zygote over two sockets: fork requests go on a datagram socket (fd 4),
each carrying the new worker's descriptors (SCM_RIGHTS); the zygote answers on its channel (fd 3)
with the pid of each child it forked and, when one ends, its exit status (the zygote is its parent
and reaps it). If the zygote dies, every worker it forked is killed and reported ended.

    python -m qruntime_kit.zygote MODULE     # MODULE.main() runs in each child
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import resource
import selectors
import signal
import socket
import sys
import traceback

from .limits import Limits, create_cgroup
from .logging import get_logger
from .workers import (
    DEFAULT_MAX_FRAME,
    NO_LIMITS,
    AsyncChannel,
    BlockingChannel,
    ChannelClosed,
    Worker,
    spawn,
    worker_environment,
)

log = get_logger("kit.zygote")
_REQUEST_FD = 4
_SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "RAYON_NUM_THREADS": "1"}
_MAX_REQUEST = 64 * 1024


class ZygoteDied(Exception):
    """The zygote ended; the fork it was asked for did not happen."""


class ForkedWorker(Worker):
    """A worker forked by a zygote; its end is learnt from the zygote, which reaps it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def returncode(self) -> int | None:
        return self._ended.result() if self._ended.done() else None

    async def _returncode(self) -> int:
        return await asyncio.shield(self._ended)

    def kill_now(self) -> None:
        super().kill_now()
        # A child forked a moment ago may not have made its own process group yet, and then killpg
        # misses it: kill it by pid too. Its end not yet reported, the pid is still the zygote's
        # unreaped child, so it cannot name another process.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    def _exited(self, returncode: int) -> None:
        if not self._ended.done():
            self._ended.set_result(returncode)


class Zygote:
    """The service's handle on a zygote process: fork() workers from it, stop() it."""

    def __init__(self, process: Worker, requests: socket.socket, label: str) -> None:
        self._process = process
        self._requests = requests
        self._label = label
        self._ids = itertools.count(1)
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._children: dict[int, ForkedWorker] = {}
        self._early_exits: dict[int, int] = {}  # children that ended before fork() returned them
        self._reader = asyncio.create_task(self._read_events(), name=f"zygote-{label}")

    @classmethod
    async def start(cls, module: str, *, label: str = "zygote", env: dict[str, str] | None = None) -> Zygote:
        """Start a zygote that has imported module (whose main() its children run)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # One thread per library in the zygote: a fork copies only the thread that forks, so a pool
        # another thread held a lock in would leave the child stuck.
        env = {**worker_environment(), **_SINGLE_THREADED, **(env or {})}
        try:
            process = await spawn([sys.executable, "-m", __name__, module], limits=NO_LIMITS, label=label,
                                  env=env, extra_fds=[theirs.fileno()])
        finally:
            theirs.close()
        ours.setblocking(False)
        return cls(process, ours, label)

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    async def fork(self, *, limits: Limits = NO_LIMITS, label: str = "worker", capture_output: bool = True,
                   max_frame: int = DEFAULT_MAX_FRAME) -> ForkedWorker:
        """A new worker running the module's main(), under limits; ZygoteDied if the zygote is gone."""
        if not self.alive:
            raise ZygoteDied(f"the {self._label} zygote has ended")
        cgroup = await asyncio.to_thread(create_cgroup, label, limits)
        parent_end, child_end = socket.socketpair()
        pipes = [os.pipe() for _ in range(2)] if capture_output else []
        request_id = next(self._ids)
        spec = {"id": request_id, "procs": cgroup.procs_files if cgroup else [],
                "rlimits": limits.rlimits(memory_by_cgroup=cgroup is not None and cgroup.limits_memory)}
        fds = [child_end.fileno(), *(w for _, w in pipes)]
        forked = self._forks[request_id] = asyncio.get_running_loop().create_future()
        try:
            socket.send_fds(self._requests, [json.dumps(spec).encode()], fds)
        except OSError as err:
            self._forks.pop(request_id, None)
            await _release(cgroup, parent_end, pipes)
            raise ZygoteDied(f"the {self._label} zygote does not take requests: {err}") from None
        finally:
            child_end.close()
            for _, write_end in pipes:
                os.close(write_end)
        try:
            pid = await forked
        except BaseException:
            await _release(cgroup, parent_end, pipes)
            raise
        try:
            readers, (reader, writer) = await _connect(parent_end, pipes)
        except BaseException:  # cancelled with the child forked: it must not live on unseen
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await asyncio.shield(_release(cgroup, parent_end, []))
            raise
        worker = ForkedWorker(pid, AsyncChannel(reader, writer, max_frame), cgroup, label, *(readers or [None, None]))
        self._children[pid] = worker
        if pid in self._early_exits:  # it ended before we got here
            worker._exited(self._early_exits.pop(pid))
        return worker

    async def stop(self) -> None:
        """Kill the zygote; the workers it forked are killed with it."""
        await self._process.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._requests.close()

    async def _read_events(self) -> None:
        try:
            while True:
                event = json.loads(await self._process.channel.recv())
                if "pid" in event:
                    future = self._forks.pop(event["id"], None)
                    if future is not None and not future.done():
                        future.set_result(event["pid"])
                elif "failed" in event:
                    future = self._forks.pop(event["id"], None)
                    if future is not None and not future.done():
                        future.set_exception(ZygoteDied(f"the zygote could not fork: {event['failed']}"))
                elif "exited" in event:
                    child = self._children.pop(event["exited"], None)
                    if child is None:
                        self._early_exits[event["exited"]] = event["status"]
                    else:
                        child._exited(event["status"])
        except (ChannelClosed, ValueError):
            pass
        finally:
            log.warning("the zygote ended", zygote=self._label, workers=len(self._children))
            for future in self._forks.values():
                if not future.done():
                    future.set_exception(ZygoteDied(f"the {self._label} zygote ended"))
            for child in list(self._children.values()):  # orphans: end them, and say so
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                if child._cgroup is not None:
                    await asyncio.to_thread(child._cgroup.kill_all)
                child._exited(-signal.SIGKILL)
            self._children.clear()


async def _connect(parent_end: socket.socket, pipes):
    """Streams over a forked child's channel and output pipes."""
    loop = asyncio.get_running_loop()
    readers = []
    for read_end, _ in pipes:
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), os.fdopen(read_end, "rb"))
        readers.append(reader)
    return readers, await asyncio.open_unix_connection(sock=parent_end, limit=1 << 20)


async def _release(cgroup, parent_end: socket.socket, pipes) -> None:
    """Undo a fork request that did not happen."""
    parent_end.close()
    for read_end, _ in pipes:
        os.close(read_end)
    if cgroup is not None:
        await asyncio.to_thread(cgroup.destroy)


# -- the zygote process -------------------------------------------------------------------------

def _serve(module_name: str) -> None:
    module = importlib.import_module(module_name)  # the expensive part, paid once
    # Everything imported so far is shared with the children until written; the collector would
    # write to it (and so copy it, page by page) the first time it runs in each child.
    gc.freeze()
    events = BlockingChannel()
    requests = socket.socket(fileno=_REQUEST_FD)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    selector = selectors.DefaultSelector()
    selector.register(requests, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is requests:
                message, fds, _, _ = socket.recv_fds(requests, _MAX_REQUEST, 8)
                if not message:
                    return  # the service closed its end
                spec = json.loads(message)
                try:
                    pid = os.fork()
                except OSError as err:
                    for fd in fds:
                        os.close(fd)
                    events.send(json.dumps({"id": spec["id"], "failed": str(err)}).encode())
                    continue
                if pid == 0:
                    _child(module, spec, fds)  # never returns
                for fd in fds:
                    os.close(fd)
                events.send(json.dumps({"id": spec["id"], "pid": pid}).encode())
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
        while True:  # reap every child that has ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            events.send(json.dumps({"exited": pid, "status": os.waitstatus_to_exitcode(status)}).encode())


def _child(module, spec: dict, fds: list[int]) -> None:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # its own session and process group: killpg(pid) ends it and what it starts
        try:
            for procs in spec["procs"]:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
        except OSError:  # its cgroup is gone: the service gave up on this fork; never run uncapped
            os._exit(1)
        channel, *output = fds
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(output[0] if output else null, 1)
        os.dup2(output[1] if len(output) > 1 else null, 2)
        os.dup2(channel, 3)
        os.closerange(4, os.sysconf("SC_OPEN_MAX"))  # the zygote's sockets and pipes too
        for name, value in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdio
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        code = module.main() or 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - a child must never return into the zygote's loop
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    _serve(sys.argv[1])
