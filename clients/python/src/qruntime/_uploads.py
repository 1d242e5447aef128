"""Job inputs past one message, sent and read back in chunks.

A CreateJob message carries at most MAX_MESSAGE_INPUTS_BYTES of inputs. Larger ones go up as a chunked
upload first (``JobsService.CreateInputUpload``, then ``UploadInputChunk`` in order), named in the
request instead; the service reassembles and checks them. Inputs that large come back left out of a
job's full view (``Job.omitted_inputs_bytes``) and are read with ``GetJobInputs`` in chunks, checked
against their SHA-256.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import grpc

from .exceptions import IBMRuntimeError, RuntimeServiceError
from .jobs.v1 import jobs_service_pb2

if TYPE_CHECKING:
    from ._channel import Transport
    from .primitives.v1.primitives_pb2 import PrimitiveInput

MAX_MESSAGE_INPUTS_BYTES = 32 * 1024 * 1024
"""The most bytes of inputs one CreateJob message carries (the service's limit); past it they are uploaded."""
CHUNK_TRIES = 3
"""How many times a chunk is sent before a transport failure (UNAVAILABLE, DEADLINE_EXCEEDED) is final:
sending a chunk again at its offset is harmless."""
RETRY_PAUSE_S = 0.5


def upload_if_large(transport: Transport, inputs: str, primitive: PrimitiveInput | None) -> str:
    """The id of a chunked upload of a job's inputs (JSON text, or typed) when they are larger than one
    CreateJob message carries; "" for inputs of usual size, which go in the request (the fast path)."""
    if primitive is not None:
        if primitive.ByteSize() <= MAX_MESSAGE_INPUTS_BYTES:
            return ""
        return upload(transport, primitive.SerializeToString(), jobs_service_pb2.INPUT_UPLOAD_CONTENT_PRIMITIVE_INPUT)
    if len(inputs) * 4 <= MAX_MESSAGE_INPUTS_BYTES:  # UTF-8 takes 4 bytes a character at most: no need to count
        return ""
    content = inputs.encode()
    if len(content) <= MAX_MESSAGE_INPUTS_BYTES:
        return ""
    return upload(transport, content, jobs_service_pb2.INPUT_UPLOAD_CONTENT_JSON_INPUTS)


def upload(transport: Transport, content: bytes, kind: int) -> str:
    """Upload content in chunks of the size the service asks for; the upload's id."""
    made = transport.call(transport.jobs.CreateInputUpload, jobs_service_pb2.CreateInputUploadRequest(
        total_bytes=len(content), sha256=hashlib.sha256(content).digest(), content=kind)).upload
    view = memoryview(content)
    while made.received_bytes < len(content):
        offset = made.received_bytes
        request = jobs_service_pb2.UploadInputChunkRequest(
            upload_id=made.id, offset=offset, data=bytes(view[offset:offset + made.max_chunk_bytes]))
        made = _send(transport, request)
    return made.id


def _send(transport: Transport, request: jobs_service_pb2.UploadInputChunkRequest) -> jobs_service_pb2.InputUpload:
    for attempt in range(1, CHUNK_TRIES + 1):
        try:
            return transport.call(transport.jobs.UploadInputChunk, request).upload
        except RuntimeServiceError as err:
            if attempt == CHUNK_TRIES or err.code not in (grpc.StatusCode.UNAVAILABLE,
                                                          grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        time.sleep(RETRY_PAUSE_S)
    raise AssertionError("unreachable")  # pragma: no cover


def read_inputs(transport: Transport, job_id: str) -> tuple[str, bool]:
    """A job's inputs as JSON text, reassembled from GetJobInputs' chunks and checked against their
    checksum, and whether they are a primitive job's (its PrimitiveInput in proto3 JSON)."""
    chunks, offset = [], 0
    while True:
        response = transport.call(transport.jobs.GetJobInputs,
                                  jobs_service_pb2.GetJobInputsRequest(job_id=job_id, offset=offset))
        chunks.append(response.inputs)
        if not (offset := response.next_offset):
            break
    text = "".join(chunks)
    if hashlib.sha256(text.encode()).digest() != response.sha256:
        raise IBMRuntimeError(f"the inputs of job {job_id!r} arrived damaged (their checksum differs)")
    return text, response.primitive
