"""CPU time used by a process and its descendants (a suite's services, simulation workers, program
hosts), read from /proc: the benches' one measure of what the services spent."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


class CpuMeter:
    """CPU time used by process root and its descendants, sampled from /proc every poll_seconds while it
    runs (a host killed with its sandbox is nobody's child to reap, so its time would vanish from its
    parent's), or only when asked (poll_seconds None: no thread in the measuring process, for processes
    that live through the measurement). Each process counts what it used while watched; read it as the
    difference of two seconds()."""

    def __init__(self, root: int, poll_seconds: float | None = 0.02) -> None:
        self._root = root
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = None
        if poll_seconds is not None:
            self._thread = threading.Thread(target=self._watch, args=(poll_seconds,), daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        pids, seen = [self._root], set()
        while pids:
            pid = pids.pop()
            seen.add(pid)
            with contextlib.suppress(OSError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks = int(fields[11]) + int(fields[12])  # utime, stime
                self._first.setdefault(pid, ticks if self._last else 0)
                self._last[pid] = ticks
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pids += [int(c) for c in (task / "children").read_text().split() if int(c) not in seen]

    def _watch(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            self._sample()

    def seconds(self) -> float:
        """What the processes used since the meter started."""
        self._sample()
        return sum(self._last[pid] - self._first[pid] for pid in self._last) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
