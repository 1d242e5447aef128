"""Inputs past one CreateJob message, uploaded in chunks (CreateInputUpload, UploadInputChunk,
CreateJobRequest.input_upload_id) and read back in chunks (GetJobInputs), over a real socket with the
real auth, programs and devices services beside jobs.

The limits are lowered so the inputs stay small: one message carries 4 KiB of inputs here
(validation.MAX_INPUTS_BYTES), GetJobInputs answers 1,000-byte chunks, a program host gets its inputs in
1,000-byte parts, an upload holds 64 KiB at most and an instance's unfinished ones 100 KiB."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io

import grpc
import pytest
from google.protobuf import json_format
from qiskit import QuantumCircuit, qpy
from qruntime.encoding import dumps, loads
from qruntime.jobs.v1 import job_pb2
from qruntime.jobs.v1 import jobs_service_pb2 as pb
from qruntime.primitives.v1 import primitives_pb2 as ppb
from test_jobs_service import Caller

from qruntime_jobs import runner, servicer, uploads, validation
from qruntime_jobs import store as store_module

pytestmark = pytest.mark.slow

JSON, PRIMITIVE = pb.INPUT_UPLOAD_CONTENT_JSON_INPUTS, pb.INPUT_UPLOAD_CONTENT_PRIMITIVE_INPUT
MAX_UPLOAD, INSTANCE_UPLOADS = 64 * 1024, 100 * 1024


@dataclasses.dataclass
class World:
    me: Caller
    other: Caller  # another account's instance
    reader: Caller  # a Reader: no job.create
    suite: object

    @property
    def store(self) -> store_module.JobStore:
        return next(c for c in self.suite.suite.components if c.name == "jobs").store


@pytest.fixture(scope="module")
def module_world(start_module_suite):
    suite = start_module_suite("programs", "devices", "jobs", max_input_upload_bytes=MAX_UPLOAD,
                               max_upload_bytes_per_instance=INSTANCE_UPLOADS)
    other_key, other_instance = suite.make_user(instance_name="other")
    reader_key, reader_instance = suite.make_user(role="reader", instance_name="readers")
    callers = [Caller(suite, suite.token()), Caller(suite, suite.token(other_key, other_instance)),
               Caller(suite, suite.token(reader_key, reader_instance))]
    yield World(*callers, suite)
    for caller in callers:
        caller.channel.close()


@pytest.fixture
def world(module_world, monkeypatch):
    monkeypatch.setattr(validation, "MAX_INPUTS_BYTES", 4096)
    monkeypatch.setattr(servicer, "INPUTS_CHUNK_BYTES", 1000)
    monkeypatch.setattr(runner, "INPUTS_PART_BYTES", 1000)
    yield module_world
    with module_world.store._engine.begin() as conn:  # each test starts with the instance's cap free
        conn.execute(store_module.upload_chunk_table.delete())
        conn.execute(store_module.upload_table.delete())


def numbered_circuits(count: int) -> list[QuantumCircuit]:
    """Circuits whose outcome is their number in 3 bits: a result per circuit, in order, proves each arrived."""
    circuits = []
    for index in range(count):
        circuit = QuantumCircuit(3, 3, name=f"number-{index}")
        for bit in range(3):
            if (index % 8) >> bit & 1:
                circuit.x(bit)
        circuit.measure(range(3), range(3))
        circuits.append(circuit)
    return circuits


def upload(caller: Caller, content: bytes, kind=JSON, chunk: int = 3000, sha256: bytes | None = None) -> pb.InputUpload:
    """An upload of content, sent in chunks (the first one twice, as a retry whose answer was lost)."""
    made = caller.CreateInputUpload(pb.CreateInputUploadRequest(
        total_bytes=len(content), sha256=sha256 or hashlib.sha256(content).digest(), content=kind)).upload
    assert (made.received_bytes, made.max_chunk_bytes) == (0, uploads.MAX_CHUNK_BYTES)
    for offset in range(0, len(content), chunk):
        request = pb.UploadInputChunkRequest(upload_id=made.id, offset=offset, data=content[offset:offset + chunk])
        made = caller.UploadInputChunk(request).upload
        if offset == 0:
            assert caller.UploadInputChunk(request).upload.received_bytes == made.received_bytes
    assert made.received_bytes == len(content)
    return made


def create(caller: Caller, program_id: str, upload_id: str, **fields) -> job_pb2.Job:
    return caller.CreateJob(pb.CreateJobRequest(program_id=program_id, input_upload_id=upload_id,
                                                options=job_pb2.JobOptions(backend_name="ibmq_qasm_simulator"),
                                                **fields)).job


def inputs_chunks(caller: Caller, job_id: str) -> tuple[list[str], pb.GetJobInputsResponse]:
    chunks, offset = [], 0
    while True:
        response = caller.GetJobInputs(pb.GetJobInputsRequest(job_id=job_id, offset=offset))
        chunks.append(response.inputs)
        if not (offset := response.next_offset):
            return chunks, response


def test_inputs_past_one_message_go_up_in_chunks_and_the_program_gets_them_whole(world):
    inputs = dumps({"circuits": numbered_circuits(24), "shots": 50})
    content = inputs.encode()
    assert len(content) > 3 * 4096  # three messages' worth, and the host gets them in 13 parts
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="sampler", inputs=inputs))
    assert err.reason == "INPUTS_TOO_LARGE" and "CreateInputUpload" in err.message
    made = upload(world.me, content)
    assert made.expire_time.ToDatetime() - made.create_time.ToDatetime() == dt.timedelta(hours=1)
    job = create(world.me, "sampler", made.id)
    assert job.id and job.inputs == "" and job.omitted_inputs_bytes == 0  # the basic view
    done = world.me.wait(job.id)
    assert done.state == job_pb2.JOB_STATE_DONE, done.reason_message
    counts = world.me.result(job.id)["counts"]
    assert counts == [{format(i % 8, "03b"): 50} for i in range(24)]  # every circuit, in order

    full = world.me.GetJob(pb.GetJobRequest(job_id=job.id, view=job_pb2.JOB_VIEW_FULL)).job
    assert full.inputs == "" and full.omitted_inputs_bytes == len(content)  # larger than a Job message
    listed = world.me.ListJobs(pb.ListJobsRequest(view=job_pb2.JOB_VIEW_FULL, filter="program = sampler")).jobs
    assert [j.omitted_inputs_bytes for j in listed if j.id == job.id] == [len(content)]
    chunks, last = inputs_chunks(world.me, job.id)
    assert len(chunks) == -(-len(content) // 1000) and "".join(chunks) == inputs and not last.primitive
    assert (last.total_bytes, last.sha256) == (len(content), hashlib.sha256(content).digest())
    err = world.me.error("GetJobInputs", pb.GetJobInputsRequest(job_id=job.id, offset=len(content) + 1))
    assert err.reason == "INVALID_OFFSET"

    again = world.me.error("CreateJob", pb.CreateJobRequest(program_id="sampler", input_upload_id=made.id))
    assert (again.code, again.reason) == (grpc.StatusCode.NOT_FOUND, "INPUT_UPLOAD_NOT_FOUND")  # used once


def test_a_small_jobs_inputs_come_whole_in_the_full_view_and_from_get_job_inputs(world):
    job = world.me.create("hello-world", {"iterations": 1})
    full = world.me.GetJob(pb.GetJobRequest(job_id=job.id, view=job_pb2.JOB_VIEW_FULL)).job
    assert loads(full.inputs) == {"iterations": 1} and full.omitted_inputs_bytes == 0
    chunks, last = inputs_chunks(world.me, job.id)
    assert chunks == [full.inputs] and last.sha256 == hashlib.sha256(full.inputs.encode()).digest()
    assert world.other.error("GetJobInputs", pb.GetJobInputsRequest(job_id=job.id)).reason == "JOB_NOT_FOUND"


def test_a_retried_create_with_its_request_id_returns_the_job_its_upload_made(world):
    content = dumps({"iterations": 1}).encode() + b" " * 5000
    made = upload(world.me, content)
    first = create(world.me, "hello-world", made.id, request_id="upload-retry")
    assert create(world.me, "hello-world", made.id, request_id="upload-retry").id == first.id  # the same call again
    again = upload(world.me, content)  # a retry that uploaded the inputs again
    assert create(world.me, "hello-world", again.id, request_id="upload-retry").id == first.id
    other = upload(world.me, content + b" ")
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=other.id,
                                                          request_id="upload-retry"))
    assert err.reason == "REQUEST_ID_REUSED"
    world.me.wait(first.id)


def test_a_damaged_incomplete_or_misplaced_upload_is_refused_saying_why(world):
    content = dumps({"iterations": 1, "padding": "x" * 5000}).encode()
    made = world.me.CreateInputUpload(pb.CreateInputUploadRequest(
        total_bytes=len(content), sha256=hashlib.sha256(content).digest(), content=JSON)).upload
    world.me.UploadInputChunk(pb.UploadInputChunkRequest(upload_id=made.id, offset=0, data=content[:2000]))
    incomplete = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=made.id))
    assert incomplete.reason == "INPUT_UPLOAD_INCOMPLETE" and incomplete.metadata["received_bytes"] == "2000"
    gap = world.me.error("UploadInputChunk", pb.UploadInputChunkRequest(upload_id=made.id, offset=3000,
                                                                        data=content[3000:]))
    assert (gap.code, gap.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPLOAD_OFFSET")
    assert gap.metadata["received_bytes"] == "2000"
    overflow = world.me.error("UploadInputChunk", pb.UploadInputChunkRequest(upload_id=made.id, offset=2000,
                                                                             data=content[2000:] + b"}"))
    assert overflow.reason == "INPUT_UPLOAD_OVERFLOW"
    empty = world.me.error("UploadInputChunk", pb.UploadInputChunkRequest(upload_id=made.id, offset=2000))
    assert empty.reason == "INVALID_UPLOAD_CHUNK"

    damaged = upload(world.me, content, sha256=hashlib.sha256(b"something else").digest())
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=damaged.id))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INPUT_UPLOAD_CHECKSUM_MISMATCH")
    assert "upload the inputs again" in err.message
    gone = world.me.error("UploadInputChunk", pb.UploadInputChunkRequest(upload_id=damaged.id, offset=0, data=b"{"))
    assert gone.reason == "INPUT_UPLOAD_NOT_FOUND"  # deleted: its bytes no longer count against the instance

    not_utf8 = upload(world.me, b'{"iterations": "\xff"}')
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=not_utf8.id))
    assert err.reason == "INVALID_INPUTS" and "UTF-8" in err.message


def test_uploads_are_checked_as_inputs_in_the_request_are(world):
    wrong = upload(world.me, dumps({"iterations": 1, "colour": "x" * 5000}).encode())
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=wrong.id))
    assert err.reason == "INVALID_INPUTS" and ("inputs.colour", ) == tuple(f for f, _ in err.field_violations)
    both = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=wrong.id,
                                                           inputs='{"iterations": 1}'))
    assert both.reason == "INPUTS_AND_INPUT_UPLOAD"
    # Its circuits go to the devices service's checks: one that does not decode is refused, and named.
    not_qpy = {"__type__": "QuantumCircuit", "__value__": "bm90IFFQWQ=="}
    circuits = upload(world.me, dumps({"circuits": [*numbered_circuits(2), not_qpy]}).encode() + b" " * 5000)
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="sampler", input_upload_id=circuits.id))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.metadata["input"] == "inputs.circuits[2]"


def test_validate_only_with_an_upload_checks_it_and_leaves_it_for_the_job(world):
    wrong = upload(world.me, dumps({"iterations": 2, "colour": "x" * 5000}).encode())
    dry = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=wrong.id,
                                                          validate_only=True))
    assert dry.reason == "INVALID_INPUTS"  # checked as a real create checks them
    content = dumps({"iterations": 1}).encode() + b" " * 5000  # JSON may be padded with spaces
    made = upload(world.me, content)
    would = create(world.me, "hello-world", made.id, validate_only=True)
    assert would.id == "" and would.backend == "ibmq_qasm_simulator"
    job = create(world.me, "hello-world", made.id)  # the dry run left the upload unused
    assert world.me.wait(job.id).state == job_pb2.JOB_STATE_DONE and world.me.result(job.id) == "All done!"


def test_an_upload_is_its_callers_and_needs_job_create(world):
    made = upload(world.me, dumps({"iterations": 1}).encode() + b" " * 5000)
    for method, request in (
        ("UploadInputChunk", pb.UploadInputChunkRequest(upload_id=made.id, offset=0, data=b"{")),
        ("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=made.id)),
    ):
        err = world.other.error(method, request)
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "INPUT_UPLOAD_NOT_FOUND"), method
    err = world.reader.error("CreateInputUpload", pb.CreateInputUploadRequest(
        total_bytes=1, sha256=hashlib.sha256(b"{").digest(), content=JSON))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED")
    job = create(world.me, "hello-world", made.id)  # untouched by the others' attempts
    world.me.wait(job.id)


def test_an_expired_upload_is_gone(world):
    made = upload(world.me, dumps({"iterations": 1}).encode() + b" " * 5000)
    u = store_module.upload_table.c
    with world.store._engine.begin() as conn:  # an hour later
        conn.execute(store_module.upload_table.update().where(u.id == made.id)
                     .values(expire_time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=made.id))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "INPUT_UPLOAD_NOT_FOUND") and "expired" in err.message
    assert world.store.sweep_uploads() == 1


def test_upload_sizes_are_capped_one_by_one_and_per_instance(world):
    def new(total: int, **fields) -> pb.CreateInputUploadRequest:
        return pb.CreateInputUploadRequest(total_bytes=total, sha256=bytes(32), content=JSON, **fields)

    err = world.me.error("CreateInputUpload", new(MAX_UPLOAD + 1))
    assert err.reason == "INPUT_UPLOAD_TOO_LARGE" and err.metadata["max_bytes"] == str(MAX_UPLOAD)
    assert world.me.error("CreateInputUpload", new(0)).reason == "INVALID_UPLOAD_SIZE"
    assert world.me.error("CreateInputUpload", pb.CreateInputUploadRequest(
        total_bytes=10, sha256=b"short", content=JSON)).reason == "INVALID_UPLOAD_SHA256"
    assert world.me.error("CreateInputUpload", pb.CreateInputUploadRequest(
        total_bytes=10, sha256=bytes(32))).reason == "INVALID_UPLOAD_CONTENT"
    world.me.CreateInputUpload(new(MAX_UPLOAD))
    err = world.me.error("CreateInputUpload", new(INSTANCE_UPLOADS - MAX_UPLOAD + 1))
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_UPLOAD_BYTES")
    assert err.metadata["held_bytes"] == str(MAX_UPLOAD) and 3500 < err.retry_after <= 3600
    world.other.CreateInputUpload(new(MAX_UPLOAD))  # another instance holds its own
    world.me.CreateInputUpload(new(INSTANCE_UPLOADS - MAX_UPLOAD))  # exactly up to the cap


def bell_pubs(count: int) -> ppb.PrimitiveInput:
    buffer = io.BytesIO()
    qpy.dump(numbered_circuits(1)[0], buffer)
    pubs = [ppb.SamplerPub(circuit=ppb.Circuit(qpy=buffer.getvalue()), shots=20) for _ in range(count)]
    return ppb.PrimitiveInput(sampler=ppb.SamplerInput(pubs=pubs))


def test_typed_inputs_go_up_in_chunks_too(world):
    primitive = bell_pubs(20)
    content = primitive.SerializeToString()
    assert len(content) > 4096
    made = upload(world.me, content, kind=PRIMITIVE)
    job = create(world.me, "sampler", made.id)
    done = world.me.wait(job.id)
    assert done.state == job_pb2.JOB_STATE_DONE, done.reason_message
    result = world.me.GetJobResult(pb.GetJobResultRequest(job_id=job.id)).primitive_result
    assert len(result.sampler.pub_results) == 20
    full = world.me.GetJob(pb.GetJobRequest(job_id=job.id, view=job_pb2.JOB_VIEW_FULL)).job
    assert not full.HasField("primitive_input") and full.inputs == "" and full.omitted_inputs_bytes > 4096
    chunks, last = inputs_chunks(world.me, job.id)
    assert last.primitive and last.total_bytes == full.omitted_inputs_bytes
    assert hashlib.sha256("".join(chunks).encode()).digest() == last.sha256
    assert json_format.Parse("".join(chunks), ppb.PrimitiveInput()) == primitive

    to_hello = upload(world.me, content, kind=PRIMITIVE)
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", input_upload_id=to_hello.id))
    assert err.reason == "PRIMITIVE_PROGRAM_MISMATCH"
    garbage = upload(world.me, b"\xff" * 5000, kind=PRIMITIVE)
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="sampler", input_upload_id=garbage.id))
    assert err.reason == "INVALID_PRIMITIVE_INPUT"
