"""Input uploads in the JobStore, on SQLite and PostgreSQL: chunks go in order and a chunk sent again is
harmless, a wrong offset, other bytes or an overflow are refused, an upload is its caller's alone, a
job consumes it once, it expires and is swept, and an instance's unfinished uploads are capped. And
the inputs of a job that the store reads only when asked, and in parts."""

from __future__ import annotations

import concurrent.futures
import hashlib
import time

import pytest
import sqlalchemy as sa

from qruntime_jobs import store as store_module
from qruntime_jobs.store import JobStore, ResultDigest
from qruntime_kit.errors import InvalidArgument, NotFound, ResourceExhausted

A, B = "crn:a", "crn:b"
CONTENT = b'{"numbers": [' + b",".join(str(i).encode() for i in range(2000)) + b"]}"


@pytest.fixture
def jobs(database_url):
    store = JobStore(database_url)
    yield store
    store.close()


def new_upload(store: JobStore, content: bytes = CONTENT, instance: str = A, owner: str = "user-1", **fields):
    values = {"instance": instance, "owner": owner, "content": "JSON_INPUTS", "total_bytes": len(content),
              "sha256": hashlib.sha256(content).digest(), "lifetime_seconds": 3600.0}
    return store.create_upload(**{**values, **fields})


def send(store: JobStore, upload_id: str, offset: int, data: bytes, instance: str = A, owner: str = "user-1"):
    return store.add_upload_chunk(upload_id, instance=instance, owner=owner, offset=offset, data=data)


def refusal(call, *args, **kwargs) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call(*args, **kwargs)
    return caught.value


def create_job(store: JobStore, upload_id: str, owner: str = "user-1"):
    return store.create(instance=A, owner=owner, program_id="hello-world", runtime="BUILTIN",
                        backend="ibmq_qasm_simulator", inputs=CONTENT.decode(), log_level="INFO",
                        max_execution_seconds=60.0, inputs_digest=ResultDigest.of(CONTENT),
                        input_upload_id=upload_id)


def test_chunks_go_in_order_and_one_sent_again_changes_nothing(jobs):
    upload = new_upload(jobs)
    assert (upload.received_bytes, upload.total_bytes, upload.content) == (0, len(CONTENT), "JSON_INPUTS")
    assert upload.expire_time > upload.create_time
    first = send(jobs, upload.id, 0, CONTENT[:1000])
    assert first.received_bytes == 1000
    assert send(jobs, upload.id, 0, CONTENT[:1000]).received_bytes == 1000  # a retry whose answer was lost
    assert send(jobs, upload.id, 1000, CONTENT[1000:5000]).received_bytes == 5000
    done = send(jobs, upload.id, 5000, CONTENT[5000:])
    assert done.received_bytes == done.total_bytes == len(CONTENT)
    assert send(jobs, upload.id, 1000, CONTENT[1000:5000]).received_bytes == len(CONTENT)
    stored, content = jobs.upload_content(upload.id, instance=A, owner="user-1")
    assert content == CONTENT and stored.sha256 == hashlib.sha256(CONTENT).digest()


def test_a_wrong_offset_other_bytes_and_an_overflow_are_refused_saying_what_is_expected(jobs):
    upload = new_upload(jobs)
    send(jobs, upload.id, 0, CONTENT[:1000])
    gap = refusal(send, jobs, upload.id, 2000, CONTENT[2000:3000])
    assert gap.reason == "INVALID_UPLOAD_OFFSET" and gap.metadata["received_bytes"] == "1000"
    assert "1000" in gap.message and gap.field_violations[0][0] == "offset"
    assert refusal(send, jobs, upload.id, 500, CONTENT[500:1500]).reason == "INVALID_UPLOAD_OFFSET"  # inside one
    differs = refusal(send, jobs, upload.id, 0, b"x" * 1000)
    assert differs.reason == "INPUT_UPLOAD_CHUNK_DIFFERS" and differs.metadata["offset"] == "0"
    overflow = refusal(send, jobs, upload.id, 1000, CONTENT[1000:] + b" ")
    assert overflow.reason == "INPUT_UPLOAD_OVERFLOW" and overflow.metadata["total_bytes"] == str(len(CONTENT))
    assert jobs.get_upload(upload.id, instance=A, owner="user-1").received_bytes == 1000  # nothing changed


