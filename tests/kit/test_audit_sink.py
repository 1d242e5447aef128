"""The audit sink's group commit: events written as they come, callers told when theirs is durable,
and nothing lost while the auth service is unreachable; a handler's own write of its success event."""

from __future__ import annotations

import asyncio
import contextvars

from qruntime_kit.audit import PENDING_SUCCESS, AuditEvent, AuditSink, PendingSuccess, write_success_here


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


def test_a_handler_writes_its_success_event_once_and_a_failed_write_is_left_to_the_sink():
    written: list[str] = []
    failing = [True]

    def write_now(events):
        if failing[0]:
            raise OSError("the audit table is locked")
        written.extend(e.request_id for e in events)

    def in_a_handlers_thread(pending: PendingSuccess) -> bool:
        PENDING_SUCCESS.set(pending)
        write_success_here()
        write_success_here()  # a second call writes nothing more
        return pending.written

    pending = PendingSuccess(lambda: event(7), write_now)
    assert not contextvars.copy_context().run(in_a_handlers_thread, pending) and written == []
    failing[0] = False
    assert contextvars.copy_context().run(in_a_handlers_thread, pending) and written == ["r7"]
    write_success_here()  # no call in progress: nothing to write, no error
    assert written == ["r7"]
