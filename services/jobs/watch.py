"""Following jobs as they run, for WatchJob: one topic per watched job, shared by all its watchers.

A job's history is its numbered events in the store (store.py). A watcher first replays the events
after the number it already has, then follows new ones until the job's final state. Each watched job
has one topic, whose reader task alone reads the job's new events: the store tells this replica the
moment it commits events (JobStore.listen), so a job run here is followed at once; the reader's poll
notices what other replicas wrote. The reader encodes each event once, as WatchJob sends it, and keeps
the latest ones: a thousand watchers of one job cost one query and one encoding per change, and the
watchers at the same place send the very same bytes.

Fan-out on a budget. Sending a message down a stream costs the event loop tens of microseconds, and
the loop also runs this replica's jobs; so a topic wakes its watchers at most once per
FANOUT_PACE_SECONDS for each of its watchers (capped at FANOUT_PACE_MAX_SECONDS): a lone watcher
hears of an event at once, a thousand hear of a burst of events together, in one message each.

Nothing is queued per watcher. A watcher's place is the number of the last event it was sent; when
its stream is slow (its client reads slowly, or the network does) it simply asks again from there
once its last message is sent: from the topic's latest events while they still reach back that far,
else from the store (a replay), by number. So memory stays bounded whatever the watchers do, and
none misses or repeats an event. A watcher that replays reads its pages itself, REPLAYS_AT_ONCE at a
time in the replica.

While the job is queued the reader also polls its place in the queue, which watchers receive as
snapshots (not history: they carry the number of the last event before them and are not replayed; a
reconnecting watcher gets the current one).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
from collections.abc import AsyncIterator

from qruntime_kit.decoding import Encoded
from qruntime_kit.logging import get_logger

from .messages import queue_position_entry, watch_entry
from .store import FINAL_STATES, QUEUED, STATE, JobStore, job_not_found

log = get_logger("jobs.watch")
CACHED_EVENTS = 2000  # per topic: the latest events kept for watchers that are up to date ...
CACHED_BYTES = 8 * 1024 * 1024  # ... and at most about this much of their encoding
READ_BATCH = 500  # events read from the store at a time
MESSAGE_BYTES = 4 * 1024 * 1024  # a WatchJob message holds events up to about this size (one at least)
# Each watcher of a topic spaces its wake-ups by this much, so a topic sends at most 1,000 messages a
# second however many watch and however much the job logs: a message down a stream costs the service
# about 40 µs of CPU (bench/README.md, fan-out: 1,000 watchers took 0.04 cores), a few % of a core.
FANOUT_PACE_SECONDS = 0.001
FANOUT_PACE_MAX_SECONDS = 2.0  # ... but a watcher hears of an event within this much at most
WAKE_AT_ONCE = 50  # watchers woken in one turn of the event loop (a few milliseconds of its time)
# Replays read by watchers themselves at once, in this replica: each takes a thread of the event loop's
# default pool, which the service's calls and its jobs' writes use too; a thousand watchers reconnecting
# to a long job wait their turn rather than take every thread.
REPLAYS_AT_ONCE = 2
MEMO_POSITIONS = 64  # a topic remembers the messages after this many places, for the watchers there


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """One event of the job, encoded as an entry of a WatchJobResponse (messages.watch_entry)."""

    number: int
    state: str  # the state entered, for a state change; "" for other events
    data: bytes

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class _Topic:
    """One watched job: its latest events, encoded, its queue position, and a signal for its watchers."""

    def __init__(self) -> None:
        self.watchers = 0
        self.entries: list[_Entry] = []  # consecutive events, the latest ones read
        self.entry_bytes = 0
        self.known = 0  # the number of the last event read (or the last one skipped: see _poll_state)
        # The store may hold events not read yet: set by each commit here and each poll that saw more,
        # cleared as a read starts, so a commit during a read makes another read.
        self.stale = True
        self.committed = asyncio.Event()  # a commit here: the reader should read
        self.position: int | None = None  # queued jobs ahead, while queued ...
        self.position_at = 0  # ... as of this event: watchers get it once they have been sent that far
        self.gone = False  # the job was deleted
        self.ended = False  # the job's final state has been read
        self.reader: asyncio.Task | None = None
        self.wakes = 0  # how many times wake() began: a watcher that saw n need not wait if it moved on
        self._waiters: list[asyncio.Future] = []
        self._memo: tuple[int, dict] = (0, {})  # (known, after -> messages_after(after))

    @property
    def base(self) -> int:
        """Events numbered after base are in entries (or not read yet)."""
        return self.entries[0].number - 1 if self.entries else self.known

    async def changed(self, seen: int) -> None:
        """Return at the next wake(), or at once if there was one since `seen` (wakes)."""
        if self.wakes == seen:
            waiter = asyncio.get_running_loop().create_future()  # each its own: a cancelled one spoils no other
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:  # its stream closed: not kept until a wake that may never come
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                raise

    async def wake(self) -> None:
        """Tell the watchers something changed (they check what), WAKE_AT_ONCE at a time: the loop serves
        its other work between them, instead of waiting for a thousand watchers' messages in one go."""
        self.wakes += 1
        waiters, self._waiters = self._waiters, []
        for start in range(0, len(waiters), WAKE_AT_ONCE):
            if start:
                await asyncio.sleep(0)
            for waiter in waiters[start:start + WAKE_AT_ONCE]:
                if not waiter.done():
                    waiter.set_result(None)

    def add(self, entries: list[_Entry]) -> None:
        self.entries.extend(entries)
        self.entry_bytes += sum(len(e.data) for e in entries)
        self.known = entries[-1].number
        while len(self.entries) > CACHED_EVENTS or self.entry_bytes > CACHED_BYTES and len(self.entries) > 1:
            self.entry_bytes -= len(self.entries.pop(0).data)

    def messages_after(self, after: int) -> tuple[list[Encoded], int, bool]:
        """The messages of the cached events after `after` (at most READ_BATCH), the number of their last
        event and whether it is the job's end; the same objects for every watcher at that place."""
        known, memo = self._memo
        if known != self.known:
            memo = {}
            self._memo = (self.known, memo)
        found = memo.get(after)
        if found is None:
            start = bisect.bisect_right(self.entries, after, key=lambda e: e.number)
            found = _messages(self.entries[start:start + READ_BATCH], after)
            if len(memo) < MEMO_POSITIONS:
                memo[after] = found
        return found


