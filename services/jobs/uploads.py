"""Job inputs uploaded in chunks: inputs larger than one CreateJob message may carry (32 MiB) go up in
chunks of at most 16 MiB (CreateInputUpload, then UploadInputChunk in order), and CreateJob names the
upload (input_upload_id). CreateJob reassembles the bytes, checks their size and SHA-256 against what the
upload declared, decodes them as the content says (JSON inputs text, or a serialized PrimitiveInput),
and from there checks and admits the job exactly as one whose inputs came in the request.

An upload belongs to its caller (instance and user: anyone else is told NOT_FOUND), takes job.create,
is consumed by the job it makes (in the job's insert transaction) and expires unused after
`input_upload_seconds` (the executor's keeper sweeps them). Its size is capped
(`max_input_upload_bytes`), and so is what one instance's unfinished uploads may hold together
(`max_upload_bytes_per_instance`). The store keeps the chunks (jobs_input_upload_chunk); every step
that touches their bytes (hashing, assembling, decoding) runs in a thread, off the event loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from google.protobuf.message import DecodeError
from qruntime.jobs.v1 import jobs_service_pb2
from qruntime.primitives.v1 import primitives_pb2

from qruntime_kit.errors import InvalidArgument

from . import typed
from .messages import timestamp
from .store import JobStore, ResultDigest, UploadRecord
from .validation import parse_inputs

MAX_CHUNK_BYTES = 16 * 1024 * 1024  # one UploadInputChunk's data at most: a quarter of a gRPC message
JSON_INPUTS, PRIMITIVE_INPUT = "JSON_INPUTS", "PRIMITIVE_INPUT"  # the stored names of InputUploadContent
_CONTENTS = {jobs_service_pb2.INPUT_UPLOAD_CONTENT_JSON_INPUTS: JSON_INPUTS,
             jobs_service_pb2.INPUT_UPLOAD_CONTENT_PRIMITIVE_INPUT: PRIMITIVE_INPUT}


@dataclasses.dataclass(frozen=True)
class UploadLimits:
    """The deployment's settings for uploads."""

    max_bytes: int = 256 * 1024 * 1024  # one upload's total_bytes at most
    max_instance_bytes: int = 1024 * 1024 * 1024  # one instance's unexpired uploads together; 0: no limit
    lifetime_seconds: float = 3600.0  # from creation to expiry


@dataclasses.dataclass(frozen=True)
class Uploaded:
    """A complete upload's content, decoded: JSON inputs (text, parsed, and the size and SHA-256 checked,
    which are the job's inputs' as GetJobInputs serves them) or typed ones."""

    text: str
    inputs: dict[str, Any]
    primitive: primitives_pb2.PrimitiveInput | None
    digest: ResultDigest | None = None


def check_new_upload(request: jobs_service_pb2.CreateInputUploadRequest, limits: UploadLimits) -> str:
    """The stored name of the upload's content, once its declared size, digest and content are valid."""
    if request.content not in _CONTENTS:
        raise InvalidArgument(
            f"content {request.content} is not an InputUploadContent: JSON_INPUTS or PRIMITIVE_INPUT",
            reason="INVALID_UPLOAD_CONTENT",
            field_violations=[("content", "INPUT_UPLOAD_CONTENT_JSON_INPUTS or INPUT_UPLOAD_CONTENT_PRIMITIVE_INPUT")])
    if request.total_bytes > limits.max_bytes:
        raise InvalidArgument(
            f"an upload of {request.total_bytes} bytes is larger than this deployment takes ({limits.max_bytes})",
            reason="INPUT_UPLOAD_TOO_LARGE",
            metadata={"total_bytes": request.total_bytes, "max_bytes": limits.max_bytes},
            field_violations=[("total_bytes", f"at most {limits.max_bytes}")])
    if request.total_bytes < 1:
        raise InvalidArgument("total_bytes must be at least 1", reason="INVALID_UPLOAD_SIZE",
                              field_violations=[("total_bytes", f"1 to {limits.max_bytes}")])
    if len(request.sha256) != hashlib.sha256().digest_size:
        raise InvalidArgument(f"sha256 is {len(request.sha256)} bytes; a SHA-256 digest is 32",
                              reason="INVALID_UPLOAD_SHA256",
                              field_violations=[("sha256", "the 32-byte SHA-256 of the whole content")])
    return _CONTENTS[request.content]


