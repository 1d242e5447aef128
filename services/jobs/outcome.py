"""How a job's run ended, as the runner reports it to the executor."""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a run ended: a final state, the reason (JobReason name without its prefix), the result.
    retry: the host died on its own; the job may run again if it has attempts left.
    dependency_down: a service the job needs was down (message says which and why); the job waits
    in the queue and runs again, whatever its attempts. logs: the program's last log lines (level,
    text, time), not stored yet: they are committed with the end."""

    state: str
    reason: str = ""
    message: str = ""
    result: str | None = None
    retry: bool = False
    dependency_down: bool = False
    logs: tuple[tuple[str, str, dt.datetime], ...] = ()
