"""CreateJob checks: the request's own fields, then every input against the program's declared inputs."""

from __future__ import annotations

import json

import pytest
from qruntime.encoding import dumps
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2
from qruntime.programs.v1 import program_pb2

from qruntime_jobs.validation import MAX_INPUTS_BYTES, check_create_request, check_inputs, parse_inputs
from qruntime_kit.errors import InvalidArgument
from qruntime_kit.outbound import MAX_MESSAGE_BYTES

T = program_pb2.InputType


def declared(*specs: tuple[str, int, bool]) -> list[program_pb2.ProgramInput]:
    return [program_pb2.ProgramInput(name=n, type=t, required=r) for n, t, r in specs]


def violations(err: InvalidArgument) -> dict[str, str]:
    return dict(err.field_violations)


def test_program_id_is_required():
    with pytest.raises(InvalidArgument) as caught:
        check_create_request(jobs_service_pb2.CreateJobRequest(inputs="{}"))
    assert caught.value.reason == "PROGRAM_ID_MISSING"
    assert violations(caught.value) == {"program_id": "required"}


def test_log_level_must_be_a_log_level():
    request = jobs_service_pb2.CreateJobRequest(program_id="p", options=job_pb2.JobOptions(log_level=42))
    with pytest.raises(InvalidArgument) as caught:
        check_create_request(request)
    assert caught.value.reason == "INVALID_LOG_LEVEL" and "options.log_level" in violations(caught.value)


def test_request_id_has_a_length_limit():
    with pytest.raises(InvalidArgument) as caught:
        check_create_request(jobs_service_pb2.CreateJobRequest(program_id="p", request_id="x" * 257))
    assert caught.value.reason == "INVALID_REQUEST_ID"


@pytest.mark.parametrize(
    "text",
    ["{", "[1, 2]", '"text"', "3", "null", '{"x": NaN}', '{"x": 1e400}', '{"x": [[-1E999]]}',
     '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"],
    ids=["unclosed", "array", "string", "number", "null", "nan", "overflow", "negative-overflow", "deep"],
)
def test_inputs_must_be_a_json_object_of_finite_numbers(text):
    with pytest.raises(InvalidArgument) as caught:
        parse_inputs(text)
    assert caught.value.reason == "INVALID_INPUTS"
    assert list(violations(caught.value)) == ["inputs"]


def test_empty_inputs_are_an_empty_object():
    assert parse_inputs("") == {} and parse_inputs("  ") == {}
    assert check_create_request(jobs_service_pb2.CreateJobRequest(program_id="p")) == {}
    assert check_create_request(jobs_service_pb2.CreateJobRequest(program_id="p", inputs='{"a": 1}')) == {"a": 1}


def test_inputs_have_a_size_limit_that_keeps_a_job_within_one_message():
    assert 2 * MAX_INPUTS_BYTES <= MAX_MESSAGE_BYTES  # a Job holding them fits in any response
    just_fits = '{"x": "' + "a" * (MAX_INPUTS_BYTES - 9) + '"}'
    assert len(just_fits) == MAX_INPUTS_BYTES
    check_create_request(jobs_service_pb2.CreateJobRequest(program_id="p", inputs=just_fits))
    too_big = '{"x": "' + "é" * (MAX_INPUTS_BYTES // 2) + '"}'  # counted in UTF-8 bytes, as on the wire
    with pytest.raises(InvalidArgument) as caught:
        check_create_request(jobs_service_pb2.CreateJobRequest(program_id="p", inputs=too_big))
    assert caught.value.reason == "INPUTS_TOO_LARGE" and list(violations(caught.value)) == ["inputs"]
def test_every_problem_is_reported_at_once(bell):
    spec = declared(("circuits", T.INPUT_TYPE_CIRCUITS, True), ("shots", T.INPUT_TYPE_INTEGER, True),
                    ("seed", T.INPUT_TYPE_INTEGER, False))
    with pytest.raises(InvalidArgument) as caught:
        check_inputs("sampler", spec, {"shots": "many", "colour": "blue"})
    err = caught.value
    assert err.reason == "INVALID_INPUTS" and err.metadata == {"program_id": "sampler"}
    found = violations(err)
    assert set(found) == {"inputs.circuits", "inputs.shots", "inputs.colour"}
    assert "required" in found["inputs.circuits"]
    assert found["inputs.shots"] == "must be an integer, got a string"
    assert "not an input of program 'sampler'" in found["inputs.colour"]
    assert "circuits, seed, shots" in found["inputs.colour"]


@pytest.fixture
def encoded(bell):
    return json.loads(dumps(bell))


@pytest.mark.parametrize(
    ("input_type", "good", "bad"),
    [
        (T.INPUT_TYPE_STRING, ["", "x"], [1, None, ["x"]]),
        (T.INPUT_TYPE_INTEGER, [0, -3, 2.0, 10**30], [1.5, "1", True, None]),
        (T.INPUT_TYPE_NUMBER, [0, 1.5, -2], ["1", False, None]),
        (T.INPUT_TYPE_BOOLEAN, [True, False], [0, "true", None]),
        (T.INPUT_TYPE_ARRAY, [[], [1, "a"], {"__type__": "ndarray", "__value__": "AA=="}], [{}, "[]", 3]),
        (T.INPUT_TYPE_OBJECT, [{}, {"a": 1}], [[], "x", {"__type__": "complex", "__value__": [1, 0]}]),
        (T.INPUT_TYPE_UNSPECIFIED, [None, 1, "x", [], {}], []),
    ],
)
def test_json_types(input_type, good, bad):
    spec = declared(("x", input_type, False))
    for value in good:
        check_inputs("p", spec, {"x": value})
    for value in bad:
        with pytest.raises(InvalidArgument) as caught:
            check_inputs("p", spec, {"x": value})
        assert list(violations(caught.value)) == ["inputs.x"], value


def test_circuits_take_one_encoded_circuit_or_a_non_empty_list(encoded):
    spec = declared(("circuits", T.INPUT_TYPE_CIRCUITS, True))
    check_inputs("p", spec, {"circuits": encoded})
    check_inputs("p", spec, {"circuits": [encoded, encoded]})
    for bad in ([], [encoded, 1], "OPENQASM 2.0;", {"__type__": "ndarray", "__value__": "AA=="}):
        with pytest.raises(InvalidArgument) as caught:
            check_inputs("p", spec, {"circuits": bad})
        assert "encoded circuit" in violations(caught.value)["inputs.circuits"]


def test_a_program_without_declared_inputs_takes_none():
    check_inputs("p", [], {})
    with pytest.raises(InvalidArgument) as caught:
        check_inputs("p", [], {"x": 1})
    assert "its inputs: none" in violations(caught.value)["inputs.x"]
