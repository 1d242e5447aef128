"""JobWatch over a real store: replay, live following, resumption, queue positions, fan-out, deletion."""

from __future__ import annotations

import asyncio
import datetime as dt

from qruntime.jobs.v1 import job_pb2
from qruntime.jobs.v1 import jobs_service_pb2 as pb

from qruntime_jobs import watch as watch_module
from qruntime_jobs.store import DONE, JobStore
from qruntime_jobs.watch import JobWatch
from qruntime_kit.decoding import Encoded


def new_job(store: JobStore, **fields):
    values = {"instance": "crn:a", "owner": "u", "program_id": "sampler", "runtime": "BUILTIN",
              "backend": "b", "inputs": "{}", "log_level": "INFO", "max_execution_seconds": 60.0}
    return store.create(**{**values, **fields})[0]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def is_position(event: job_pb2.JobEvent) -> bool:
    return event.WhichOneof("event") == "queue_position"


def decoded(message: Encoded) -> list[job_pb2.JobEvent]:
    """The events of one message follow() yields, as WatchJob's client reads them."""
    return list(pb.WatchJobResponse.FromString(message.data).events)


async def collect(watch: JobWatch, job_id: str, after: int = 0) -> list[job_pb2.JobEvent]:
    return [event async for message in watch.follow(job_id, after) for event in decoded(message)]


def numbers(items) -> list[int]:
    return [i.sequence for i in items if not is_position(i)]


def run(store, scenario, poll: float = 0.05):
    async def main():
        watch = JobWatch(store, poll_seconds=poll)
        watch.start()
        try:
            return await asyncio.wait_for(scenario(watch), 20)
        finally:
            await watch.stop()

    return asyncio.run(main())


def test_a_watch_follows_a_job_live_and_ends_with_its_final_state(store):
    job = new_job(store)

    async def scenario(watch):
        follower = asyncio.create_task(collect(watch, job.id))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(store.claim_next_queued, "r")
        for i in range(3):
            await asyncio.to_thread(store.append_log, job.id, "INFO", f"line {i}")
            await asyncio.sleep(0.01)
        await asyncio.to_thread(store.add_interim_result, job.id, '{"step": 1}')
        await asyncio.to_thread(store.end_attempt, job.id, 1, DONE, result_json="{}")
        return await follower

    items = run(store, scenario, poll=10)  # no polling to lean on: the store's commits wake the watch
    assert numbers(items) == list(range(1, 8))
    assert [what(e) for e in items if not is_position(e)] == [
        ("state_change", job_pb2.JOB_STATE_QUEUED), ("state_change", job_pb2.JOB_STATE_RUNNING),
        ("log", "line 0"), ("log", "line 1"), ("log", "line 2"), ("interim_result", '{"step": 1}'),
        ("state_change", job_pb2.JOB_STATE_DONE)]


def what(event: job_pb2.JobEvent) -> tuple[str, object]:
    kind = event.WhichOneof("event")
    detail = {"state_change": event.state_change.state, "log": event.log.message,
              "interim_result": event.interim_result.data}[kind]
    return kind, detail


def test_a_resumed_watch_misses_nothing_and_repeats_nothing(store):
    job = new_job(store)
    store.claim_next_queued("r")
    store.append_logs(job.id, [("INFO", f"line {i}", now()) for i in range(10)])

    async def scenario(watch):
        seen = []
        async for message in watch.follow(job.id, 0):  # the first connection drops after 5 events
            seen.extend(e for e in decoded(message) if not is_position(e))
            if len(seen) >= 5:
                break
        last = seen[4].sequence
        resumed = asyncio.create_task(collect(watch, job.id, after=last))
        await asyncio.to_thread(store.append_log, job.id, "INFO", "more")
        await asyncio.to_thread(store.end_attempt, job.id, 1, DONE, result_json="{}")
        return seen[:5], await resumed

    first, rest = run(store, scenario)
    assert numbers(first) + numbers(rest) == list(range(1, 15))


def test_watching_an_ended_job_replays_it_and_closes(store):
    job = new_job(store)
    store.claim_next_queued("r")
    store.append_logs(job.id, [("INFO", f"line {i}", now()) for i in range(1200)])  # more than one read
    store.end_attempt(job.id, 1, DONE, result_json="{}")
    items = run(store, lambda watch: collect(watch, job.id))
    assert numbers(items) == list(range(1, 1204))
    assert run(store, lambda watch: collect(watch, job.id, after=1203)) == []  # nothing after its end


def test_a_queued_job_hears_its_place_in_the_queue(store):
    _, second, mine = new_job(store), new_job(store), new_job(store)

    async def scenario(watch):
        follower = asyncio.create_task(collect(watch, mine.id))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(store.claim_next_queued, "r")
        await asyncio.sleep(0.2)
        await asyncio.to_thread(store.cancel, second.id)
        await asyncio.sleep(0.2)
        await asyncio.to_thread(store.cancel, mine.id)
        return await follower

    items = run(store, scenario)
    assert [i.queue_position.jobs_ahead for i in items if is_position(i)] == [2, 1, 0]
    assert all(i.sequence == 1 for i in items if is_position(i))  # snapshots, not history


