"""Resource limits for worker processes: a hard memory cap, a process count cap, CPU and file limits.

A worker that runs a simulation, decodes a user's circuit or runs a user's program must be able to
die alone. The kernel enforces the caps, never Python: the cgroup `memory` and `pids` controllers
where the machine offers them (cgroup v1 here; v2 where its controllers are delegated), rlimits
always, and RLIMIT_AS as the memory cap where no memory controller can be used. A wrong memory
estimate then costs one worker, which the kernel's OOM killer ends inside its own cgroup.

Processes are put into their cgroups by the launcher (workers.py) before they exec, so nothing they
start escapes the caps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import time
from pathlib import Path

from .logging import get_logger

log = get_logger("kit.limits")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_names = itertools.count()


@dataclasses.dataclass(frozen=True)
class Limits:
    """Caps for one worker and everything it starts; None leaves that resource unlimited."""

    memory_bytes: int | None = None  # resident memory (cgroup), or address space (RLIMIT_AS) without one
    max_processes: int | None = None  # processes and threads at once (pids cgroup; RLIMIT_NPROC for non-root)
    cpu_seconds: int | None = None  # CPU time (RLIMIT_CPU): a last resort behind the runner's wall clock
    file_bytes: int | None = None  # the largest file it may write (RLIMIT_FSIZE)
    open_files: int | None = None  # open descriptors (RLIMIT_NOFILE)

    def rlimits(self, *, memory_by_cgroup: bool) -> dict[str, int]:
        """The rlimits the launcher sets, by resource name (RLIMIT_*), before it execs."""
        limits: dict[str, int] = {}
        if self.memory_bytes is not None and not memory_by_cgroup:
            limits["RLIMIT_AS"] = self.memory_bytes
        if self.max_processes is not None:
            limits["RLIMIT_NPROC"] = self.max_processes
        if self.cpu_seconds is not None:
            limits["RLIMIT_CPU"] = self.cpu_seconds
        if self.file_bytes is not None:
            limits["RLIMIT_FSIZE"] = self.file_bytes
        if self.open_files is not None:
            limits["RLIMIT_NOFILE"] = self.open_files
        limits["RLIMIT_CORE"] = 0  # a crashing worker must not write its memory (user data) to disk
        return limits


class Cgroup:
    """The cgroups of one worker (one folder per controller); made by create(), removed by destroy()."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders  # controller ("memory", "pids", or "" for a v2 unified folder) -> folder

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes its pid into to join."""
        return [str(folder / "cgroup.procs") for folder in self.folders.values()]

    @property
    def limits_memory(self) -> bool:
        return "memory" in self.folders or "" in self.folders

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this cgroup for passing its memory cap."""
        for controller, name, key in (("memory", "memory.oom_control", "oom_kill"), ("", "memory.events", "oom_kill")):
            folder = self.folders.get(controller)
            if folder is None:
                continue
            with contextlib.suppress(OSError):
                for line in (folder / name).read_text().splitlines():
                    field, _, value = line.partition(" ")
                    if field == key:
                        return int(value)
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in Path(procs).read_text().split())
        return sorted(found)

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, including any that left the worker's process group."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def destroy(self) -> None:
        """Kill what is left (processes that escaped their group) and remove the folders (a cgroup
        can only be removed once empty)."""
        self.kill_all()
        for folder in self.folders.values():
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # the last process is still being reaped
                    time.sleep(0.01)


def create_cgroup(label: str, limits: Limits) -> Cgroup | None:
    """Folders under this process's own cgroups capping memory and process count; None when this
    machine lets us use neither controller (then rlimits alone apply)."""
    if limits.memory_bytes is None and limits.max_processes is None:
        return None
    name = f"qruntime-{os.getpid()}-{label}-{next(_names)}"
    folders: dict[str, Path] = {}
    unified = _own_cgroup("")
    if unified is not None and (_CGROUP_ROOT / "cgroup.controllers").exists():  # a pure cgroup v2 machine
        folder = _make(unified / name, {"memory.max": limits.memory_bytes, "memory.swap.max": 0 if limits.memory_bytes
                                        else None, "pids.max": limits.max_processes})
        if folder is not None:
            folders[""] = folder
    else:
        for controller, settings in (
            ("memory", {"memory.limit_in_bytes": limits.memory_bytes}),
            ("pids", {"pids.max": limits.max_processes}),
        ):
            if all(v is None for v in settings.values()):
                continue
            parent = _own_cgroup(controller)
            folder = _make(parent / name, settings) if parent is not None else None
            if folder is not None:
                folders[controller] = folder
    return Cgroup(folders) if folders else None


def _own_cgroup(controller: str) -> Path | None:
    """The folder of this process's cgroup for controller ("" for the v2 hierarchy), if it is mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            base = _CGROUP_ROOT / controller if controller else _CGROUP_ROOT
            if controller == "" and not (base / "cgroup.controllers").exists():
                base = _CGROUP_ROOT / "unified"
            folder = base / path.lstrip("/")
            return folder if folder.is_dir() else None
    return None


def _make(folder: Path, settings: dict[str, int | None]) -> Path | None:
    try:
        folder.mkdir()
    except OSError as err:  # not root, read-only mount, or the controller is not delegated to us
        log.debug("cannot make a cgroup", folder=str(folder), error=str(err))
        return None
    try:
        for name, value in settings.items():
            if value is not None:
                (folder / name).write_text(str(value))
    except OSError as err:
        log.debug("cannot set a cgroup limit", folder=str(folder), error=str(err))
        with contextlib.suppress(OSError):
            folder.rmdir()
        return None
    return folder


def available_memory() -> int:
    """Bytes of memory this process could still use: the system's MemAvailable, or less where our
    own memory cgroup caps us lower."""
    available = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    own = _own_cgroup("memory")
    if own is not None:
        with contextlib.suppress(OSError, ValueError):
            cap = int((own / "memory.limit_in_bytes").read_text())
            used = int((own / "memory.usage_in_bytes").read_text())
            available = min(available or cap, max(0, cap - used))
    return available or 1 << 30
