"""Program versions over a real socket: every change is a version, each kept and readable, on SQLite
and on PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from programs_support import SOURCE, World, assert_error, make_world, update
from qruntime.programs.v1 import program_pb2
from qruntime.programs.v1 import programs_service_pb2 as pb

from qruntime_kit.store import encode_page_token

NEW_SOURCE = "def main(backend, user_messenger, **inputs):\n    return inputs['x'] * 3\n"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_world(request, start_suite):
    """Callers of a fresh suite whose stores are SQLite files, or one fresh PostgreSQL database."""
    overrides = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_database")
    world = make_world(start_suite("programs", **overrides))
    yield world
    world.close()


def versions(caller, program_id: str, page_size: int = 0, page_token: str = "") -> pb.ListProgramVersionsResponse:
    return caller.ListProgramVersions(
        pb.ListProgramVersionsRequest(program_id=program_id, page_size=page_size, page_token=page_token))


def test_create_update_get_by_version_and_delete(any_world: World):
    me = any_world.me
    created = me.create("doubler")
    assert created.version == 1
    updated = me.UpdateProgram(update(program_pb2.Program(id=created.id, data=NEW_SOURCE), "data")).program
    assert updated.version == 2

    assert me.get(created.id, version=1) == created  # the old source, as it was
    assert me.get(created.id, version=1).data == SOURCE
    assert me.get(created.id) == me.get(created.id, version=2) == updated
    assert me.get(created.id).data == NEW_SOURCE
    assert [p.version for p in versions(me, created.id).programs] == [2, 1]

    me.DeleteProgram(pb.DeleteProgramRequest(program_id=created.id))
    for version in (0, 1, 2):
        err = me.error("GetProgram", pb.GetProgramRequest(program_id=created.id, version=version))
        assert_error(err, grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert_error(me.error("ListProgramVersions", pb.ListProgramVersionsRequest(program_id=created.id)),
                 grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")


def test_an_update_that_changes_nothing_makes_no_version(world: World):
    created = world.me.create("doubler", description="same")
    same = program_pb2.Program(id=created.id, description="same", data=SOURCE)
    assert world.me.UpdateProgram(update(same, "description", "data")).program == created
    renamed = world.me.UpdateProgram(update(program_pb2.Program(id=created.id, name="tripler"), "name")).program
    public = program_pb2.Program(id=created.id, visibility=program_pb2.VISIBILITY_PUBLIC)
    published = world.me.UpdateProgram(update(public, "visibility")).program
    assert (renamed.version, published.version) == (2, 3)
    assert world.me.get(created.id, version=2).visibility == program_pb2.VISIBILITY_PRIVATE  # as it was then


def test_every_version_is_listed_newest_first_in_pages_without_sources(world: World):
    created = world.me.create("doubler")
    for n in range(2, 6):
        world.me.UpdateProgram(update(program_pb2.Program(id=created.id, description=f"take {n}"), "description"))
    seen, token = [], ""
    while True:
        page = versions(world.me, created.id, page_size=2, page_token=token)
        assert len(page.programs) <= 2 and all(p.data == "" and p.id == created.id for p in page.programs)
        seen += [(p.version, p.description) for p in page.programs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [(5, "take 5"), (4, "take 4"), (3, "take 3"), (2, "take 2"), (1, "")]


def test_a_page_token_pages_only_the_program_it_came_from(world: World):
    first = world.me.create("first")
    second = world.me.create("second")
    for program in (first, second):
        world.me.UpdateProgram(update(program_pb2.Program(id=program.id, description="v2"), "description"))
    token = versions(world.me, first.id, page_size=1).next_page_token
    assert token
    for bad in (token, encode_page_token({"program": second.id, "before": "2"}), "not a token"):
        err = world.me.error("ListProgramVersions",
                             pb.ListProgramVersionsRequest(program_id=second.id, page_token=bad))
        assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


def test_a_version_the_program_never_had_is_not_found_and_a_negative_one_invalid(world: World):
    created = world.me.create("doubler")
    err = world.me.error("GetProgram", pb.GetProgramRequest(program_id=created.id, version=2))
    assert_error(err, grpc.StatusCode.NOT_FOUND, "PROGRAM_VERSION_NOT_FOUND")
    assert (err.metadata["version"], err.metadata["latest_version"]) == ("2", "1")
    err = world.me.error("GetProgram", pb.GetProgramRequest(program_id=created.id, version=-1))
    assert_error(err, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PROGRAM_VERSION")
    assert [p for p, _ in err.field_violations] == ["version"]


def test_the_jobs_service_reads_any_version_with_its_source(any_world: World):
    created = any_world.me.create("secret")
    any_world.me.UpdateProgram(update(program_pb2.Program(id=created.id, data=NEW_SOURCE), "data"))
    old = any_world.service.get(created.id, version=1)
    assert (old.version, old.data, old.owner_instance) == (1, SOURCE, any_world.me.instance)
    assert any_world.service.get(created.id, version=2).data == NEW_SOURCE
    assert [p.version for p in versions(any_world.me, created.id).programs] == [2, 1]


def test_other_instances_read_versions_only_as_the_latest_lets_them(world: World):
    private = world.me.create("secret")
    world.me.UpdateProgram(update(program_pb2.Program(id=private.id, data=NEW_SOURCE), "data"))
    hidden = world.other.error("GetProgram", pb.GetProgramRequest(program_id=private.id, version=1))
    unknown = world.other.error("GetProgram", pb.GetProgramRequest(program_id="secret-zzzzzz", version=1))
    assert_error(hidden, grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert hidden.message.replace(private.id, "ID") == unknown.message.replace("secret-zzzzzz", "ID")
    for version in (3, 9):  # not even whether a version exists
        err = world.other.error("GetProgram", pb.GetProgramRequest(program_id=private.id, version=version))
        assert_error(err, grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    assert_error(world.other.error("ListProgramVersions", pb.ListProgramVersionsRequest(program_id=private.id)),
                 grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")

    public = program_pb2.Program(id=private.id, visibility=program_pb2.VISIBILITY_PUBLIC)
    world.me.UpdateProgram(update(public, "visibility"))
    seen = world.other.get(private.id, version=1)
    assert seen.version == 1 and seen.data == ""  # the source stays the owner's (and the services')


@pytest.mark.parametrize("program_id", ["hello-world", "sampler", "estimator"])
def test_builtins_are_version_1(world: World, program_id):
    assert world.me.get(program_id).version == 1
    assert world.reader.get(program_id, version=1) == world.reader.get(program_id)
    assert [p.version for p in versions(world.me, program_id).programs] == [1]
    err = world.me.error("GetProgram", pb.GetProgramRequest(program_id=program_id, version=2))
    assert_error(err, grpc.StatusCode.NOT_FOUND, "PROGRAM_VERSION_NOT_FOUND")
