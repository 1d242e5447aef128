"""The stop signal of one running job: set by the executor, awaited by the runner.

A user cancelled the job (possibly through another replica), or the service is stopping: the runner
kills the job's program host at once; the program is never asked to stop.
"""

from __future__ import annotations

import asyncio


class JobControl:
    """Set once, on the event loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def cancel(self) -> None:
        """Tell the runner to stop the program."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        """Return once the job was told to stop."""
        await self._event.wait()
