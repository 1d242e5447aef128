"""CPU priority for a worker that leads a session of its own, as the kernel actually applies it.

Linux kernels that group tasks by session (autogroup, the default on Debian and Ubuntu) share the CPU
fairly between sessions first and apply a process's nice value only within its session. Workers
start sessions of their own (workers.py, the sandbox), so nice alone does nothing for them there:
measured here, a nice 19 spinner in its own session took half of a CPU from a nice 0 one. The nice
value of the session's group (/proc/self/autogroup) is what counts, and a process may set it for its
own session without privilege.

Where the kernel does not group by session (autogroup off, or the suite in a cgroup of its own, as
under systemd or Docker) this changes nothing and the process's nice value is what applies.
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

from .logging import get_logger

log = get_logger("kit.priority")
_AUTOGROUP = Path("/proc/self/autogroup")
# Unprivileged, the kernel takes one change of any session's nice value per 100 ms, machine-wide
# (EAGAIN otherwise): a change waits its turn for up to this long.
_PATIENCE_SECONDS = 2.0
_RETRY_SECONDS = 0.02


def set_session_niceness(niceness: int, *, wait: bool = True) -> None:
    """Give this process's session the nice value `niceness` (0 to 19). Call it only from a process
    whose session is its own (a worker's, the sandbox's), never from the service's. With wait=False
    the change is made from a background thread, so the caller does not wait for its turn."""
    if not 0 <= niceness <= 19:
        raise ValueError(f"a session's nice value here is 0 to 19, not {niceness}")
    if wait:
        _set(niceness)
    else:
        threading.Thread(target=_set, args=(niceness,), name="session-niceness", daemon=True).start()


def _set(niceness: int) -> None:
    deadline = time.monotonic() + _PATIENCE_SECONDS
    while True:
        try:
            _AUTOGROUP.write_text(str(niceness))
            return
        except FileNotFoundError:  # a kernel without autogroup: nice values apply as they are
            return
        except OSError as err:
            if err.errno != errno.EAGAIN or time.monotonic() > deadline:
                log.warning("could not set the session's CPU priority", niceness=niceness, error=str(err))
                return
        time.sleep(_RETRY_SECONDS)
