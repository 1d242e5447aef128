"""Uploads as a hostile caller sends them: the size caps, sources that attack the compiler, and the
service answering everyone else while a source is being checked."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from programs_support import SOURCE, assert_error, make_world, update
from qruntime.programs.v1 import program_pb2
from qruntime.programs.v1 import programs_service_pb2 as pb

from qruntime_programs.component import SERVICE

MiB = 1024 * 1024
# Compiling this takes the compiler minutes of CPU (nested lambdas, repeated): about 885 KB.
CPU_BURNER = ("x = " + "lambda: " * 95 + "1\n") * 1150


def program(**fields) -> program_pb2.Program:
    values = {"name": "doubler", "data": SOURCE, "max_execution_time": duration_pb2.Duration(seconds=60), **fields}
    return program_pb2.Program(**values)


def create(**fields) -> pb.CreateProgramRequest:
    return pb.CreateProgramRequest(program=program(**fields))


def padded_source(size: int) -> str:
    """A valid program of exactly size bytes: real code, then comments."""
    code = SOURCE + "".join(f"value_{i} = {i} * 2\n" for i in range(5000))
    padding = size - len(code.encode())
    lines, rest = divmod(padding, 80)
    return code + ("#" * 79 + "\n") * lines + "#" * rest


@pytest.mark.parametrize(
    ("fields", "path", "cap"),
    [
        ({"data": padded_source(MiB + 1)}, "program.data", "at most 1 MiB (1048576 bytes of UTF-8); it is 1048577"),
        # 400,000 characters, 1.2 MB: the cap counts bytes, not characters.
        ({"data": SOURCE + "# " + "€" * 400_000}, "program.data", "at most 1 MiB (1048576 bytes of UTF-8)"),
        ({"description": "d" * 4097}, "program.description", "at most 4 KiB (4096 bytes of UTF-8); it is 4097"),
        ({"inputs": [program_pb2.ProgramInput(name=f"x{i}") for i in range(101)]},
         "program.inputs", "at most 100 inputs; got 101"),
        ({"inputs": [program_pb2.ProgramInput(name="x" * 65)]}, "program.inputs[0].name",
         "at most 64 bytes of UTF-8; it is 65"),
        ({"inputs": [program_pb2.ProgramInput(name="x", description="é" * 513)]}, "program.inputs[0].description",
         "at most 1 KiB (1024 bytes of UTF-8); it is 1026"),
    ],
)
def test_each_cap_is_refused_with_one_violation_naming_it(world, fields, path, cap):
    err = world.me.error("CreateProgram", create(**fields))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert [p for p, _ in err.field_violations] == [path]
    assert cap in err.field_violations[0][1]
    assert world.me.list_ids() == ["estimator", "hello-world", "sampler"]


def test_caps_apply_to_updates_too_and_the_program_stays_as_it_was(world):
    created = world.me.create("doubler")
    too_big = program_pb2.Program(id=created.id, data=padded_source(MiB + 1), description="d" * 5000)
    err = world.me.error("UpdateProgram", update(too_big, "data", "description"))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert sorted(p for p, _ in err.field_violations) == ["program.data", "program.description"]
    assert world.me.get(created.id) == created


def test_a_source_of_exactly_1_mib_is_accepted(world):
    source = padded_source(MiB)
    assert len(source.encode()) == MiB
    created = world.me.CreateProgram(create(data=source, description="d" * 4096)).program
    assert created.data == source and created.version == 1
    assert world.me.get(created.id).data == source


def test_a_request_far_past_the_caps_is_refused_on_its_length(world):
    started = time.monotonic()
    err = world.me.error("CreateProgram", create(data="#" * (40 * MiB)))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert err.field_violations == [
        ("program.data", "must be at most 1 MiB (1048576 bytes of UTF-8); it is 41943040 bytes")]
    assert time.monotonic() - started < 5  # transfer and decoding; nothing compiles it


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "(" * 100_000 + ")" * 100_000,  # 100,000 nested parentheses
        "x = " + "-" * 900_000 + "1",  # a 900 KB nested expression
        "x = a" + ".b" * 450_000,
        "def main(backend, user_messenger):\n    return " + "+".join(["1"] * 300_000) + "\n",
    ],
    ids=["parentheses", "unary", "attributes", "sum"],
)
def test_sources_that_attack_the_compiler_are_invalid_arguments_and_the_service_stays_up(world, source):
    err = world.me.error("CreateProgram", create(data=source))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    ((path, problem),) = err.field_violations
    assert path == "program.data" and problem.startswith("does not compile")
    assert world.me.get("hello-world").id == "hello-world"


def test_every_problem_of_a_program_is_reported_with_its_sources_at_once(world):
    bad = program(name="Bad_Name", data="def main(:\n", inputs=[program_pb2.ProgramInput(name="2x")])
    err = world.me.error("CreateProgram", pb.CreateProgramRequest(program=bad))
    assert sorted(p for p, _ in err.field_violations) == ["program.data", "program.inputs[0].name", "program.name"]
    assert "does not compile: invalid syntax (line 1)" in dict(err.field_violations)["program.data"]


def test_only_the_owner_gets_a_change_checked(world):
    private = world.me.create("secret")
    public = world.me.create("shared", visibility=program_pb2.VISIBILITY_PUBLIC)
    for sent in ({"data": padded_source(MiB + 1)}, {"data": CPU_BURNER}, {"data": "def main(:\n"}):
        started = time.monotonic()
        for target, code, reason in [(private, grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND"),
                                     (public, grpc.StatusCode.PERMISSION_DENIED, "NOT_PROGRAM_OWNER")]:
            change = update(program_pb2.Program(id=target.id, **sent), "data")
            assert_error(world.other.error("UpdateProgram", change), code, reason)
            assert_error(world.reader.error("UpdateProgram", change),
                         grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED")
        assert time.monotonic() - started < 2  # refused before any check, not after one
    assert world.me.get(private.id) == private and world.me.get(public.id) == public


@pytest.mark.slow
def test_the_service_answers_within_a_second_while_a_hostile_upload_is_checked(start_suite):
    suite = start_suite("programs", source_check_seconds=3)
    world = make_world(suite)
    health = health_pb2_grpc.HealthStub(world.channel)
    outcome = {}

    def upload() -> None:
        started = time.monotonic()
        outcome["error"] = world.me.error("CreateProgram", create(data=CPU_BURNER))
        outcome["seconds"] = time.monotonic() - started

    uploading = threading.Thread(target=upload)
    uploading.start()
    time.sleep(0.3)  # the upload's worker is compiling by now
    slowest, answers = 0.0, 0
    while uploading.is_alive():
        started = time.monotonic()
        status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert "hello-world" in world.me.list_ids()
        slowest, answers = max(slowest, time.monotonic() - started), answers + 1
        time.sleep(0.1)
    uploading.join()
    world.close()

    assert answers >= 5 and slowest < 1.0, (answers, slowest)
    err = outcome["error"]
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert err.field_violations == [
        ("program.data", "checking it took longer than 3 s, the limit: simplify the source")]
    assert 3 <= outcome["seconds"] < 6


@pytest.mark.slow
def test_a_source_that_exhausts_its_workers_memory_costs_only_the_worker(start_suite):
    suite = start_suite("programs", source_check_memory_mib=64)
    world = make_world(suite)
    err = world.me.error("CreateProgram", create(data="x = " + "a," * 500_000))  # about 500 MiB to compile
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    ((path, problem),) = err.field_violations
    # Killed in its memory cgroup where the machine has one; a MemoryError under RLIMIT_AS where not.
    assert path == "program.data" and ("more than 64 MiB of memory" in problem or "too large" in problem), problem
    assert world.me.create("doubler").version == 1  # the service goes on, and so do its checks
    world.close()
