"""JobStore on SQLite files (and PostgreSQL when it is reachable): creation, claims, endings, paging."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import hashlib
import json
import uuid

import pytest
import sqlalchemy as sa

from qruntime_jobs import store as store_module
from qruntime_jobs.filters import JobFilter, parse_filter
from qruntime_jobs.store import CANCELLED, DONE, ERROR, QUEUED, RUNNING, JobStore
from qruntime_kit.errors import FailedPrecondition, InvalidArgument, NotFound

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
A, B = "crn:a", "crn:b"


def new_job(store: JobStore, instance: str = A, request_id: str = "", program_id: str = "sampler", **fields):
    values = {"instance": instance, "owner": "user-1", "program_id": program_id, "runtime": "BUILTIN",
              "backend": "ibmq_qasm_simulator", "inputs": '{"shots": 10}', "log_level": "INFO",
              "max_execution_seconds": 60.0, "request_id": request_id}
    return store.create(**{**values, **fields})


def test_create_stores_a_queued_job(store):
    job, created = new_job(store)
    assert created and job.state == QUEUED and job.reason == "" and job.start_time is None
    assert job.create_time.tzinfo is not None
    assert store.get(job.id, inputs=None) == job
    assert store.get(job.id, instance=A, inputs=None) == job
    # Inputs are read only when asked for (they may be hundreds of MiB), and only up to a size if so asked.
    assert store.get(job.id).inputs is None and store.get(job.id, inputs=13).inputs == '{"shots": 10}'


def test_create_with_a_used_request_id_returns_the_first_job(store):
    first, created = new_job(store, request_id="key-1")
    again, created_again = new_job(store, request_id="key-1", program_id="estimator")
    assert created and not created_again
    assert again == first and again.program_id == "sampler"
    other, created_other = new_job(store, instance=B, request_id="key-1")  # keys are per instance
    assert created_other and other.id != first.id
    assert new_job(store)[1] and new_job(store)[1]  # no request id: never a clash


def test_get_is_scoped_to_the_instance(store):
    job, _ = new_job(store, instance=A)
    for job_id, instance in ((job.id, B), ("nope", A)):
        with pytest.raises(NotFound) as caught:
            store.get(job_id, instance=instance)
        assert caught.value.reason == "JOB_NOT_FOUND"


def test_load_by_backend_counts_the_jobs_waiting_and_running_on_each(store):
    for backend in ("simulator_mps", "simulator_mps", "ibmq_qasm_simulator"):
        new_job(store, backend=backend)
    assert store.load_by_backend() == ({"simulator_mps": 2, "ibmq_qasm_simulator": 1}, {})
    running = store.claim_next_queued("runner-1")  # the oldest, on simulator_mps, runs now
    assert store.load_by_backend() == ({"simulator_mps": 1, "ibmq_qasm_simulator": 1}, {"simulator_mps": 1})
    store.end_attempt(running.id, running.attempts, "DONE", result_json="{}")
    assert store.load_by_backend() == ({"simulator_mps": 1, "ibmq_qasm_simulator": 1}, {})


def test_claim_takes_the_oldest_queued_job_once(store):
    first, _ = new_job(store)
    second, _ = new_job(store)
    claimed = store.claim_next_queued("runner-1")
    assert claimed.id == first.id and claimed.state == RUNNING and claimed.start_time is not None
    assert store.claim_next_queued("runner-1").id == second.id
    assert store.claim_next_queued("runner-1") is None


def test_claim_is_exclusive_across_two_stores_on_one_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = JobStore(url), JobStore(url)
    ids = {new_job(one)[0].id for _ in range(40)}

    def drain(store: JobStore, runner: str) -> list[str]:
        claimed = []
        while (job := store.claim_next_queued(runner)) is not None:
            claimed.append(job.id)
        return claimed

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(drain, (one, two, one, two), ("r1", "r2", "r3", "r4")))
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == sorted(ids)  # every job once, none twice
    one.close(), two.close()


def test_finish_stores_the_result_with_the_final_state(store):
    job, _ = new_job(store)
    store.claim_next_queued("r1")
    assert store.end_attempt(job.id, 1, DONE, result_json='{"x": 1}')
    done = store.get(job.id)
    assert done.state == DONE and done.end_time is not None
    assert store.get_result(job.id) == '{"x": 1}'
    assert not store.finish(job.id, ERROR, "PROGRAM_ERROR", "late")  # an ended job stays ended
    assert store.get(job.id).state == DONE


def test_finish_does_not_overwrite_a_cancelled_job(store):
    job, _ = new_job(store)
    store.claim_next_queued("r1")
    cancelled = store.cancel(job.id, instance=A)
    assert cancelled.state == CANCELLED and cancelled.reason == "CANCELLED_BY_USER"
    assert not store.end_attempt(job.id, 1, DONE, result_json='"late"')
    assert store.get(job.id).state == CANCELLED
    assert store.get_result(job.id) is None


def test_cancel_an_ended_job_is_a_failed_precondition(store):
    job, _ = new_job(store)
    store.cancel(job.id)
    with pytest.raises(FailedPrecondition) as caught:
        store.cancel(job.id)
    assert caught.value.reason == "JOB_ALREADY_FINAL"
    assert caught.value.metadata["state"] == "JOB_STATE_CANCELLED"
    with pytest.raises(NotFound):
        store.cancel("nope")


def test_delete_only_ended_jobs_with_their_results_and_logs(store):
    job, _ = new_job(store)
    with pytest.raises(FailedPrecondition) as caught:
        store.delete(job.id, instance=A)
    assert caught.value.reason == "JOB_NOT_FINAL"
    store.claim_next_queued("r1")
    store.append_log(job.id, "INFO", "hello")
    store.add_interim_result(job.id, "{}")
    store.finish(job.id, DONE, result_json="1")
    with pytest.raises(NotFound):
        store.delete(job.id, instance=B)
    store.delete(job.id, instance=A)
    with pytest.raises(NotFound):
        store.get(job.id)
    assert store.get_result(job.id) is None
    assert store.list_logs(job.id, page_size=10) == ([], "")
    assert not store.append_log(job.id, "INFO", "after the job was deleted")


def test_list_is_newest_first_filtered_and_paged(store):
    ids = [new_job(store, program_id="sampler" if i % 2 else "estimator")[0].id for i in range(7)]
    new_job(store, instance=B)
    seen, token = [], ""
    while True:
        page, token = store.list(A, page_size=3, page_token=token)
        assert len(page) <= 3
        seen.extend(j.id for j in page)
        if not token:
            break
    assert seen == ids[::-1]
    samplers, _ = store.list(A, page_size=50, where=JobFilter(programs=frozenset({"sampler"})))
    assert [j.id for j in samplers] == [i for k, i in enumerate(ids) if k % 2][::-1]
    store.cancel(ids[0])
    cancelled, _ = store.list(A, page_size=50, where=JobFilter(states=frozenset({CANCELLED})))
    assert [j.id for j in cancelled] == [ids[0]]
    assert len(store.list(None, page_size=50)[0]) == 8


def test_list_pages_apart_jobs_created_in_the_same_microsecond(store, monkeypatch):
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    monkeypatch.setattr(store_module, "utcnow", lambda: moment)
    ids = {new_job(store)[0].id for _ in range(5)}
    first, token = store.list(A, page_size=2)
    second, token = store.list(A, page_size=2, page_token=token)
    third, token = store.list(A, page_size=2, page_token=token)
    assert token == ""
    assert {j.id for j in first + second + third} == ids


def test_list_pages_end_early_rather_than_outgrow_one_message(store, monkeypatch):
    monkeypatch.setattr(store_module, "LIST_PAGE_BYTES", 250)
    small = [new_job(store, inputs="x" * 100)[0].id for _ in range(3)]
    huge = new_job(store, inputs="x" * 1000)[0].id
    pages, token = [], ""
    while True:
        page, token = store.list(A, page_size=50, page_token=token, inputs=None)
        pages.append([j.id for j in page])
        if not token:
            break
    assert pages == [[huge], small[:0:-1], small[:1]]  # one job alone may pass the budget


def test_a_tampered_page_token_is_invalid(store):
    with pytest.raises(InvalidArgument) as caught:
        store.list(A, page_size=2, page_token="bm90IGEgdG9rZW4")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    with pytest.raises(InvalidArgument):
        store.list_logs("x", page_size=2, page_token="eyJhZnRlciI6ICJ4In0=")  # {"after": "x"}


def test_logs_and_interim_results_page_oldest_first(store):
    job, _ = new_job(store)
    for i in range(5):
        store.append_log(job.id, "INFO", f"line {i}")
        store.add_interim_result(job.id, f'{{"i": {i}}}')
    logs, token = store.list_logs(job.id, page_size=2)
    more, token = store.list_logs(job.id, page_size=10, page_token=token)
    assert [e.message for e in logs + more] == [f"line {i}" for i in range(5)] and token == ""
    results, token = store.list_interim_results(job.id, page_size=4)
    rest, token = store.list_interim_results(job.id, page_size=4, page_token=token)
    assert [r.data for r in results + rest] == [f'{{"i": {i}}}' for i in range(5)] and token == ""


def test_requeue_running_puts_back_stale_or_own_jobs(store):
    stale, _ = new_job(store)
    fresh, _ = new_job(store)
    store.claim_next_queued("dead-replica")
    store.claim_next_queued("live-replica")
    with store._engine.begin() as conn:  # the dead replica stopped renewing its claim a minute ago
        conn.execute(store_module.job_table.update().where(store_module.job_table.c.id == stale.id)
                     .values(heartbeat_time=store_module.utcnow() - dt.timedelta(seconds=60)))
    assert store.renew_leases("live-replica", {fresh.id: 1}) == set()
    assert [j.id for j in store.requeue_running(stale_after=30)] == [stale.id]
    assert store.get(stale.id).state == QUEUED and store.get(stale.id).start_time is None
    assert store.get(fresh.id).state == RUNNING
    store.cancel(fresh.id)
    assert store.renew_leases("live-replica", {fresh.id: 1}) == {fresh.id}  # cancelled elsewhere: stop it
    again, _ = new_job(store)
    store.claim_next_queued("me")  # takes the requeued stale job first
    store.claim_next_queued("me")
    assert len(store.requeue_running(runner="me")) == 2
    assert store.get(again.id).state == QUEUED


@pytest.fixture
def postgres_store():
    """A JobStore on the PostgreSQL server, in a schema of its own that is dropped afterwards."""
    schema = f"jobs_test_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as err:
        engine.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {type(err.orig).__name__}")
    store = JobStore(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    yield store
    store.close()
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.mark.postgres
def test_postgres_store_claims_exclusively_and_keeps_cancelled_jobs(postgres_store):
    store = postgres_store
    first, _ = new_job(store, request_id="k")
    assert new_job(store, request_id="k") == (first, False)
    ids = {first.id} | {new_job(store)[0].id for _ in range(29)}

    def drain(runner: str) -> list[str]:
        claimed = []
        while (job := store.claim_next_queued(runner)) is not None:
            claimed.append(job.id)
        return claimed

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        claimed = [j for result in pool.map(drain, ("r1", "r2", "r3", "r4")) for j in result]
    assert sorted(claimed) == sorted(ids)
    store.cancel(first.id)
    assert not store.finish(first.id, DONE, result_json="1")
    assert store.get(first.id).state == CANCELLED
    page, token = store.list(A, page_size=20)
    rest, token = store.list(A, page_size=20, page_token=token)
    assert len(page) + len(rest) == 30 and token == ""
    assert store.get(first.id).create_time.tzinfo is not None
    long_trace, _ = new_job(store, trace_id="r" * 1000)  # a caller's x-request-id has no length limit
    assert store.get(long_trace.id).trace_id == "r" * 256


def test_filters_select_by_every_field(store):
    early, _ = new_job(store, program_id="estimator", tags=["a", "b"])
    mid, _ = new_job(store, backend="ibm_lima", tags=["a"], owner="user-2")
    late, _ = new_job(store)
    store.claim_next_queued("r")  # early is RUNNING now

    def ids(text: str) -> list[str]:
        return [j.id for j in store.list(A, page_size=50, where=parse_filter(text, caller="user-1"))[0]]

    assert ids("state = RUNNING") == [early.id]
    assert ids("state IN (queued, JOB_STATE_RUNNING)") == [late.id, mid.id, early.id]
    assert ids("program = estimator") == [early.id]
    assert ids('backend = "ibm_lima"') == [mid.id]
    assert ids("owner = me") == [late.id, early.id] and ids("owner = user-2") == [mid.id]
    assert ids("tags:a") == [mid.id, early.id] and ids("tags:a AND tags:b") == [early.id] and ids("tags:c") == []
    after = f'"{mid.create_time.isoformat()}"'
    assert ids(f"create_time >= {after}") == [late.id, mid.id] and ids(f"create_time > {after}") == [late.id]
    assert ids(f"create_time < {after}") == [early.id] and ids(f"create_time <= {after}") == [mid.id, early.id]
    # The same instant written in another zone selects the same jobs (the store keeps UTC).
    elsewhere = f'"{mid.create_time.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()}"'
    assert ids(f"create_time >= {elsewhere}") == [late.id, mid.id] and ids(f"create_time < {elsewhere}") == [early.id]
    assert ids("state = QUEUED AND state = RUNNING") == []  # two terms on one field must both hold
    assert ids("program = sampler and tags:a") == [mid.id]


def walk(store: JobStore, text: str, instance: str | None = A, page_size: int = 3) -> list[str]:
    """The ids of every job the filter lists, page after page."""
    where, seen, token = parse_filter(text, caller="user-1"), [], ""
    while True:
        page, token = store.list(instance, page_size=page_size, page_token=token, where=where)
        assert len(page) <= page_size
        seen.extend(j.id for j in page)
        if not token:
            return seen


@pytest.mark.parametrize("tag_count_cap", [1, 10_000])  # tags t and u: from either tag's index; from the rarer
def test_a_tags_filter_lists_its_jobs_newest_first_with_the_other_terms_page_by_page(
        database_url, monkeypatch, tag_count_cap):
    monkeypatch.setattr(store_module, "TAG_COUNT_CAP", tag_count_cap)
    start, now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), [None]
    monkeypatch.setattr(store_module, "utcnow", lambda: now[0])
    store = JobStore(database_url)
    try:
        tagged = []  # three jobs a second: those of one second are paged apart by id
        for i in range(12):
            now[0] = start + dt.timedelta(seconds=i // 3)
            tagged.append(new_job(store, program_id="estimator" if i % 2 else "sampler",
                                  tags=["t", "u"] if i % 4 == 0 else ["t"])[0])
            if i % 3 == 1:  # another instance's job with the same tags, created in the same second
                new_job(store, instance=B, tags=["t", "u"])
        new_job(store, tags=["u"]), new_job(store)
        for job in tagged[1:3]:
            store.cancel(job.id)
        newest = [j.id for j in sorted(tagged, key=lambda j: (j.create_time, j.id), reverse=True)]
        second = [None, *(f'"{(start + dt.timedelta(seconds=k)).isoformat()}"' for k in range(1, 4))]

        def of(ids: set[str]) -> list[str]:
            return [i for i in newest if i in ids]

        for page_size in (1, 2, 3, 5, 100):
            assert walk(store, "tags:t", page_size=page_size) == newest
        assert walk(store, "tags:t AND tags:u") == of({j.id for j in tagged[::4]})
        assert walk(store, "tags:t AND program = estimator") == of({j.id for j in tagged[1::2]})
        assert walk(store, "tags:t AND state = CANCELLED") == of({tagged[1].id, tagged[2].id})
        assert walk(store, f"tags:t AND create_time >= {second[1]} AND create_time < {second[3]}") == of(
            {j.id for j in tagged[3:9]})
        assert walk(store, f"tags:t AND create_time > {second[2]} AND program = sampler") == of(
            {j.id for j in tagged[9:] if j.program_id == "sampler"})
        assert walk(store, "tags:t AND tags:v") == [] and walk(store, "tags:v") == []
        # Another instance's jobs never show, whatever their tags and times; the suite's services see all.
        assert len(walk(store, "tags:t", instance=B)) == 4 and len(walk(store, "tags:t", instance=None)) == 16
    finally:
        store.close()


def test_a_job_whose_tags_are_replaced_is_listed_under_its_new_tags_only(database_url):
    store = JobStore(database_url)
    try:
        first, second, third = (new_job(store, tags=["old"])[0] for _ in range(3))
        other, _ = new_job(store, instance=B, tags=["old"])
        store.set_tags(second.id, ["new", "more"])
        store.set_tags(other.id, ["new"])
        assert walk(store, "tags:old") == [third.id, first.id]
        assert walk(store, "tags:new") == [second.id] and walk(store, "tags:more AND tags:new") == [second.id]
        assert walk(store, "tags:new", instance=B) == [other.id]
        store.set_tags(second.id, [])
        assert walk(store, "tags:new") == [] and store.get(second.id).tags == ()
    finally:
        store.close()


def test_a_tags_filter_walks_its_tags_index_newest_first(store):
    """On SQLite, a page of a tag's jobs reads that tag's index from the page's position, joining each
    entry's job: no sort, no walk of the instance's jobs (PostgreSQL chooses by its statistics)."""
    captured = []
    sa.event.listen(store._engine, "before_cursor_execute",
                    lambda conn, cursor, statement, parameters, *_: captured.append((statement, parameters)))
    job, _ = new_job(store, tags=["x", "y"])
    new_job(store, tags=["x"])
    _, token = store.list(A, page_size=1, where=parse_filter("tags:x AND state = QUEUED", caller="u"))
    captured.clear()
    store.list(A, page_size=1, page_token=token, where=parse_filter("tags:x AND state = QUEUED", caller="u"))
    statement, parameters = captured[-1]
    with store._engine.connect() as conn:
        plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    assert any("walked USING COVERING INDEX jobs_job_tag_instance_created (tag=? AND instance=? AND create_time<?)"
               in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_a_page_holds_each_jobs_tags_and_its_inputs_when_asked(database_url):
    store = JobStore(database_url)
    try:
        job, _ = new_job(store, tags=["b", "a"])
        listed, _ = store.list(A, page_size=10)
        assert listed == [store.get(job.id)] and listed[0].tags == ("a", "b") and listed[0].inputs is None
        assert store.list(A, page_size=10, inputs=None)[0] == [store.get(job.id, inputs=None)]
    finally:
        store.close()


def test_page_tokens_are_bound_to_their_filter_and_signed(store):
    for _ in range(3):
        new_job(store, tags=["x"])
    where = parse_filter("tags:x", caller="u")
    _, token = store.list(A, page_size=1, where=where)
    assert store.list(A, page_size=1, page_token=token, where=where)[0]
    with pytest.raises(InvalidArgument) as caught:
        store.list(A, page_size=1, page_token=token, where=parse_filter("tags:y", caller="u"))
    assert caught.value.reason == "INVALID_PAGE_TOKEN" and "another filter" in caught.value.message
    position = json.loads(base64.urlsafe_b64decode(token))
    position["t"] = "2099-01-01T00:00:00+00:00"  # a well-formed token with another position
    forged = base64.urlsafe_b64encode(json.dumps(position).encode()).decode()
    with pytest.raises(InvalidArgument):
        store.list(A, page_size=1, page_token=forged, where=where)


def test_tags_are_replaced(store):
    job, _ = new_job(store, tags=["b", "a"])
    assert store.get(job.id).tags == ("a", "b")
    assert store.set_tags(job.id, ["c"]).tags == ("c",)
    assert store.set_tags(job.id, []).tags == ()
    with pytest.raises(NotFound):
        store.set_tags(job.id, ["d"], instance=B)


def test_every_change_is_a_numbered_event(store):
    job, _ = new_job(store)
    store.claim_next_queued("r1")
    store.append_logs(job.id, [("INFO", "one", dt.datetime.now(dt.UTC)), ("INFO", "two", dt.datetime.now(dt.UTC))])
    store.requeue_attempt(job.id, 1, why="its worker died")
    store.claim_next_queued("r2")
    store.add_attempt_interim_result(job.id, 2, '{"i": 1}')
    store.end_attempt(job.id, 2, DONE, result_json="{}", logs=[("INFO", "last", dt.datetime.now(dt.UTC))])
    events = store.events_after(job.id, 0)
    assert [e.number for e in events] == list(range(1, 10))
    assert [(e.kind, e.state or e.text, e.attempt) for e in events] == [
        ("STATE", QUEUED, 0), ("STATE", RUNNING, 1), ("LOG", "one", 0), ("LOG", "two", 0),
        ("STATE", QUEUED, 1), ("STATE", RUNNING, 2), ("INTERIM", '{"i": 1}', 0), ("LOG", "last", 0),
        ("STATE", DONE, 2),
    ]
    assert events[4].text == "its worker died" and events[-1].is_final
    assert [e.number for e in store.events_after(job.id, 6)] == [7, 8, 9]
    assert store.get(job.id).events == 9


def test_usage_sums_the_running_time_of_ended_jobs(store):
    done, _ = new_job(store)
    cancelled, _ = new_job(store)
    store.claim_next_queued("r")
    store.end_attempt(done.id, 1, DONE, result_json="{}")
    store.cancel(cancelled.id)  # never started: not charged
    now = dt.datetime.now(dt.UTC)
    rows = store.usage(A, now - dt.timedelta(hours=1), now + dt.timedelta(seconds=1))
    by_state = {r.state: r for r in rows}
    assert by_state[DONE].jobs == 1 and by_state[DONE].usage_seconds == store.get(done.id).usage_seconds > 0
    assert by_state[CANCELLED].usage_seconds == 0
    assert store.usage(B, now - dt.timedelta(hours=1), now) == []


def test_nothing_is_added_to_a_job_after_its_end(store):
    job, _ = new_job(store)
    store.claim_next_queued("r")
    store.cancel(job.id)
    assert not store.append_log(job.id, "INFO", "a late line of the cancelled program")
    assert not store.add_interim_result(job.id, "{}")
    assert [e.kind for e in store.events_after(job.id, 0)] == ["STATE"] * 3


def test_a_results_bytes_are_cut_out_by_the_database_and_its_digest_kept_when_written(database_url):
    store = JobStore(database_url)
    try:
        text = '{"greeting": "héllo wörld € 😀", "n": ' + "1" * 50 + "}"
        encoded = text.encode()
        job, _ = new_job(store)
        running = store.claim_next_queued("runner-1")
        store.end_attempt(running.id, running.attempts, "DONE", result_json=text)
        digest = store.result_digest(job.id)
        assert (digest.size, digest.sha256) == (len(encoded), hashlib.sha256(encoded).digest())
        for offset, length in ((0, 5), (15, 9), (len(encoded) - 3, 10), (len(encoded), 4)):
            assert store.result_part(job.id, offset, length) == (digest, encoded[offset:offset + length])
        # A result written before digests were kept gets one on first read, and keeps it.
        with store._engine.begin() as conn:
            conn.execute(store_module.result_table.update().values(size_bytes=None, sha256=None))
        assert store.result_digest(job.id) == digest
        with store._engine.connect() as conn:
            assert conn.execute(sa.select(store_module.result_table.c.sha256)).scalar() == digest.sha256.hex()
        assert store.result_digest("no-such-job").size == 0
    finally:
        store.close()


def test_result_chunks_end_on_character_boundaries_and_refuse_offsets_inside_one(store, monkeypatch):
    from qruntime_jobs import servicer

    monkeypatch.setattr(servicer, "RESULT_CHUNK_BYTES", 7)
    text = "é€😀" * 5  # 2-, 3- and 4-byte characters
    job, _ = new_job(store)
    running = store.claim_next_queued("runner-1")
    store.end_attempt(running.id, running.attempts, "DONE", result_json=text)
    offset, chunks = 0, []

    def chunk(offset: int) -> tuple[str, int]:
        digest, data = store.result_part(job.id, offset, servicer.RESULT_CHUNK_BYTES + 1)
        return servicer._chunk(digest, data, offset, servicer.RESULT_CHUNK_BYTES, "result")

    while True:
        text_chunk, offset = chunk(offset)
        chunks.append(text_chunk)
        if not offset:
            break
    assert "".join(chunks) == text and all(0 < len(c.encode()) <= 7 for c in chunks)
    with pytest.raises(InvalidArgument) as caught:
        chunk(1)  # the second byte of "é"
    assert caught.value.reason == "INVALID_OFFSET"


def test_a_job_that_ran_before_it_was_stored_is_stored_ended_with_its_whole_history(database_url):
    store = JobStore(database_url)
    started = dt.datetime(2026, 12, 2, 12, 0, 0, 250_000, tzinfo=dt.UTC)
    ended = store_module.EndedRun(
        runner="replica-1", start_time=started, end_time=started + dt.timedelta(milliseconds=4), state=DONE,
        result_json='{"counts": [{"00": 5}]}', logs=(("INFO", "sampling 1 circuit(s)", started),
                                                     ("INFO", "sampled 1 circuit(s)", started)))
    job, created = new_job(store, job_id="0123456789abcdef0123", ended=ended, tags=["quick"])
    assert created and job.id == "0123456789abcdef0123" and store.get(job.id, inputs=None) == job
    assert (job.state, job.attempts, job.start_time, job.end_time) == (DONE, 1, started, ended.end_time)
    assert job.create_time == started and job.usage_seconds == pytest.approx(0.004)
    events = store.events_after(job.id, 0)
    assert [(e.number, e.kind, e.state or e.text, e.attempt) for e in events] == [
        (1, "STATE", QUEUED, 0), (2, "STATE", RUNNING, 1), (3, "LOG", "sampling 1 circuit(s)", 0),
        (4, "LOG", "sampled 1 circuit(s)", 0), (5, "STATE", DONE, 1)]
    assert store.get_result(job.id) == ended.result_json
    assert store.result_part(job.id, 0, 100)[1] == ended.result_json.encode()
    assert [j.id for j in store.list(A, page_size=10, where=parse_filter("tags:quick", caller="user-1"))[0]] == [job.id]
    assert store.claim_next_queued("replica-2") is None  # nothing left to run