def test_an_upload_is_its_callers_alone(jobs):
    upload = new_upload(jobs)
    for instance, owner in ((B, "user-1"), (A, "user-2")):
        with pytest.raises(NotFound) as caught:
            send(jobs, upload.id, 0, CONTENT[:10], instance=instance, owner=owner)
        assert caught.value.reason == "INPUT_UPLOAD_NOT_FOUND"
        with pytest.raises(NotFound):
            jobs.upload_content(upload.id, instance=instance, owner=owner)
    with pytest.raises(NotFound):
        create_job(jobs, upload.id, owner="user-2")
    assert jobs.get_upload(upload.id, instance=A, owner="user-1").received_bytes == 0


def test_a_job_consumes_its_upload_once(jobs):
    upload = new_upload(jobs)
    send(jobs, upload.id, 0, CONTENT)
    job, created = create_job(jobs, upload.id)
    assert created and job.inputs_bytes == len(CONTENT)
    with pytest.raises(NotFound) as caught:
        create_job(jobs, upload.id)  # the second job is not stored either: its transaction rolled back
    assert caught.value.reason == "INPUT_UPLOAD_NOT_FOUND"
    assert [j.id for j in jobs.list(A, page_size=10)[0]] == [job.id]
    assert jobs.get_upload(upload.id, instance=A, owner="user-1", used=True).job_id == job.id  # for retries
    assert jobs.sweep_uploads() == 0  # none expired; the used one's chunks are deleted
    with jobs._engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store_module.upload_chunk_table)).scalar() == 0


def test_two_jobs_racing_for_one_upload_make_one_job(jobs):
    upload = new_upload(jobs)
    send(jobs, upload.id, 0, CONTENT)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: _outcome(create_job, jobs, upload.id), range(4)))
    assert sorted(outcomes) == ["INPUT_UPLOAD_NOT_FOUND"] * 3 + ["created"]


def _outcome(call, *args) -> str:
    try:
        call(*args)
    except NotFound as err:
        return err.reason
    return "created"


def test_an_upload_expires_and_is_swept_with_its_chunks(jobs):
    upload = new_upload(jobs, lifetime_seconds=0.3)
    send(jobs, upload.id, 0, CONTENT[:100])
    lasting = new_upload(jobs)
    time.sleep(0.4)
    with pytest.raises(NotFound) as caught:
        send(jobs, upload.id, 100, CONTENT[100:200])
    assert caught.value.reason == "INPUT_UPLOAD_NOT_FOUND" and "expired" in caught.value.message
    assert jobs.sweep_uploads() == 1 and jobs.sweep_uploads() == 0
    with jobs._engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store_module.upload_chunk_table)).scalar() == 0
    assert jobs.get_upload(lasting.id, instance=A, owner="user-1").id == lasting.id


def test_an_instances_unfinished_uploads_are_capped(jobs):
    cap = 2 * len(CONTENT) + 10
    first = new_upload(jobs, max_instance_bytes=cap)
    new_upload(jobs, max_instance_bytes=cap)
    with pytest.raises(ResourceExhausted) as caught:
        new_upload(jobs, max_instance_bytes=cap)
    err = caught.value
    assert err.reason == "TOO_MANY_UPLOAD_BYTES" and err.metadata["held_bytes"] == str(2 * len(CONTENT))
    assert err.metadata["limit_bytes"] == str(cap) and 3500 < err.retry_after <= 3600
    new_upload(jobs, instance=B, max_instance_bytes=cap)  # another instance's are its own
    send(jobs, first.id, 0, CONTENT)
    create_job(jobs, first.id)  # a job used one: room again
    new_upload(jobs, max_instance_bytes=cap)


def test_a_jobs_inputs_are_read_only_when_asked_and_in_parts(jobs):
    text = '{"word": "é€😀"}'
    job, _ = jobs.create(instance=A, owner="user-1", program_id="hello-world", runtime="BUILTIN",
                         backend="ibmq_qasm_simulator", inputs=text, log_level="INFO", max_execution_seconds=60.0,
                         inputs_digest=ResultDigest.of(text.encode()))
    size = len(text.encode())
    assert jobs.get(job.id).inputs is None and jobs.get(job.id, inputs=size - 1).inputs is None
    assert jobs.get(job.id, inputs=size).inputs == text == jobs.list(A, page_size=1, inputs=size)[0][0].inputs
    digest, part = jobs.inputs_part(job.id, 12, 3)
    assert digest == ResultDigest.of(text.encode()) and part == text.encode()[12:15]
    with jobs._engine.begin() as conn:  # as a job stored before digests were kept
        conn.execute(store_module.job_table.update().values(inputs_bytes=None, inputs_sha256=None))
    assert jobs.inputs_part(job.id, 0, 1)[0] is None and jobs.get(job.id, inputs=1).inputs == text
    jobs.keep_inputs_digest(job.id, digest)
    assert jobs.inputs_part(job.id, 0, 1) == (digest, b"{")