def _messages(entries: list[_Entry], after: int) -> tuple[list[Encoded], int, bool]:
    """entries up to the job's end as WatchJob messages of at most about MESSAGE_BYTES each; the number
    of the last event in them (`after` for none) and whether it is the job's end."""
    messages, parts, size, last, ends = [], [], 0, after, False
    for entry in entries:
        if parts and size + len(entry.data) > MESSAGE_BYTES:
            messages.append(Encoded(b"".join(parts)))
            parts, size = [], 0
        parts.append(entry.data)
        size += len(entry.data)
        last, ends = entry.number, entry.final
        if ends:  # nothing follows a job's end
            break
    if parts:
        messages.append(Encoded(b"".join(parts)))
    return messages, last, ends


class JobWatch:
    """Follows jobs for their watchers; start() it on the service's event loop."""

    def __init__(self, store: JobStore, *, poll_seconds: float = 0.5) -> None:
        self._store = store
        self._poll = poll_seconds
        self._topics: dict[str, _Topic] = {}
        self._replays = asyncio.Semaphore(REPLAYS_AT_ONCE)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Listen to the store's commits (from whatever thread makes them)."""
        self._loop = asyncio.get_running_loop()
        self._store.listen(self._committed)

    async def stop(self) -> None:
        readers = [t.reader for t in self._topics.values() if t.reader is not None]
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    def _committed(self, job_id: str) -> None:
        loop = self._loop
        if loop is not None and job_id in self._topics:  # a racy peek: _changed re-checks on the loop
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._changed, job_id)

    def _changed(self, job_id: str) -> None:
        topic = self._topics.get(job_id)
        if topic is not None:
            topic.stale = True
            topic.committed.set()

    async def follow(self, job_id: str, after: int) -> AsyncIterator[Encoded]:
        """WatchJob's messages: the job's events numbered after `after` (and queue positions while it is
        queued), until its final state; NotFound if the job is deleted meanwhile."""
        topic = self._join(job_id)
        sent_position = None
        try:
            while True:
                seen = topic.wakes
                if after < topic.base:  # a replay of what the topic no longer (or not yet) holds
                    async with self._replays:
                        entries = await asyncio.to_thread(self._read, job_id, after)
                    messages, last, ends = _messages(entries, after)
                else:
                    messages, last, ends = topic.messages_after(after)
                read_any, after = last > after, last
                if topic.position is not None and topic.position != sent_position and topic.position_at <= after:
                    sent_position = topic.position
                    messages = [*messages[:-1], Encoded((messages[-1].data if messages else b"")
                                                        + queue_position_entry(topic.position, after))]
                for message in messages:
                    yield message
                if ends:
                    return
                if read_any:
                    continue  # maybe more to read
                if topic.ended and topic.known <= after:  # its final state was before `after`
                    return
                if topic.gone:
                    raise job_not_found(job_id)
                await topic.changed(seen)
        finally:
            self._leave(job_id, topic)

    def _join(self, job_id: str) -> _Topic:
        topic = self._topics.get(job_id)
        if topic is None:
            topic = self._topics[job_id] = _Topic()
            topic.reader = asyncio.create_task(self._follow_store(job_id, topic), name=f"watch-{job_id}")
        topic.watchers += 1
        return topic

    def _leave(self, job_id: str, topic: _Topic) -> None:
        topic.watchers -= 1
        if topic.watchers == 0 and self._topics.get(job_id) is topic:
            del self._topics[job_id]
            if topic.reader is not None:
                topic.reader.cancel()

    def replay_ended(self, job_id: str, after: int) -> list[Encoded] | None:
        """An ended job's messages after `after`, read at once, without a topic; None when there are
        more than one read takes (follow() pages them). Blocking: call it in a thread."""
        entries = self._read(job_id, after)
        return None if len(entries) == READ_BATCH else _messages(entries, after)[0]

    def _read(self, job_id: str, after: int) -> list[_Entry]:
        """The job's events after `after` (READ_BATCH at most), encoded; in a thread (it queries and encodes)."""
        return [_Entry(e.number, e.state if e.kind == STATE else "", watch_entry(e))
                for e in self._store.events_after(job_id, after, limit=READ_BATCH)]

    async def _follow_store(self, job_id: str, topic: _Topic) -> None:
        """The topic's reader: read what commits here, notice what other replicas wrote, the job's
        deletion and its place in the queue (polls), and wake the watchers, within the fan-out budget."""
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        while not topic.ended:
            if loop.time() >= next_poll:
                await self._poll_state(job_id, topic)
                next_poll = loop.time() + self._poll
                if topic.gone:
                    return
            if topic.stale and await self._read_new(job_id, topic):
                await asyncio.sleep(min(FANOUT_PACE_MAX_SECONDS, FANOUT_PACE_SECONDS * topic.watchers))
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_poll - loop.time())):
                    await topic.committed.wait()
            topic.committed.clear()

    async def _poll_state(self, job_id: str, topic: _Topic) -> None:
        try:
            state = await asyncio.to_thread(self._store.watch_state, job_id)
        except Exception:  # the database may be back at the next poll
            log.exception("could not poll a watched job", job_id=job_id)
            return
        exists, events, position = state
        if not exists:
            topic.gone = True
            await topic.wake()
            return
        if not topic.entries and topic.known == 0:
            # A topic starts with the job's latest events: older ones are for replays, which read them.
            topic.known = max(0, events - CACHED_EVENTS)
        if events > topic.known:
            topic.stale = True  # the reader reads them next, and then wakes the watchers
        if position != topic.position:
            topic.position, topic.position_at = position, events
            if not topic.stale:
                await topic.wake()

    async def _read_new(self, job_id: str, topic: _Topic) -> bool:
        """Read every event committed since the topic's last, then wake the watchers; whether any came."""
        read_any = False
        while topic.stale:
            topic.stale = False
            try:
                new = await asyncio.to_thread(self._read, job_id, topic.known)
            except Exception:  # the database may be back at the next poll
                log.exception("could not read a watched job's events", job_id=job_id)
                topic.stale = True
                break
            if not new:
                break  # a commit that added nothing we can see (a deletion)
            topic.add(new)
            read_any = True
            topic.stale = topic.stale or len(new) == READ_BATCH  # maybe more than one read holds
            for entry in new:
                if entry.state:
                    topic.ended = entry.final
                    if entry.state != QUEUED:  # the polls say where it stands again if it is requeued
                        topic.position = None
        if read_any:
            await topic.wake()
        return read_any
