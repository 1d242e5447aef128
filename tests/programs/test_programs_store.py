"""ProgramStore on SQLite (always) and PostgreSQL (marked postgres; skipped when the server is down)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import sqlalchemy as sa

from qruntime_kit.errors import AlreadyExists, Unavailable
from qruntime_programs.builtins import BUILTIN_PROGRAMS, HELLO_WORLD
from qruntime_programs.model import InputType, Program, ProgramInput, Runtime, Visibility
from qruntime_programs.store import ProgramStore, metadata

MINE, THEIRS = "crn:v1:test:a/acct:mine::", "crn:v1:test:a/acct:theirs::"


@pytest.fixture
def store(store_url):
    opened = ProgramStore()
    opened.open(store_url)
    yield opened
    opened.close()


def user_program(program_id: str, owner: str = MINE, visibility: Visibility = Visibility.PRIVATE,
                 **fields) -> Program:
    return Program(
        id=program_id,
        name=program_id.rsplit("-", 1)[0] or program_id,
        description=fields.pop("description", f"{program_id} does things"),
        inputs=fields.pop("inputs", (ProgramInput("x", InputType.INTEGER, True, "an x"),
                                     ProgramInput("labels", InputType.ARRAY))),
        max_execution_seconds=fields.pop("max_execution_seconds", 600),
        visibility=visibility,
        runtime=Runtime.PYTHON,
        owner_instance=owner,
        data=fields.pop("data", "def main(backend, user_messenger, **inputs):\n    return 1\n"),
    )


def test_tables_carry_the_service_prefix(store):
    names = sa.inspect(store.engine).get_table_names()
    assert "programs_program" in names
    assert all(n.startswith("programs_") for n in metadata.tables)


def test_created_program_reads_back_equal_with_utc_times(store):
    created = store.create(user_program("calc-abc123"))
    got = store.get("calc-abc123")
    assert got == created
    assert got.inputs == (
        ProgramInput("x", InputType.INTEGER, True, "an x"), ProgramInput("labels", InputType.ARRAY),
    )
    assert got.create_time.tzinfo == dt.UTC and got.create_time == got.update_time
    assert abs(dt.datetime.now(dt.UTC) - got.create_time) < dt.timedelta(minutes=1)


def test_unknown_program_is_none(store):
    assert store.get("nope") is None


def test_duplicate_id_is_already_exists_and_keeps_the_first(store):
    store.create(user_program("calc-abc123", description="first"))
    with pytest.raises(AlreadyExists) as caught:
        store.create(user_program("calc-abc123", description="second", owner=THEIRS))
    assert caught.value.reason == "PROGRAM_ALREADY_EXISTS"
    assert store.get("calc-abc123").description == "first"


def test_listing_shows_public_and_own_programs_only(store):
    store.seed_builtins(BUILTIN_PROGRAMS)
    store.create(user_program("mine-aaaaaa"))
    store.create(user_program("theirs-private-bbbbbb", owner=THEIRS))
    store.create(user_program("theirs-public-cccccc", owner=THEIRS, visibility=Visibility.PUBLIC))

    def ids(instance):
        return [p.id for p in store.list_visible(instance, limit=100).programs]

    builtin_ids = sorted(p.id for p in BUILTIN_PROGRAMS)
    assert ids(MINE) == sorted([*builtin_ids, "mine-aaaaaa", "theirs-public-cccccc"])
    assert ids(THEIRS) == sorted([*builtin_ids, "theirs-private-bbbbbb", "theirs-public-cccccc"])
    assert ids("") == sorted([*builtin_ids, "theirs-public-cccccc"])  # no instance: public only
    assert "theirs-private-bbbbbb" in ids(None) and "mine-aaaaaa" in ids(None)  # services see all


def test_pages_follow_bytewise_id_order_without_gaps_or_repeats_and_leave_out_sources(store):
    # '-' sorts before letters bytewise but is ignored by natural-language collations.
    wanted = ["a-z", "ab", "b-1", "b0", "ba", "c", "c-c"]
    for program_id in wanted:
        store.create(user_program(program_id))
    store.create(user_program("hidden", owner=THEIRS))
    seen, after, pages = [], None, 0
    while True:
        page = store.list_visible(MINE, limit=3, after=after)
        pages += 1
        assert len(page.programs) <= 3
        assert all(p.data == "" for p in page.programs)
        seen += [p.id for p in page.programs]
        if not page.more:
            break
        after = page.programs[-1].id
    assert seen == sorted(wanted)
    assert pages == 3


def test_full_last_page_says_no_more(store):
    for program_id in ("a", "b", "c"):
        store.create(user_program(program_id))
    page = store.list_visible(MINE, limit=3)
    assert [p.id for p in page.programs] == ["a", "b", "c"] and not page.more


def test_update_changes_only_the_given_fields(store):
    before = store.create(user_program("calc-abc123"))
    after = store.update("calc-abc123", {
        "description": "new words",
        "visibility": Visibility.PUBLIC,
        "inputs": (ProgramInput("y", InputType.CIRCUITS, True),),
        "max_execution_seconds": 60,
    })
    assert after == store.get("calc-abc123")
    assert after.description == "new words"
    assert (after.visibility, after.max_execution_seconds) == (Visibility.PUBLIC, 60)
    assert after.inputs == (ProgramInput("y", InputType.CIRCUITS, True),)
    assert (after.data, after.name, after.owner_instance) == (before.data, before.name, before.owner_instance)
    assert after.create_time == before.create_time and after.update_time > before.update_time


def test_update_renames_without_changing_the_id(store):
    store.create(user_program("calc-abc123"))
    after = store.update("calc-abc123", {"name": "calculator"})
    assert (after.id, after.name) == ("calc-abc123", "calculator")
    assert store.get("calc-abc123") == after


def test_update_of_unknown_program_is_none_and_fixed_fields_are_refused(store):
    assert store.update("nope", {"description": "x"}) is None
    store.create(user_program("calc-abc123"))
    with pytest.raises(ValueError):
        store.update("calc-abc123", {"owner_instance": THEIRS})
    assert store.get("calc-abc123").owner_instance == MINE


def test_delete(store):
    store.create(user_program("calc-abc123"))
    assert store.delete("calc-abc123") is True
    assert store.get("calc-abc123") is None
    assert store.delete("calc-abc123") is False


def test_seeding_is_idempotent(store):
    first = store.seed_builtins(BUILTIN_PROGRAMS)
    assert sorted(first.inserted) == sorted(p.id for p in BUILTIN_PROGRAMS)
    stored = store.get("hello-world")
    again = store.seed_builtins(BUILTIN_PROGRAMS)
    assert (again.inserted, again.updated, again.removed) == ([], [], [])
    assert store.get("hello-world") == stored  # update_time untouched when nothing changed
    assert dataclasses.replace(stored, create_time=None, update_time=None) == HELLO_WORLD


def test_new_release_updates_changed_builtins_and_removes_retired_ones_only(store):
    store.seed_builtins(BUILTIN_PROGRAMS)
    before = store.get("hello-world")
    user_public = store.create(user_program("tool-zzzzzz", visibility=Visibility.PUBLIC))
    release = (dataclasses.replace(HELLO_WORLD, description="A newer sample.", max_execution_seconds=600),)

    report = store.seed_builtins(release)

    assert report.updated == ["hello-world"] and report.inserted == []
    assert sorted(report.removed) == ["estimator", "sampler"]
    after = store.get("hello-world")
    assert (after.description, after.max_execution_seconds) == ("A newer sample.", 600)
    assert after.create_time == before.create_time and after.update_time > before.update_time
    assert store.get("sampler") is None
    assert store.get("tool-zzzzzz") == user_public


def test_seeding_never_overwrites_an_uploaded_program(store):
    squatter = store.create(user_program("hello-world", visibility=Visibility.PUBLIC))
    report = store.seed_builtins(BUILTIN_PROGRAMS)
    assert "hello-world" not in report.inserted + report.updated + report.removed
    assert store.get("hello-world") == squatter


def test_a_store_that_is_not_open_is_unavailable():
    with pytest.raises(Unavailable) as caught:
        ProgramStore().get("hello-world")
    assert caught.value.reason == "STORE_NOT_OPEN"



# Versions


def test_a_new_program_is_version_1_and_that_version_is_kept(store):
    created = store.create(user_program("calc-abc123"))
    assert created.version == 1
    assert store.get("calc-abc123") == created
    assert store.get_version("calc-abc123", 1) == created
    assert store.get_version("calc-abc123", 2) is None and store.get_version("nope", 1) is None


def test_every_update_that_changes_something_is_a_new_version_and_the_old_ones_stay(store):
    first = store.create(user_program("calc-abc123", data="def main(backend, user_messenger):\n    return 1\n"))
    second = store.update("calc-abc123", {"data": "def main(backend, user_messenger):\n    return 2\n"})
    third = store.update("calc-abc123", {"visibility": Visibility.PUBLIC, "description": "public now"})
    assert (second.version, third.version) == (2, 3)
    assert store.get("calc-abc123") == third
    assert store.get_version("calc-abc123", 1) == first
    assert store.get_version("calc-abc123", 2) == second
    assert store.get_version("calc-abc123", 3) == third
    assert "return 1" in store.get_version("calc-abc123", 1).data and "return 2" in third.data
    assert store.get_version("calc-abc123", 1).visibility == Visibility.PRIVATE  # as it was then
    assert second.update_time == store.get_version("calc-abc123", 2).update_time > first.update_time


def test_an_update_that_changes_nothing_keeps_the_version_and_its_time(store):
    created = store.create(user_program("calc-abc123"))
    same = store.update("calc-abc123", {"description": created.description, "inputs": created.inputs,
                                         "visibility": created.visibility})
    assert same == created
    assert [v.version for v in store.list_versions("calc-abc123", limit=10).versions] == [1]


def test_versions_list_newest_first_in_pages_without_sources(store):
    store.create(user_program("calc-abc123"))
    for n in range(2, 6):
        store.update("calc-abc123", {"description": f"take {n}"})
    store.create(user_program("other-zzzzzz"))
    seen, before = [], None
    while True:
        page = store.list_versions("calc-abc123", limit=2, before=before)
        assert all(v.data == "" and v.id == "calc-abc123" for v in page.versions)
        seen += [(v.version, v.description) for v in page.versions]
        if not page.more:
            break
        before = page.versions[-1].version
    assert [v for v, _ in seen] == [5, 4, 3, 2, 1]
    assert seen[0][1] == "take 5" and seen[-1][1] == "calc-abc123 does things"
    assert store.list_versions("nope", limit=10).versions == []


def test_delete_removes_every_version(store):
    store.create(user_program("calc-abc123"))
    store.update("calc-abc123", {"description": "two"})
    assert store.delete("calc-abc123")
    assert store.get_version("calc-abc123", 1) is None and store.get_version("calc-abc123", 2) is None
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM programs_version")).scalar() == 0
    store.create(user_program("calc-abc123"))  # the id may be used again, from version 1
    assert store.get("calc-abc123").version == 1


def test_concurrent_updates_each_make_their_own_version(store):
    import concurrent.futures

    store.create(user_program("calc-abc123"))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: store.update("calc-abc123", {"description": f"by {n}"}), range(8)))
    assert sorted(r.version for r in results) == list(range(2, 10))
    versions = store.list_versions("calc-abc123", limit=20).versions
    assert [v.version for v in versions] == list(range(9, 0, -1))
    assert {v.description for v in versions[:-1]} == {f"by {n}" for n in range(8)}


def test_builtins_are_version_1_even_after_a_release_changes_them(store):
    store.seed_builtins(BUILTIN_PROGRAMS)
    assert store.get_version("hello-world", 1) == store.get("hello-world")
    store.seed_builtins((dataclasses.replace(HELLO_WORLD, description="A newer sample."), *BUILTIN_PROGRAMS[1:]))
    after = store.get("hello-world")
    assert after.version == 1 and store.get_version("hello-world", 1) == after
    assert after.description == "A newer sample."
    store.seed_builtins(BUILTIN_PROGRAMS[:1])
    assert store.get_version("sampler", 1) is None


def test_a_store_from_before_versions_is_upgraded_in_place(store_url):
    # The tables as the release before versions made them.
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    old = sa.MetaData()
    sa.Table("programs_program", old, *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                        for c in metadata.tables["programs_program"].c if c.name != "version"))
    old.create_all(engine)
    row = {"id": "calc-abc123", "name": "calc", "description": "d", "inputs": [], "max_execution_seconds": 60,
           "visibility": "PRIVATE", "runtime": "PYTHON", "owner_instance": MINE, "data": "def main(b, u): pass\n",
           "create_time": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "update_time": dt.datetime(2024, 2, 1, tzinfo=dt.UTC)}
    with engine.begin() as conn:
        conn.execute(sa.insert(old.tables["programs_program"]).values(row))
    engine.dispose()

    upgraded = ProgramStore()
    upgraded.open(store_url)
    upgraded.open(store_url)  # a second start finds it done
    try:
        program = upgraded.get("calc-abc123")
        assert program.version == 1 and program.data == row["data"]
        assert upgraded.get_version("calc-abc123", 1) == program
        assert upgraded.update("calc-abc123", {"description": "new"}).version == 2
    finally:
        upgraded.close()
