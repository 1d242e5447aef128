"""Checks of a CreateJob request: its own fields first, then its inputs against the program's declared ones.

Inputs are checked as JSON, before anything is decoded: a circuit is checked to be an encoded circuit
object, not loaded. Every problem with the inputs is reported at once, one BadRequest field
violation per input ("inputs.<name>"), so a user fixes them in one go.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from qruntime.encoding import TYPE_KEY, VALUE_KEY, is_encoded_circuit
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2
from qruntime.programs.v1 import program_pb2

from qruntime_kit.errors import InvalidArgument

MAX_REQUEST_ID_LENGTH = 256
# Inputs in the request, and inputs a Job message carries (JOB_VIEW_FULL): at half the 64 MiB gRPC
# message limit a Job always fits in a response (CreateJob's, GetJob's, and ListJobs', whose pages stop
# early when jobs are large). Larger inputs are uploaded in chunks (uploads.py) and read in chunks
# (GetJobInputs); a full view leaves them out (Job.omitted_inputs_bytes).
MAX_INPUTS_BYTES = 32 * 1024 * 1024
InputType = program_pb2.InputType
MAX_TAGS, MAX_TAG_LENGTH = 20, 64
_TAG = re.compile(r"[!-~]{1,64}")  # printable ASCII, no space


def check_create_request(request: jobs_service_pb2.CreateJobRequest) -> dict[str, Any]:
    """Check the request's own fields; returns its inputs as a JSON object ({} when empty)."""
    if not request.program_id:
        raise InvalidArgument(
            "program_id is required", reason="PROGRAM_ID_MISSING", field_violations=[("program_id", "required")]
        )
    if request.options.log_level not in job_pb2.LogLevel.values():
        raise InvalidArgument(
            f"options.log_level {request.options.log_level} is not a LogLevel",
            reason="INVALID_LOG_LEVEL",
            field_violations=[("options.log_level", "must be a LogLevel value")],
        )
    if len(request.request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument(
            f"request_id is longer than {MAX_REQUEST_ID_LENGTH} characters",
            reason="INVALID_REQUEST_ID",
            field_violations=[("request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters")],
        )
    check_tags(request.tags)
    size = len(request.inputs.encode()) + request.primitive_input.ByteSize()
    if size > MAX_INPUTS_BYTES:
        raise InvalidArgument(
            f"inputs are {size} bytes; at most {MAX_INPUTS_BYTES} are accepted in the request: upload larger ones "
            "in chunks (CreateInputUpload) and name the upload in input_upload_id",
            reason="INPUTS_TOO_LARGE",
            metadata={"bytes": str(size), "max_bytes": str(MAX_INPUTS_BYTES)},
            field_violations=[("inputs", f"at most {MAX_INPUTS_BYTES} bytes of JSON")],
        )
    return parse_inputs(request.inputs)


def check_tags(tags: Sequence[str], field: str = "tags") -> list[str]:
    """The tags sorted and without repeats; InvalidArgument INVALID_TAGS naming each bad one."""
    violations = [(f"{field}[{i}]", f"{tag!r} must be 1 to {MAX_TAG_LENGTH} printable characters without spaces")
                  for i, tag in enumerate(tags) if not _TAG.fullmatch(tag)]
    unique = sorted(set(tags))
    if len(unique) > MAX_TAGS:
        violations.append((field, f"at most {MAX_TAGS} tags, got {len(unique)}"))
    if violations:
        raise InvalidArgument("; ".join(why for _, why in violations), reason="INVALID_TAGS",
                              field_violations=violations)
    return unique


def parse_inputs(text: str) -> dict[str, Any]:
    """The inputs as a JSON object; InvalidArgument INVALID_INPUTS when they are not one."""
    if not text.strip():
        return {}
    try:
        inputs = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as err:
        raise _invalid_inputs(f"inputs are not valid JSON: {err}", "must be a JSON object") from None
    except RecursionError:  # json gives up on arrays and objects nested deeper than Python's stack
        raise _invalid_inputs("inputs are nested too deeply", "must be a JSON object nested less deeply") from None
    if not isinstance(inputs, dict):
        raise _invalid_inputs(
            f"inputs must be a JSON object of input names to values, not a JSON {_json_type(inputs)}",
            "must be a JSON object",
        )
    return inputs


def check_inputs(program_id: str, declared: Sequence[program_pb2.ProgramInput], inputs: dict[str, Any]) -> None:
    """Check inputs against the program's declared inputs; one InvalidArgument INVALID_INPUTS
    listing every missing, unknown and mistyped input."""
    by_name = {d.name: d for d in declared}
    violations = []
    for d in declared:
        if d.required and d.name not in inputs:
            violations.append((f"inputs.{d.name}", "required by the program"))
    for name, value in inputs.items():
        spec = by_name.get(name)
        if spec is None:
            known = ", ".join(sorted(by_name)) or "none"
            violations.append((f"inputs.{name}", f"not an input of program {program_id!r} (its inputs: {known})"))
            continue
        problem = type_problem(spec.type, value)
        if problem:
            violations.append((f"inputs.{name}", problem))
    if violations:
        raise InvalidArgument(
            f"the inputs do not match program {program_id!r}: "
            + "; ".join(f"{field}: {why}" for field, why in violations),
            reason="INVALID_INPUTS",
            metadata={"program_id": program_id},
            field_violations=violations,
        )


def type_problem(input_type: int, value: Any) -> str:
    """Why value does not have the declared type; '' when it does."""
    if input_type == InputType.INPUT_TYPE_STRING:
        ok = isinstance(value, str)
    elif input_type == InputType.INPUT_TYPE_INTEGER:
        ok = _is_number(value) and (isinstance(value, int) or value.is_integer())
    elif input_type == InputType.INPUT_TYPE_NUMBER:
        ok = _is_number(value)
    elif input_type == InputType.INPUT_TYPE_BOOLEAN:
        ok = isinstance(value, bool)
    elif input_type == InputType.INPUT_TYPE_ARRAY:
        ok = isinstance(value, list) or _is_encoded(value, "ndarray")
    elif input_type == InputType.INPUT_TYPE_OBJECT:
        ok = isinstance(value, dict) and not _is_encoded(value)
    elif input_type == InputType.INPUT_TYPE_CIRCUITS:
        ok = is_encoded_circuit(value) or (
            isinstance(value, list) and bool(value) and all(is_encoded_circuit(v) for v in value)
        )
    else:  # UNSPECIFIED, or a type this release does not know: any JSON value
        return ""
    if ok:
        return ""
    expected = {
        InputType.INPUT_TYPE_STRING: "a string",
        InputType.INPUT_TYPE_INTEGER: "an integer",
        InputType.INPUT_TYPE_NUMBER: "a number",
        InputType.INPUT_TYPE_BOOLEAN: "true or false",
        InputType.INPUT_TYPE_ARRAY: "an array",
        InputType.INPUT_TYPE_OBJECT: "an object",
        InputType.INPUT_TYPE_CIRCUITS: (
            f'an encoded circuit {{"{TYPE_KEY}": "QuantumCircuit", "{VALUE_KEY}": <base64 QPY>}} '
            "or a non-empty array of them"
        ),
    }[input_type]
    return f"must be {expected}, got {_json_type(value)}"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _is_encoded(value: Any, type_name: str | None = None) -> bool:
    return (
        isinstance(value, dict)
        and value.keys() == {TYPE_KEY, VALUE_KEY}
        and (type_name is None or value[TYPE_KEY] == type_name)
    )


def _json_type(value: Any) -> str:
    if _is_encoded(value):
        return f"an encoded {value[TYPE_KEY]}"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction" if not value.is_integer() else "a number"
    return {str: "a string", list: "an array", dict: "an object", type(None): "null"}.get(type(value), "a value")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 is valid JSON, but no program can use the infinity it becomes
        raise ValueError(f"{text} is too large for a number")
    return value


def _invalid_inputs(message: str, why: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_INPUTS", field_violations=[("inputs", why)])
