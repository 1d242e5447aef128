"""The cancellation signal of one running job, shared by the event loop and the program's thread.

A Python thread cannot be killed, so stopping a built-in program is cooperative: the executor sets
the signal (a user cancelled the job, its time limit passed, the service is stopping) and the
program's backend and messenger raise JobCancelled at its next device call or publish.
"""

from __future__ import annotations

import asyncio
import threading


class JobCancelled(Exception):  # a signal, not an error of the program
    """Raised inside a program's thread when its job was told to stop."""


class JobControl:
    """Set once from the event loop; read from any thread, awaited on the loop."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._event = asyncio.Event()

    def cancel(self) -> None:
        """Tell the program to stop; call on the event loop."""
        self._flag.set()
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()

    def check(self) -> None:
        """Raise JobCancelled if the program should stop; call from the program's thread."""
        if self._flag.is_set():
            raise JobCancelled("the job was cancelled or ran out of time")

    async def wait(self) -> None:
        """Return once the job was told to stop."""
        await self._event.wait()