def check_chunk(request: jobs_service_pb2.UploadInputChunkRequest) -> None:
    """InvalidArgument unless the chunk's offset and size could fit an upload (where they fall is the store's)."""
    if request.offset < 0:
        raise InvalidArgument("offset must not be negative", reason="INVALID_UPLOAD_OFFSET",
                              field_violations=[("offset", "the upload's received_bytes")])
    if not 1 <= len(request.data) <= MAX_CHUNK_BYTES:
        raise InvalidArgument(f"a chunk holds 1 to {MAX_CHUNK_BYTES} bytes, not {len(request.data)}",
                              reason="INVALID_UPLOAD_CHUNK", metadata={"max_chunk_bytes": MAX_CHUNK_BYTES},
                              field_violations=[("data", f"1 to {MAX_CHUNK_BYTES} bytes")])


def upload_message(upload: UploadRecord) -> jobs_service_pb2.InputUpload:
    content = next(value for value, name in _CONTENTS.items() if name == upload.content)
    return jobs_service_pb2.InputUpload(
        id=upload.id, content=content, total_bytes=upload.total_bytes, sha256=upload.sha256,
        received_bytes=upload.received_bytes, max_chunk_bytes=MAX_CHUNK_BYTES,
        create_time=timestamp(upload.create_time), expire_time=timestamp(upload.expire_time))


def check_alone(request: jobs_service_pb2.CreateJobRequest) -> None:
    """InvalidArgument INPUTS_AND_INPUT_UPLOAD when a request names an upload and carries inputs too."""
    if request.input_upload_id and (request.inputs.strip() or request.HasField("primitive_input")):
        field = "inputs" if request.inputs.strip() else "primitive_input"
        raise InvalidArgument(
            f"give the inputs in the request ({field}) or as an upload (input_upload_id), not both",
            reason="INPUTS_AND_INPUT_UPLOAD", field_violations=[(field, "must be empty when input_upload_id is set")])


def uploaded_inputs(store: JobStore, request: jobs_service_pb2.CreateJobRequest, *, instance: str,
                    owner: str) -> Uploaded:
    """The inputs of the caller's upload request.input_upload_id, complete and intact, decoded and
    checked as CreateJob checks inputs in the request (blocking: hundreds of MiB to read and hash)."""
    upload, content = store.upload_content(request.input_upload_id, instance=instance, owner=owner)
    metadata = {"upload_id": upload.id, "total_bytes": upload.total_bytes, "received_bytes": upload.received_bytes}
    if upload.received_bytes != upload.total_bytes:
        raise InvalidArgument(
            f"input upload {upload.id!r} has received {upload.received_bytes} of its {upload.total_bytes} bytes; "
            "send the rest before creating the job", reason="INPUT_UPLOAD_INCOMPLETE", metadata=metadata,
            field_violations=[("input_upload_id", "a complete upload")])
    if hashlib.sha256(content).digest() != upload.sha256:
        store.delete_upload(upload.id)  # nothing could ever use it; its bytes no longer count against the instance
        raise InvalidArgument(
            f"the bytes of input upload {upload.id!r} do not have the SHA-256 it was created with, so they were "
            "damaged or are not the content meant; the upload is deleted: upload the inputs again",
            reason="INPUT_UPLOAD_CHECKSUM_MISMATCH", metadata=metadata,
            field_violations=[("input_upload_id", "an upload whose bytes match its sha256")])
    if upload.content == PRIMITIVE_INPUT:
        return Uploaded("", {}, _primitive(request, content))
    try:
        text = content.decode()
    except UnicodeDecodeError as err:
        raise InvalidArgument(f"the uploaded inputs are not UTF-8 text: {err}", reason="INVALID_INPUTS",
                              field_violations=[("input_upload_id", "JSON inputs in UTF-8")]) from None
    return Uploaded(text, parse_inputs(text), None, ResultDigest(upload.total_bytes, upload.sha256))


def _primitive(request: jobs_service_pb2.CreateJobRequest, content: bytes) -> primitives_pb2.PrimitiveInput:
    try:
        primitive = primitives_pb2.PrimitiveInput.FromString(content)
    except DecodeError as err:
        raise InvalidArgument(
            f"the uploaded bytes are not a serialized PrimitiveInput: {err}", reason="INVALID_PRIMITIVE_INPUT",
            field_violations=[("input_upload_id", "a serialized qruntime.primitives.v1.PrimitiveInput")]) from None
    typed.check_size(primitive)
    typed.check_request(request.program_id, primitive, "")
    return primitive
