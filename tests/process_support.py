"""What the tests ask of processes they did not start themselves."""

from __future__ import annotations


def alive(pid: int) -> bool:
    """Whether pid runs; a zombie waiting for its parent (or init) to reap it counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return False
