"""CreateJob's idempotency key (request_id, AIP-155): a retry of the same request gets the job the
first call made; the same key with a different request is refused, never answered with that job."""

from __future__ import annotations

import hashlib

from qruntime.jobs.v1 import jobs_service_pb2

from qruntime_kit.errors import InvalidArgument

from .store import JobRecord, UploadRecord


def request_fingerprint(request: jobs_service_pb2.CreateJobRequest, upload: UploadRecord | None = None) -> str:
    """A digest of everything the request asks for, its request_id and validate_only aside (hex SHA-256).
    Inputs uploaded in chunks count by what they are (the upload's content and SHA-256), not by the
    upload's id: a retry that uploaded them again asks for the same job."""
    asked = jobs_service_pb2.CreateJobRequest()
    asked.CopyFrom(request)
    asked.ClearField("request_id")
    asked.ClearField("validate_only")
    if upload is not None:
        asked.input_upload_id = f"{upload.content}:{upload.total_bytes}:{upload.sha256.hex()}"
    return hashlib.sha256(asked.SerializeToString(deterministic=True)).hexdigest()


def check_same_request(job: JobRecord, fingerprint: str, program_id: str, inputs: str) -> None:
    """InvalidArgument REQUEST_ID_REUSED unless job was made by this request. A job stored before
    fingerprints were kept is compared by its program and inputs."""
    if job.request_fingerprint:
        same = job.request_fingerprint == fingerprint
    else:
        same = (job.program_id, job.inputs) == (program_id, inputs or "{}")
    if not same:
        raise InvalidArgument(
            f"request_id {job.request_id!r} was used for job {job.id} with a different request (program, "
            "inputs or options); use a new request_id for a new job",
            reason="REQUEST_ID_REUSED",
            metadata={"job_id": job.id, "request_id": job.request_id},
            field_violations=[("request_id", "already used by this instance for a different request")],
        )
