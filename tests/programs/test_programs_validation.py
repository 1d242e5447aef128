"""Checks on programs as callers send them: names, sources, time limits, inputs, update masks, ids."""

from __future__ import annotations

import re

import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from qruntime.programs.v1 import program_pb2

from qruntime_kit.errors import InvalidArgument
from qruntime_programs.servicer import new_program_id
from qruntime_programs.source_worker import source_problems
from qruntime_programs.validation import (
    CREATE_FIELDS,
    check_program,
    data_violations,
    inputs_violations,
    max_execution_time_violations,
    name_violations,
    program_violations,
    update_paths,
)

GOOD_SOURCE = "import math\n\ndef main(backend, user_messenger, **inputs):\n    return math.pi\n"


def good_program(**fields) -> program_pb2.Program:
    values = {
        "name": "my-program",
        "data": GOOD_SOURCE,
        "max_execution_time": duration_pb2.Duration(seconds=300),
        "inputs": [program_pb2.ProgramInput(name="x", type=program_pb2.INPUT_TYPE_INTEGER, required=True)],
        **fields,
    }
    return program_pb2.Program(**values)


@pytest.mark.parametrize("name", ["a", "0", "my-program", "x" * 63, "9lives-2"])
def test_good_names(name):
    assert name_violations(name) == []


@pytest.mark.parametrize(
    "name", ["-a", "My-program", "my_program", "x" * 64, "my program", "my-program\n", "é"]
)
def test_bad_names(name):
    assert name_violations(name) != []


def test_missing_name_is_required():
    assert name_violations("") == ["required"]


def test_good_source():
    assert data_violations(GOOD_SOURCE) == [] and source_problems(GOOD_SOURCE) == []


@pytest.mark.parametrize("source", ["", "  \n\t"])
def test_a_blank_source_is_refused_without_a_worker(source):
    assert data_violations(source) == ["required: the program's Python source"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("", "required"),
        ("  \n\t", "required"),
        ("def main(:\n    pass\n", "does not compile"),
        ("def main(backend, user_messenger):\npass\n", "does not compile"),
        # Parses, but only the compiler rejects it: the check must compile, not just parse.
        ("return 1\ndef main(backend, user_messenger):\n    pass\n", "does not compile"),
        ("def main(backend, user_messenger):\n    pass\n\0", "does not compile"),
        ("def run(backend, user_messenger):\n    pass\n", "must define a top-level function main"),
        ("class P:\n    def main(self):\n        pass\n", "must define a top-level function main"),
        ("if True:\n    def main(backend, user_messenger):\n        pass\n", "must define a top-level"),
        ("main = 1\n", "must define a top-level function main"),
        ("async def main(backend, user_messenger):\n    pass\n", "not async"),
    ],
)
def test_bad_sources(source, expected):
    # What the worker decides (source_check runs this function in a process of its own).
    problems = source_problems(source)
    assert len(problems) == 1 and expected in problems[0]


@pytest.mark.parametrize(
    "source",
    [
        "@decorate\ndef main(backend, user_messenger):\n    pass\n",
        "def main(backend, user_messenger, **inputs): return 1\n",
        "x = 1\r\n\r\ndef main(backend, user_messenger):\r\n    pass\r\n",
        "s = '''\n    def main(): pass\n'''\n\x0cdef main(backend, user_messenger):\n    pass\n",
        "async def main(backend, user_messenger):\n    pass\ndef main(backend, user_messenger):\n    pass\n",
    ],
)
def test_a_top_level_main_is_found_however_it_is_written(source):
    assert source_problems(source) == []


@pytest.mark.parametrize(
    "source",
    [
        "x = '''\ndef main(backend, user_messenger):\n    pass\n'''\n",  # only text in a string
        "try:\n    def main(backend, user_messenger):\n        pass\nexcept Exception:\n    pass\n",
        "class main:\n    pass\n",
        "main = lambda backend, user_messenger: None\n",
    ],
)
def test_a_main_that_is_not_a_top_level_def_is_not_one(source):
    (problem,) = source_problems(source)
    assert "must define a top-level function main" in problem


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "(" * 100_000 + ")" * 100_000,  # 100,000 nested parentheses
        "x = " + "-" * 900_000 + "1",
        "x = a" + ".b" * 100_000,
        "x = " + "+".join(["1"] * 200_000),
    ],
)
def test_deeply_nested_sources_are_refused_as_sources_not_as_crashes(source):
    (problem,) = source_problems(source)
    assert problem.startswith("does not compile")


