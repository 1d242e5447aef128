"""Following jobs as they run, for WatchJob: one topic per watched job, shared by all its watchers.

A job's history is its numbered events in the store (store.py). A watcher first replays the events
after the number it already has, then follows new ones until the job's final state. The store tells
this replica the moment it commits events (JobStore.listen), so a job run here is followed at once;
a job run by another replica is noticed at the topic's next poll. Each topic reads new events once
for all its watchers and keeps the latest in memory, so a thousand watchers of one job cost one query
per change, not a thousand; a watcher far behind (a replay) reads its pages from the store itself.

While the job is queued the topic also polls its place in the queue, which watchers receive as
snapshots (not history: they are not numbered, and a reconnecting watcher gets the current one).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from qruntime_kit.logging import get_logger

from .store import QUEUED, STATE, EventRecord, JobStore, job_not_found

log = get_logger("jobs.watch")
CACHED_EVENTS = 2000  # per topic: the latest events kept for watchers that are up to date ...
CACHED_BYTES = 8 * 1024 * 1024  # ... and at most about this much of their text
READ_BATCH = 500  # events read from the store at a time


@dataclasses.dataclass(frozen=True)
class Position:
    """A queued job's place: jobs_ahead queued jobs were created before it. after: the number of the
    last event before this snapshot."""

    jobs_ahead: int
    after: int


class _Topic:
    """One watched job: its latest events, its queue position, and a signal for its watchers."""

    def __init__(self) -> None:
        self.watchers = 0
        self.cache: list[EventRecord] = []  # consecutive events, the latest ones known
        self.cached_bytes = 0
        self.known = 0  # the number of the last event read from the store
        # The store may hold events not read yet: set by each commit and each poll that saw more,
        # cleared as a read starts, so a commit during a read makes another read.
        self.stale = True
        self.position: int | None = None  # queued jobs ahead, while queued
        self.gone = False  # the job was deleted
        self.ended = False  # the job's final state has been read
        self.lock = asyncio.Lock()  # one read of the store at a time
        self.poller: asyncio.Task | None = None
        self._changed = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        """Tell the watchers something changed (they check what)."""
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()

    def changed(self) -> asyncio.Future:
        """Done at the next wake(); await it shielded (it is shared by every watcher)."""
        return self._changed

    @property
    def base(self) -> int:
        """Events numbered after base are in the cache (or not written yet)."""
        return self.cache[0].number - 1 if self.cache else self.known


class JobWatch:
    """Follows jobs for their watchers; start() it on the service's event loop."""

    def __init__(self, store: JobStore, *, poll_seconds: float = 0.5) -> None:
        self._store = store
        self._poll = poll_seconds
        self._topics: dict[str, _Topic] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Listen to the store's commits (from whatever thread makes them)."""
        self._loop = asyncio.get_running_loop()
        self._store.listen(self._committed)

    async def stop(self) -> None:
        for topic in self._topics.values():
            if topic.poller is not None:
                topic.poller.cancel()
        await asyncio.gather(*(t.poller for t in self._topics.values() if t.poller), return_exceptions=True)

    def _committed(self, job_id: str) -> None:
        loop = self._loop
        if loop is not None and job_id in self._topics:  # a racy peek: _changed re-checks on the loop
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._changed, job_id)

    def _changed(self, job_id: str) -> None:
        topic = self._topics.get(job_id)
        if topic is not None:
            topic.stale = True
            topic.wake()

    async def follow(self, job_id: str, after: int) -> AsyncIterator[list[EventRecord | Position]]:
        """Batches of the job's events numbered after `after` (and queue positions while it is queued),
        until its final state; NotFound if the job is deleted meanwhile."""
        topic = self._join(job_id)
        sent_position = None
        try:
            while True:
                changed = topic.changed()
                events = await self._read(job_id, topic, after)
                ends = next((i for i, e in enumerate(events) if e.is_final), None)
                if ends is not None:
                    events = events[:ends + 1]  # nothing follows a job's end
                batch: list[EventRecord | Position] = list(events)
                if events:
                    after = events[-1].number
                if topic.position is not None and topic.position != sent_position and topic.known <= after:
                    sent_position = topic.position
                    batch.append(Position(topic.position, after))
                if batch:
                    yield batch
                if ends is not None:
                    return
                if events:
                    continue  # maybe more to read
                if topic.ended and topic.known <= after:  # its final state was before `after`
                    return
                if topic.gone:
                    raise job_not_found(job_id)
                await asyncio.shield(changed)
        finally:
            self._leave(job_id, topic)

    def _join(self, job_id: str) -> _Topic:
        topic = self._topics.get(job_id)
        if topic is None:
            topic = self._topics[job_id] = _Topic()
            topic.poller = asyncio.create_task(self._poll_topic(job_id, topic), name=f"watch-{job_id}")
        topic.watchers += 1
        return topic

    def _leave(self, job_id: str, topic: _Topic) -> None:
        topic.watchers -= 1
        if topic.watchers == 0 and self._topics.get(job_id) is topic:
            del self._topics[job_id]
            if topic.poller is not None:
                topic.poller.cancel()

    async def _read(self, job_id: str, topic: _Topic, after: int) -> list[EventRecord]:
        """The events after `after`: from the topic's cache when it has them, else from the store."""
        if after < topic.base:  # a replay of what the cache no longer (or not yet) holds
            return await asyncio.to_thread(self._store.events_after, job_id, after, limit=READ_BATCH)
        async with topic.lock:
            while topic.stale and not topic.ended:
                topic.stale = False
                new = await asyncio.to_thread(self._store.events_after, job_id, topic.known, limit=READ_BATCH)
                if not new:
                    break  # a commit that added nothing we can see (a deletion)
                topic.cache.extend(new)
                topic.cached_bytes += sum(len(e.text) for e in new)
                topic.known = new[-1].number
                topic.stale = topic.stale or len(new) == READ_BATCH  # maybe more than one read holds
                for event in new:
                    if event.kind == STATE:
                        topic.ended = event.is_final
                        if event.state != QUEUED:
                            topic.position = None
                while len(topic.cache) > CACHED_EVENTS or topic.cached_bytes > CACHED_BYTES and len(topic.cache) > 1:
                    topic.cached_bytes -= len(topic.cache.pop(0).text)
        start = bisect.bisect_right(topic.cache, after, key=lambda e: e.number)
        return topic.cache[start:start + READ_BATCH]

    async def _poll_topic(self, job_id: str, topic: _Topic) -> None:
        """Notice what another replica wrote, the job's deletion, and its place in the queue."""
        while True:
            try:
                state = await asyncio.to_thread(self._store.watch_state, job_id)
            except Exception:  # the database may be back at the next poll
                log.exception("could not poll a watched job", job_id=job_id)
                state = None
            if state is not None:
                exists, events, position = state
                if not exists:
                    topic.gone = True
                    topic.wake()
                    return
                if events > topic.known or position != topic.position:
                    topic.stale = topic.stale or events > topic.known
                    topic.position = position
                    topic.wake()
            await asyncio.sleep(self._poll)
