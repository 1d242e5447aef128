"""The audit sink's group commit: events written as they come, callers told when theirs is durable,
and nothing lost while the auth service is unreachable; events as an outbox keeps them."""

from __future__ import annotations

import asyncio

import pytest

from qruntime_kit.audit import AuditEvent, AuditSink, event_from_json, event_json


def event(n: int) -> AuditEvent:
    return AuditEvent(time=float(n), account_id="a", subject="u", instance="i", action="x", method="/m",
                      outcome="success", code="OK", reason="", request_id=f"r{n}", target="")


def test_events_are_written_at_once_and_those_arriving_meanwhile_go_in_the_next_batch():
    batches: list[list[str]] = []

    async def main():
        release = asyncio.Event()

        async def write(events):
            batches.append([e.request_id for e in events])
            await release.wait()  # a slow write: what comes meanwhile waits for the next one

        sink = AuditSink(write)
        first = sink.add(event(1))
        await asyncio.sleep(0)  # the writer takes the first event alone
        later = [sink.add(event(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0.01)
        assert not first.done() and not any(f.done() for f in later)
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), 5)
        await sink.close()

    asyncio.run(main())
    assert batches == [["r1"], ["r2", "r3", "r4"]]


def test_events_wait_while_the_writer_fails_and_are_written_once_it_is_back():
    written: list[str] = []

    async def main():
        failures = 3

        async def write(events):
            nonlocal failures
            if failures:
                failures -= 1
                raise ConnectionError("auth is down")
            written.extend(e.request_id for e in events)

        sink = AuditSink(write)
        sink.RETRY_SECONDS = 0.01
        done = sink.add(event(1))
        await asyncio.sleep(0)
        assert not done.done()
        await asyncio.wait_for(done, 5)
        await sink.close()

    asyncio.run(main())
    assert written == ["r1"]


def test_an_event_kept_as_json_comes_back_the_same_and_a_write_at_once_says_when_it_failed():
    assert event_from_json(event_json(event(7))) == event(7)

    async def down(events):
        raise ConnectionError("auth is down")

    async def main():
        with pytest.raises(ConnectionError):  # an outbox keeps what was not written
            await AuditSink(down).write_at_once([event(8)])

    asyncio.run(main())
