"""ProgramsService over a real socket, with real tokens from the auth service served beside it."""

from __future__ import annotations

import re

import grpc
import pytest
from google.protobuf import duration_pb2
from programs_support import BUILTIN_IDS, SOURCE, Caller, assert_error, update
from qruntime.programs.v1 import program_pb2, programs_service_pb2_grpc
from qruntime.programs.v1 import programs_service_pb2 as pb

from qruntime_kit.store import encode_page_token


def test_every_caller_sees_the_builtins(world):
    programs = {p.id: p for p in world.me.ListPrograms(pb.ListProgramsRequest()).programs}
    assert sorted(programs) == BUILTIN_IDS
    for program in programs.values():
        assert program.runtime == program_pb2.PROGRAM_RUNTIME_BUILTIN
        assert program.visibility == program_pb2.VISIBILITY_PUBLIC
        assert program.owner_instance == ""
    hello = world.other.get("hello-world")
    assert [(i.name, i.type, i.required) for i in hello.inputs] == [
        ("iterations", program_pb2.INPUT_TYPE_INTEGER, True),
        ("seed", program_pb2.INPUT_TYPE_INTEGER, False),
    ]
    assert hello.max_execution_time.seconds == 300 and "All done!" in hello.description
    sampler = world.reader.get("sampler")
    assert [(i.name, i.type, i.required) for i in sampler.inputs] == [
        ("circuits", program_pb2.INPUT_TYPE_CIRCUITS, True),
        ("parameter_values", program_pb2.INPUT_TYPE_ARRAY, False),
        ("circuit_indices", program_pb2.INPUT_TYPE_ARRAY, False),
        ("shots", program_pb2.INPUT_TYPE_INTEGER, False),
        ("seed", program_pb2.INPUT_TYPE_INTEGER, False),
    ]
    estimator = world.me.get("estimator")
    assert [(i.name, i.required) for i in estimator.inputs][:2] == [("circuits", True), ("observables", True)]
    assert sampler.max_execution_time.seconds == estimator.max_execution_time.seconds == 3 * 3600


