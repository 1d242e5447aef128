"""The cyclic garbage collector in the long-running processes: what a process loaded to start (modules,
classes, the libraries' tables: about 260,000 objects in the embedded suite) is never garbage, so it is
kept out of the collector's scans."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move every object alive now out of the collector's generations for good. Scanned with them, a full
    collection of the serving suite took 100-150 ms (one every few thousand jobs under load, a stall for
    the calls it fell on). Not collected first: a collection takes 36 ms in a simulation worker, whose
    start a job may be waiting for, and finds almost nothing (23 of its 82,654 objects, measured)."""
    gc.freeze()