def test_a_thousand_watchers_share_one_read_per_change(store, monkeypatch):
    job = new_job(store)
    store.claim_next_queued("r")
    reads = []
    events_after = store.events_after
    monkeypatch.setattr(store, "events_after", lambda *a, **k: reads.append(a) or events_after(*a, **k))

    async def scenario(watch):
        followers = [asyncio.create_task(collect(watch, job.id)) for _ in range(1000)]
        await asyncio.sleep(0.5)
        for i in range(5):
            await asyncio.to_thread(store.append_log, job.id, "INFO", f"line {i}")
            await asyncio.sleep(0.05)
        await asyncio.to_thread(store.end_attempt, job.id, 1, DONE, result_json="{}")
        return await asyncio.gather(*followers)

    results = run(store, scenario, poll=10)
    assert all(numbers(r) == list(range(1, 9)) for r in results)
    assert len(reads) < 20  # one per change (and the first), not one per watcher


def test_a_crowd_hears_of_a_burst_in_few_messages_and_a_lone_watcher_at_once(store):
    crowded, lone = new_job(store), new_job(store)
    store.claim_next_queued("r"), store.claim_next_queued("r")

    async def sizes(watch, job_id) -> list[int]:  # the number of events in each message
        return [len(decoded(message)) async for message in watch.follow(job_id, 0)]

    async def scenario(watch):
        crowd = [asyncio.create_task(sizes(watch, crowded.id)) for _ in range(200)]
        heard = asyncio.Queue()

        async def follow_lone():
            async for message in watch.follow(lone.id, 0):
                for event in decoded(message):
                    heard.put_nowait(event.sequence)

        follower = asyncio.create_task(follow_lone())
        await asyncio.sleep(0.3)
        for i in range(20):  # 20 commits, as fast as they come
            await asyncio.to_thread(store.append_log, crowded.id, "INFO", f"line {i}")
        await asyncio.to_thread(store.end_attempt, crowded.id, 1, DONE, result_json="{}")
        while heard.qsize() < 2:  # QUEUED, RUNNING
            await asyncio.sleep(0.01)
        delays = []
        for i in range(3):
            started = asyncio.get_running_loop().time()
            await asyncio.to_thread(store.append_log, lone.id, "INFO", f"line {i}")
            await heard.get()
            delays.append(asyncio.get_running_loop().time() - started)
        await asyncio.to_thread(store.end_attempt, lone.id, 1, DONE, result_json="{}")
        await follower
        return await asyncio.gather(*crowd), delays

    crowd, delays = run(store, scenario, poll=10)  # no polling to lean on
    assert all(sum(messages) == 23 for messages in crowd)  # QUEUED, RUNNING, 20 lines, DONE: all of them
    assert all(len(messages) <= 8 for messages in crowd)  # 200 watchers: woken 0.2 s apart, not 22 times
    assert max(delays) < 1  # one watcher: woken at each commit


def test_a_watcher_left_behind_replays_from_the_store_and_misses_nothing(store, monkeypatch):
    monkeypatch.setattr(watch_module, "CACHED_EVENTS", 5)
    job = new_job(store)
    store.claim_next_queued("r")

    async def scenario(watch):
        slow = watch.follow(job.id, 0)
        first = decoded(await anext(slow))  # then it reads nothing for a while (a slow client)
        other = asyncio.create_task(collect(watch, job.id))
        for i in range(30):
            await asyncio.to_thread(store.append_log, job.id, "INFO", f"line {i}")
        await asyncio.sleep(0.3)  # the topic's latest events no longer reach back to where the slow one is
        await asyncio.to_thread(store.end_attempt, job.id, 1, DONE, result_json="{}")
        rest = [event async for message in slow for event in decoded(message)]
        return first + rest, await other

    slow, other = run(store, scenario, poll=10)
    assert numbers(slow) == numbers(other) == list(range(1, 34))


def test_watchers_replaying_take_few_threads_at_once(store, monkeypatch):
    monkeypatch.setattr(watch_module, "CACHED_EVENTS", 5)
    job = new_job(store)
    store.claim_next_queued("r")
    store.append_logs(job.id, [("INFO", f"line {i}", now()) for i in range(1200)])  # 3 reads' worth each
    store.end_attempt(job.id, 1, DONE, result_json="{}")
    reading, most = 0, 0
    events_after = store.events_after

    def counted(*args, **kwargs):
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        try:
            return events_after(*args, **kwargs)
        finally:
            reading -= 1

    monkeypatch.setattr(store, "events_after", counted)

    async def scenario(watch):
        first = asyncio.create_task(collect(watch, job.id, after=1200))  # the topic starts past the 5 latest
        await asyncio.sleep(0.2)
        return await asyncio.gather(first, *(collect(watch, job.id) for _ in range(30)))

    _, *replays = run(store, scenario)
    assert all(numbers(r) == list(range(1, 1204)) for r in replays)
    assert most <= watch_module.REPLAYS_AT_ONCE + 1  # the replays, and the topic's own reader