def test_calls_need_a_token_and_the_right_role(world):
    assert_error(world.anonymous.error("ListPrograms", pb.ListProgramsRequest()),
                 grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    err = world.reader.error("CreateProgram", pb.CreateProgramRequest(program=program_pb2.Program(name="x")))
    assert_error(err, grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED")
    assert err.metadata["action"] == "quantum-computing.program.create"
    assert world.reader.list_ids() == BUILTIN_IDS  # but a reader reads


def test_create_stores_a_private_python_program_of_the_callers_instance(world):
    created = world.me.create("doubler", description="doubles x", id="chosen", owner_instance="crn:forged",
                              runtime=program_pb2.PROGRAM_RUNTIME_PYTHON)
    assert re.fullmatch(r"doubler-[a-z0-9]{6}", created.id)
    assert created.owner_instance == world.me.instance
    assert created.visibility == program_pb2.VISIBILITY_PRIVATE
    assert created.runtime == program_pb2.PROGRAM_RUNTIME_PYTHON
    assert created.data == SOURCE and created.description == "doubles x"
    assert created.max_execution_time.seconds == 120
    assert created.create_time.seconds > 0 and created.create_time == created.update_time
    assert world.me.get(created.id) == created
    assert world.me.list_ids() == sorted([*BUILTIN_IDS, created.id])
    assert world.me.create("doubler").id != created.id


def test_invalid_program_is_refused_with_every_field_violation_and_nothing_stored(world):
    twins = [program_pb2.ProgramInput(name="a"), program_pb2.ProgramInput(name="a")]
    program = program_pb2.Program(name="Bad_Name", data="print('hi')\n", inputs=twins)
    err = world.me.error("CreateProgram", pb.CreateProgramRequest(program=program))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert sorted(path for path, _ in err.field_violations) == [
        "program.data", "program.inputs[1].name", "program.max_execution_time", "program.name",
    ]
    assert world.me.list_ids() == BUILTIN_IDS


def test_uploading_a_builtin_or_overlong_program_is_refused(world):
    err = world.me.error("CreateProgram", pb.CreateProgramRequest(program=program_pb2.Program(
        name="sneaky", data=SOURCE, max_execution_time=duration_pb2.Duration(seconds=8 * 3600 + 1),
        runtime=program_pb2.PROGRAM_RUNTIME_BUILTIN)))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert sorted(p for p, _ in err.field_violations) == ["program.max_execution_time", "program.runtime"]


def test_the_jobs_service_token_cannot_create_programs(world):
    err = world.service.error("CreateProgram", pb.CreateProgramRequest(program=program_pb2.Program(
        name="orphan", data=SOURCE, max_execution_time=duration_pb2.Duration(seconds=60))))
    assert_error(err, grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CALL_NOT_ALLOWED")


def test_another_instances_private_program_looks_exactly_like_an_unknown_one(world):
    private = world.me.create("secret")
    hidden = world.other.error("GetProgram", pb.GetProgramRequest(program_id=private.id))
    unknown = world.other.error("GetProgram", pb.GetProgramRequest(program_id="secret-zzzzzz"))
    assert_error(hidden, grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert_error(unknown, grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert hidden.message.replace(private.id, "ID") == unknown.message.replace("secret-zzzzzz", "ID")
    assert hidden.metadata.keys() == unknown.metadata.keys()
    assert private.id not in world.other.list_ids()


def test_public_programs_are_seen_by_all_but_their_source_only_by_the_owner(world):
    public = world.me.create("shared", visibility=program_pb2.VISIBILITY_PUBLIC)
    seen = world.other.get(public.id)
    assert seen.id == public.id and seen.data == "" and seen.owner_instance == world.me.instance
    assert public.id in world.other.list_ids()
    assert world.me.get(public.id).data == SOURCE


def test_the_jobs_service_reads_any_program_with_its_source_but_lists_none(world):
    private = world.me.create("secret")
    assert world.service.get(private.id).data == SOURCE  # the program of a job it is about to run
    assert_error(world.service.error("ListPrograms", pb.ListProgramsRequest()),
                 grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CALL_NOT_ALLOWED")
    assert private.id not in world.other.list_ids()


def test_listing_pages_by_id_without_sources(world):
    created = [world.me.create(f"prog{i}").id for i in range(5)]
    world.other.create("not-mine")
    seen, token, pages = [], "", 0
    while True:
        response = world.me.ListPrograms(pb.ListProgramsRequest(page_size=3, page_token=token))
        pages += 1
        assert len(response.programs) <= 3 and all(p.data == "" for p in response.programs)
        seen += [p.id for p in response.programs]
        token = response.next_page_token
        if not token:
            break
    assert seen == sorted([*BUILTIN_IDS, *created]) and pages == 3


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (pb.ListProgramsRequest(page_size=-1), "INVALID_PAGE_SIZE"),
        (pb.ListProgramsRequest(page_token="not a token!"), "INVALID_PAGE_TOKEN"),
        (pb.ListProgramsRequest(page_token=encode_page_token({"offset": 3})), "INVALID_PAGE_TOKEN"),
    ],
)
def test_bad_paging_is_invalid_argument(world, request_, reason):
    assert_error(world.me.error("ListPrograms", request_), grpc.StatusCode.INVALID_ARGUMENT, reason)


def test_owner_updates_the_fields_in_the_mask_only(world):
    created = world.me.create("doubler", description="old")
    new = program_pb2.Program(id=created.id, description="new", visibility=program_pb2.VISIBILITY_PUBLIC,
                              name="renamed", data="ignored: not in the mask",
                              max_execution_time=duration_pb2.Duration(seconds=999))
    updated = world.me.UpdateProgram(update(new, "description", "visibility")).program
    assert (updated.description, updated.visibility) == ("new", program_pb2.VISIBILITY_PUBLIC)
    assert (updated.name, updated.data, updated.max_execution_time.seconds) == ("doubler", SOURCE, 120)
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()
    assert world.me.get(created.id) == updated

    source = "def main(backend, user_messenger, y):\n    return y\n"
    inputs = [program_pb2.ProgramInput(name="y", type=program_pb2.INPUT_TYPE_NUMBER, required=True)]
    new = program_pb2.Program(id=created.id, data=source, inputs=inputs,
                              max_execution_time=duration_pb2.Duration(seconds=60))
    updated = world.me.UpdateProgram(update(new, "data", "inputs", "max_execution_time")).program
    assert (updated.data, list(updated.inputs), updated.max_execution_time.seconds) == (source, inputs, 60)
    assert updated.description == "new"


def test_owner_renames_a_program_and_its_id_stays(world):
    created = world.me.create("doubler")
    renamed = world.me.UpdateProgram(update(program_pb2.Program(id=created.id, name="tripler"), "name")).program
    assert (renamed.id, renamed.name) == (created.id, "tripler")
    assert renamed.data == created.data and renamed.description == created.description
    assert world.me.get(created.id) == renamed
    assert created.id in world.me.list_ids()


@pytest.mark.parametrize("name", ["", "Tripler", "has space", "-leading-hyphen", "x" * 64])
def test_a_new_name_is_validated_like_at_creation(world, name):
    created = world.me.create("doubler")
    err = world.me.error("UpdateProgram", update(program_pb2.Program(id=created.id, name=name), "name"))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert [p for p, _ in err.field_violations] == ["program.name"]
    assert world.me.get(created.id) == created


def test_failed_update_leaves_the_stored_program_as_it_was(world):
    created = world.me.create("doubler")
    broken = program_pb2.Program(id=created.id, data="def main(:\n", description="should not land")
    err = world.me.error("UpdateProgram", update(broken, "description", "data"))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM")
    assert [p for p, _ in err.field_violations] == ["program.data"]
    assert world.me.get(created.id) == created


@pytest.mark.parametrize(("paths", "bad"), [((), "update_mask"), (("description", "runtime"), "update_mask"),
                                             (("owner_instance",), "update_mask"), (("id",), "update_mask")])
def test_update_mask_is_required_and_limited(world, paths, bad):
    created = world.me.create("doubler")
    err = world.me.error("UpdateProgram", update(program_pb2.Program(id=created.id, name="x"), *paths))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPDATE_MASK")
    assert {p for p, _ in err.field_violations} == {bad}
    assert world.me.get(created.id) == created


def test_only_the_owner_changes_or_deletes_a_program(world):
    private = world.me.create("secret")
    public = world.me.create("shared", visibility=program_pb2.VISIBILITY_PUBLIC)

    def change(program):
        return update(program_pb2.Program(id=program.id, description="mine now"), "description")

    assert_error(world.other.error("UpdateProgram", change(private)),
                 grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert_error(world.other.error("DeleteProgram", pb.DeleteProgramRequest(program_id=private.id)),
                 grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert_error(world.other.error("UpdateProgram", change(public)),
                 grpc.StatusCode.PERMISSION_DENIED, "NOT_PROGRAM_OWNER")
    assert_error(world.other.error("DeleteProgram", pb.DeleteProgramRequest(program_id=public.id)),
                 grpc.StatusCode.PERMISSION_DENIED, "NOT_PROGRAM_OWNER")
    # The jobs service reads programs but may change none.
    assert_error(world.service.error("DeleteProgram", pb.DeleteProgramRequest(program_id=private.id)),
                 grpc.StatusCode.PERMISSION_DENIED, "SERVICE_CALL_NOT_ALLOWED")
    assert world.me.get(private.id) == private and world.me.get(public.id) == public


@pytest.mark.parametrize("program_id", BUILTIN_IDS)
def test_builtins_are_read_only(world, program_id):
    before = world.me.get(program_id)
    change = update(program_pb2.Program(id=program_id, description="hijacked"), "description")
    assert_error(world.me.error("UpdateProgram", change),
                 grpc.StatusCode.PERMISSION_DENIED, "BUILTIN_PROGRAM_READ_ONLY")
    assert_error(world.me.error("DeleteProgram", pb.DeleteProgramRequest(program_id=program_id)),
                 grpc.StatusCode.PERMISSION_DENIED, "BUILTIN_PROGRAM_READ_ONLY")
    assert world.me.get(program_id) == before


def test_owner_deletes_a_program(world):
    created = world.me.create("doubler")
    world.me.DeleteProgram(pb.DeleteProgramRequest(program_id=created.id))
    assert_error(world.me.error("GetProgram", pb.GetProgramRequest(program_id=created.id)),
                 grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert_error(world.me.error("DeleteProgram", pb.DeleteProgramRequest(program_id=created.id)),
                 grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert created.id not in world.me.list_ids()


def test_an_empty_program_id_is_invalid(world):
    err = world.me.error("GetProgram", pb.GetProgramRequest())
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "PROGRAM_ID_MISSING")
    assert err.field_violations == [("program_id", "required")]
    err = world.me.error("UpdateProgram", update(program_pb2.Program(description="x"), "description"))
    assert err.field_violations == [("program.id", "required")]


@pytest.mark.postgres
def test_text_postgresql_cannot_store_is_the_callers_error_not_the_servers(start_suite, postgres_database):
    suite = start_suite("programs", database_url=postgres_database)
    with suite.channel() as channel:
        me = Caller(programs_service_pb2_grpc.ProgramsServiceStub(channel), suite.metadata(), suite.instance)
        for method, request in [
            ("GetProgram", pb.GetProgramRequest(program_id="sampler\x00")),
            ("DeleteProgram", pb.DeleteProgramRequest(program_id="x\x00")),
            ("CreateProgram", pb.CreateProgramRequest(program=program_pb2.Program(
                name="nul", description="\x00", data=SOURCE, max_execution_time=duration_pb2.Duration(seconds=9)))),
        ]:
            assert_error(me.error(method, request), grpc.StatusCode.INVALID_ARGUMENT, "NUL_CHARACTER")
        forged = encode_page_token({"after": "\x00"})
        assert_error(me.error("ListPrograms", pb.ListProgramsRequest(page_token=forged)),
                     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
        assert me.list_ids() == BUILTIN_IDS
