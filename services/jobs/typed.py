"""Primitive jobs: the built-in sampler and estimator with typed inputs (qruntime.primitives.v1).

Such a job needs nothing a program host offers: its PUBs go to the devices service as they came
(RunCircuits with `primitive`), whose worker decodes, checks, binds and runs them and answers with the
typed result. So the jobs service never decodes a circuit, and a circuit is never decoded and
re-encoded on its way.

Stored form: a primitive job's inputs column holds {"__primitive_input__": <the PrimitiveInput as proto3
JSON>} and its result column the PrimitiveResult as proto3 JSON. The key cannot come from a JSON-input
job: the sampler and estimator programs refuse inputs they do not declare.
"""

from __future__ import annotations

import datetime as dt
import json

from google.protobuf import json_format
from qruntime.devices.v1 import devices_service_pb2
from qruntime.primitives.v1 import primitives_pb2

from qruntime_kit.errors import InvalidArgument

from .backend import BackendError
from .outcome import Outcome
from .store import DONE, ERROR, JobRecord

KEY = "__primitive_input__"
PROGRAMS = {"sampler": "sampler", "estimator": "estimator"}  # program id -> the PrimitiveInput field it takes


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


def stored_inputs(primitive: primitives_pb2.PrimitiveInput) -> str:
    """The inputs column of a primitive job."""
    return json.dumps({KEY: json_format.MessageToDict(primitive)}, separators=(",", ":"))


def is_primitive(job: JobRecord) -> bool:
    """Whether the job was created with typed inputs (without reading them)."""
    return job.runtime == "BUILTIN" and job.program_id in PROGRAMS and job.inputs.startswith(f'{{"{KEY}"')


def primitive_input(job: JobRecord) -> primitives_pb2.PrimitiveInput | None:
    """The typed inputs of a primitive job; None for a job with JSON inputs."""
    if not is_primitive(job):
        return None
    return json_format.ParseDict(json.loads(job.inputs)[KEY], primitives_pb2.PrimitiveInput())


def primitive_result(stored: str) -> primitives_pb2.PrimitiveResult:
    """A primitive job's stored result."""
    return json_format.Parse(stored, primitives_pb2.PrimitiveResult())


def run_request(job: JobRecord, primitive: primitives_pb2.PrimitiveInput) -> devices_service_pb2.RunCircuitsRequest:
    # The key makes a retried call (devices unreachable for a moment) get the first run's result.
    return devices_service_pb2.RunCircuitsRequest(backend=job.backend, primitive=primitive, job_id=job.id,
                                                  idempotency_key=f"{job.id}/{job.attempts}/primitive")


def describe(primitive: primitives_pb2.PrimitiveInput) -> str:
    kind = primitive.WhichOneof("primitive")
    return f"{len(getattr(primitive, kind).pubs)} {kind} PUB(s)"


def done_outcome(job: JobRecord, primitive: primitives_pb2.PrimitiveInput,
                 response: devices_service_pb2.RunCircuitsResponse, started: dt.datetime) -> Outcome:
    result = response.primitive_result
    seconds = getattr(result, result.WhichOneof("primitive")).metadata.execution_seconds
    logs = (("INFO", f"running {describe(primitive)} on {job.backend}", started),
            ("INFO", f"ran {describe(primitive)} in {seconds:.3f} s of backend time", dt.datetime.now(dt.UTC)))
    text = json_format.MessageToJson(result, indent=None)
    return Outcome(DONE, result=text, logs=logs)


def refused_outcome(err: BackendError) -> Outcome:
    """The job's end when the devices service refuses its PUBs at run time (they passed at creation:
    a backend whose ISA or limits changed since) or fails them."""
    reason = "INVALID_INPUT" if err.error.code.name == "INVALID_ARGUMENT" else "BACKEND_ERROR"
    message = f"the backend refused or failed the PUBs ({err.error.reason}): {err.error.message}"
    return Outcome(ERROR, reason, message, logs=(("ERROR", message, dt.datetime.now(dt.UTC)),))
