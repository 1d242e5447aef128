"""Primitive jobs: the built-in sampler and estimator with typed inputs (qruntime.primitives.v1).

Such a job needs nothing a program host offers: its PUBs go to the devices service as they came
(RunCircuits with `primitive`), whose worker decodes, checks, binds and runs them and answers with the
typed result. So the jobs service never decodes a circuit, and a circuit is never decoded and
re-encoded on its way.

Stored form: a primitive job's inputs column holds {"__primitive_input__": <the PrimitiveInput as proto3
JSON>} (jobs_job.primitive_inputs says so without reading it) and its result column the PrimitiveResult
as proto3 JSON. The key cannot come from a JSON-input job: the sampler and estimator programs refuse
inputs they do not declare. GetJobInputs serves the PrimitiveInput's proto3 JSON alone: the stored text
less the key's head and the closing brace (served_span), cut out by the database.
"""

from __future__ import annotations

import datetime as dt
import json

from google.protobuf import json_format
from qruntime.devices.v1 import devices_service_pb2
from qruntime.primitives.v1 import primitives_pb2

from qruntime_kit.errors import InvalidArgument
from qruntime_kit.outbound import MAX_MESSAGE_BYTES

from .backend import BackendError
from .outcome import Outcome
from .store import DONE, ERROR, JobRecord, ResultDigest

KEY = "__primitive_input__"
PROGRAMS = {"sampler": "sampler", "estimator": "estimator"}  # program id -> the PrimitiveInput field it takes
_HEAD, _TAIL = len(f'{{"{KEY}":'), len("}")  # around the PrimitiveInput's JSON in stored_inputs' text (ASCII)
# The devices service takes a primitive job's PUBs in one message (CheckCircuits, RunCircuits), with room
# for the request's other fields: typed inputs uploaded in chunks may not be larger.
MAX_PRIMITIVE_BYTES = MAX_MESSAGE_BYTES - 1024 * 1024


def check_request(program_id: str, primitive: primitives_pb2.PrimitiveInput, inputs: str) -> None:
    """InvalidArgument unless the typed inputs suit the program and come alone."""
    kind = primitive.WhichOneof("primitive")
    if inputs.strip() not in ("", "{}"):
        raise InvalidArgument("give the inputs either as JSON (inputs) or typed (primitive_input), not both",
                              reason="INPUTS_AND_PRIMITIVE_INPUT",
                              field_violations=[("inputs", "must be empty when primitive_input is set")])
    if kind is None or PROGRAMS.get(program_id) != kind:
        want = PROGRAMS.get(program_id)
        raise InvalidArgument(
            f"primitive_input holds {kind or 'nothing'}; program {program_id!r} "
            + (f"takes primitive_input.{want}" if want else "takes JSON inputs only (typed inputs are for the "
               "sampler and estimator programs)"),
            reason="PRIMITIVE_PROGRAM_MISMATCH", metadata={"program_id": program_id},
            field_violations=[("primitive_input", f"must hold {want}" if want else "must be empty")],
        )


def check_size(primitive: primitives_pb2.PrimitiveInput) -> None:
    """InvalidArgument PRIMITIVE_INPUT_TOO_LARGE unless the devices service can take the PUBs in one message."""
    size = primitive.ByteSize()
    if size > MAX_PRIMITIVE_BYTES:
        raise InvalidArgument(
            f"the primitive input is {size} bytes; the backend takes a primitive job's PUBs in one message of at "
            f"most {MAX_PRIMITIVE_BYTES} bytes: split the PUBs over several jobs",
            reason="PRIMITIVE_INPUT_TOO_LARGE", metadata={"bytes": size, "max_bytes": MAX_PRIMITIVE_BYTES},
            field_violations=[("input_upload_id", f"a PrimitiveInput of at most {MAX_PRIMITIVE_BYTES} bytes")])


def stored_inputs(primitive: primitives_pb2.PrimitiveInput) -> str:
    """The inputs column of a primitive job."""
    return json.dumps({KEY: json_format.MessageToDict(primitive)}, separators=(",", ":"))


def served_span(job: JobRecord) -> tuple[int, int]:
    """How many bytes of the job's stored inputs GetJobInputs leaves out at their start and at their end."""
    return (_HEAD, _TAIL) if is_primitive(job) else (0, 0)


def served_digest(stored: str, primitive: bool) -> ResultDigest:
    """The size and SHA-256 of a job's inputs as GetJobInputs serves them, from their stored text."""
    data = stored.encode()
    return ResultDigest.of(data[_HEAD:len(data) - _TAIL] if primitive else data)


def is_primitive(job: JobRecord) -> bool:
    """Whether the job was created with typed inputs (without reading them)."""
    return job.primitive_inputs


def primitive_input(job: JobRecord) -> primitives_pb2.PrimitiveInput | None:
    """The typed inputs of a primitive job; None for a job with JSON inputs, or whose inputs were not read."""
    if not is_primitive(job) or job.inputs is None:
        return None
    return json_format.ParseDict(json.loads(job.inputs)[KEY], primitives_pb2.PrimitiveInput())


def primitive_result(stored: str) -> primitives_pb2.PrimitiveResult:
    """A primitive job's stored result."""
    return json_format.Parse(stored, primitives_pb2.PrimitiveResult())


def run_request(job_id: str, backend: str, primitive: primitives_pb2.PrimitiveInput, attempt: int | None = None
                ) -> devices_service_pb2.RunCircuitsRequest:
    """The run of the job's PUBs; keyed by its attempt when one is given: the key makes a retried call
    (devices unreachable for a moment) get the first run's result. A quick run has none (quick.py)."""
    request = devices_service_pb2.RunCircuitsRequest(backend=backend, primitive=primitive, job_id=job_id)
    if attempt is not None:
        request.idempotency_key = f"{job_id}/{attempt}/primitive"
    return request


def describe(primitive: primitives_pb2.PrimitiveInput) -> str:
    kind = primitive.WhichOneof("primitive")
    return f"{len(getattr(primitive, kind).pubs)} {kind} PUB(s)"


def done_outcome(backend: str, primitive: primitives_pb2.PrimitiveInput,
                 response: devices_service_pb2.RunCircuitsResponse, started: dt.datetime) -> Outcome:
    """The end of the primitive's run on backend, with its log lines."""
    result = response.primitive_result
    seconds = getattr(result, result.WhichOneof("primitive")).metadata.execution_seconds
    logs = (("INFO", f"running {describe(primitive)} on {backend}", started),
            ("INFO", f"ran {describe(primitive)} in {seconds:.3f} s of backend time", dt.datetime.now(dt.UTC)))
    text = json_format.MessageToJson(result, indent=None)
    return Outcome(DONE, result=text, logs=logs)


def refused_outcome(err: BackendError) -> Outcome:
    """The job's end when the devices service refuses its PUBs at run time (they passed at creation:
    a backend whose ISA or limits changed since) or fails them."""
    reason = "INVALID_INPUT" if err.error.code.name == "INVALID_ARGUMENT" else "BACKEND_ERROR"
    message = f"the backend refused or failed the PUBs ({err.error.reason}): {err.error.message}"
    return Outcome(ERROR, reason, message, logs=(("ERROR", message, dt.datetime.now(dt.UTC)),))