def test_syntax_error_names_its_line():
    (problem,) = source_problems("x = 1\n\ndef main(:\n    pass\n")
    assert "line 3" in problem


@pytest.mark.parametrize("seconds", [1, 300, 8 * 3600])
def test_good_time_limits(seconds):
    assert max_execution_time_violations(duration_pb2.Duration(seconds=seconds)) == []


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (None, "required"),
        (duration_pb2.Duration(), "positive"),
        (duration_pb2.Duration(seconds=-5), "positive"),
        (duration_pb2.Duration(nanos=-1), "positive"),
        (duration_pb2.Duration(seconds=8 * 3600 + 1), "at most 8 hours"),
        (duration_pb2.Duration(seconds=8 * 3600, nanos=1), "at most 8 hours"),
        (duration_pb2.Duration(seconds=10, nanos=500_000_000), "whole number of seconds"),
    ],
)
def test_bad_time_limits(duration, expected):
    problems = max_execution_time_violations(duration)
    assert len(problems) == 1 and expected in problems[0]


def test_inputs_violations_name_each_bad_input():
    inputs = [
        program_pb2.ProgramInput(name="shots", type=program_pb2.INPUT_TYPE_INTEGER),
        program_pb2.ProgramInput(name="shots", type=program_pb2.INPUT_TYPE_NUMBER),
        program_pb2.ProgramInput(name="2fast"),
        program_pb2.ProgramInput(name=""),
        program_pb2.ProgramInput(name="backend"),
        program_pb2.ProgramInput(name="ok", type=99),
        program_pb2.ProgramInput(name="circuits", type=program_pb2.INPUT_TYPE_CIRCUITS),
    ]
    violations = inputs_violations(inputs)
    assert [path for path, _ in violations] == [
        "program.inputs[1].name", "program.inputs[2].name", "program.inputs[3].name",
        "program.inputs[4].name", "program.inputs[5].type",
    ]
    assert "program.inputs[0]" in violations[0][1]
    assert "reserved" in violations[3][1]


def test_a_good_program_passes_every_create_check():
    check_program(good_program(), CREATE_FIELDS)


def test_every_problem_is_reported_at_once():
    program = good_program(name="Bad Name", data=" \n", visibility=7,
                           runtime=program_pb2.PROGRAM_RUNTIME_BUILTIN)
    program.ClearField("max_execution_time")
    with pytest.raises(InvalidArgument) as caught:
        check_program(program, CREATE_FIELDS)
    err = caught.value
    assert err.reason == "INVALID_PROGRAM"
    assert sorted(path for path, _ in err.field_violations) == [
        "program.data", "program.max_execution_time", "program.name", "program.runtime", "program.visibility",
    ]
    assert "program.name" in err.message


def test_only_the_named_fields_are_checked():
    # An update of the description alone must not demand a name or a source.
    assert program_violations(program_pb2.Program(description="new"), ["description"]) == []
    assert [p for p, _ in program_violations(program_pb2.Program(), ["data"])] == ["program.data"]


def test_update_mask_must_name_at_least_one_updatable_field():
    with pytest.raises(InvalidArgument) as caught:
        update_paths(field_mask_pb2.FieldMask())
    assert caught.value.reason == "INVALID_UPDATE_MASK"
    assert caught.value.field_violations[0][0] == "update_mask"

    with pytest.raises(InvalidArgument) as caught:
        update_paths(field_mask_pb2.FieldMask(paths=["description", "runtime", "owner_instance"]))
    assert caught.value.reason == "INVALID_UPDATE_MASK"
    assert len(caught.value.field_violations) == 2
    assert "'runtime'" in caught.value.field_violations[0][1]
    assert update_paths(field_mask_pb2.FieldMask(paths=["name"])) == ("name",)  # the display name may change


def test_update_mask_paths_are_deduplicated_in_order():
    mask = field_mask_pb2.FieldMask(paths=["data", "description", "data", "max_execution_time"])
    assert update_paths(mask) == ("data", "description", "max_execution_time")


def test_new_ids_are_the_name_and_a_random_suffix():
    ids = {new_program_id("my-program") for _ in range(50)}
    assert all(re.fullmatch(r"my-program-[a-z0-9]{6}", i) for i in ids)
    assert len(ids) == 50
