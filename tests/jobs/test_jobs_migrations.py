"""The jobs, programs and auth stores' schema migrations (Alembic), on SQLite and PostgreSQL: a new
store gets exactly the schema the store code declares, a store the previous release made is upgraded
in place with its jobs (or accounts and keys), and replicas starting together migrate once."""

from __future__ import annotations

import concurrent.futures
import datetime as dt

import previous_release
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from qruntime_auth import store as auth_store
from qruntime_auth.store import AuthStore
from qruntime_jobs import store as jobs_store
from qruntime_jobs.filters import parse_filter
from qruntime_jobs.store import DONE, QUEUED, RUNNING, JobStore
from qruntime_kit import migrations
from qruntime_kit.store import create_engine
from qruntime_programs import store as programs_store
from qruntime_programs.store import ProgramStore

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
PRIMITIVE_INPUTS = '{"__primitive_input__":{"sampler":{"options":{"defaultShots":10}}}}'  # as typed.py stores them


def schema_differences(url: str, metadata: sa.MetaData) -> list:
    """What autogenerate would change to make the database match metadata ([] when they agree)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "include_name": lambda name, kind, _parent: kind != "table" or name in metadata.tables})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("module", [jobs_store, programs_store, auth_store], ids=["jobs", "programs", "auth"])
def test_a_new_store_gets_exactly_the_declared_schema(database_url, module):
    engine = create_engine(database_url)
    try:
        head = migrations.head_revision(module.MIGRATIONS)
        applied = migrations.upgrade(engine, module.MIGRATIONS, version_table=module.VERSION_TABLE)
        assert applied[0] == "0001" and applied[-1] == head  # every revision, oldest first
        assert migrations.upgrade(engine, module.MIGRATIONS, version_table=module.VERSION_TABLE) == []
        assert migrations.current_revision(engine, version_table=module.VERSION_TABLE) == head
    finally:
        engine.dispose()
    # A schema change in the store's tables without a revision (or the reverse) fails here.
    assert schema_differences(database_url, module.metadata) == []


def make_previous_release_store(url: str, *, without_attempts: bool = False) -> None:
    """A store as the release at b47d180 left it: its tables, a finished job with its result and
    logs, a queued job and a running one (its replica was killed)."""
    metadata = previous_release.tables(without_attempts=without_attempts)
    engine = create_engine(url)
    job = {"instance": "crn:a", "owner": "user-1", "program_id": "sampler", "runtime": "BUILTIN",
           "backend": "ibmq_qasm_simulator", "reason": "", "reason_message": "", "inputs": '{"shots": 10}',
           "log_level": "INFO", "max_execution_seconds": 600.0, "trace_id": "req-1", "start_time": None,
           "end_time": None, "request_id": None, "claimed_by": None, "heartbeat_time": None}
    if not without_attempts:
        job["attempts"] = 1
    t = metadata.tables
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(t["jobs_job"].insert(), [
                {**job, "id": "done0000000000000000", "state": DONE, "create_time": T0, "start_time": T0,
                 "end_time": T0 + dt.timedelta(seconds=2), "request_id": "key-1"},
                {**job, "id": "queued00000000000000", "state": QUEUED, "create_time": T0 + dt.timedelta(seconds=1)},
                {**job, "id": "running0000000000000", "state": RUNNING, "create_time": T0 + dt.timedelta(seconds=2),
                 "start_time": T0, "claimed_by": "gone:1", "heartbeat_time": T0},
                {**job, "id": "typed000000000000000", "state": DONE, "create_time": T0, "instance": "crn:b",
                 "inputs": PRIMITIVE_INPUTS},
            ])
            conn.execute(t["jobs_job_result"].insert().values(job_id="done0000000000000000", result='{"ok": 1}'))
            conn.execute(t["jobs_job_log"].insert(), [
                {"job_id": "done0000000000000000", "time": T0, "level": "INFO", "message": f"line {i}"}
                for i in range(3)])
    finally:
        engine.dispose()


@pytest.mark.parametrize("without_attempts", [False, True], ids=["b47d180", "first-release"])
def test_a_store_of_the_previous_release_is_upgraded_and_keeps_its_jobs(database_url, without_attempts):
    make_previous_release_store(database_url, without_attempts=without_attempts)
    store = JobStore(database_url)
    try:
        done = store.get("done0000000000000000")
        assert (done.state, done.request_id, done.trace_id, done.end_time) == (
            DONE, "key-1", "req-1", T0 + dt.timedelta(seconds=2))
        assert done.attempts == (0 if without_attempts else 1) and done.program_version == 0
        assert store.get_result(done.id) == '{"ok": 1}'
        assert [line.message for line in store.list_logs(done.id, page_size=10)[0]] == ["line 0", "line 1", "line 2"]
        jobs, _ = store.list("crn:a", page_size=10)
        assert [job.id for job in jobs] == ["running0000000000000", "queued00000000000000", "done0000000000000000"]
        # The upgraded store works as a new one: the dead replica's job is requeued, and runs.
        assert [job.id for job in store.requeue_running(stale_after=60)] == ["running0000000000000"]
        assert store.claim_next_queued("runner-1").id == "queued00000000000000"
        assert store.find_by_request_id("crn:a", "key-1").id == done.id
        # Revision 0010 marks the typed inputs of primitive jobs; their sizes and digests come when first read.
        typed_job = store.get("typed000000000000000", inputs=None)
        assert typed_job.primitive_inputs and not done.primitive_inputs and typed_job.inputs == PRIMITIVE_INPUTS
        assert typed_job.inputs_bytes is None and store.inputs_part(done.id, 0, 100) == (None, b'{"shots": 10}')
    finally:
        store.close()
    assert schema_differences(database_url, jobs_store.metadata) == []
    JobStore(database_url).close()  # a second start finds nothing to do


def test_a_store_of_revision_0010_keeps_its_jobs_tags_and_lists_by_tag(database_url):
    """Revision 0011 copies each tag's job's instance and create_time into jobs_job_tag."""
    engine = create_engine(database_url)
    try:
        assert migrations.upgrade(engine, jobs_store.MIGRATIONS, version_table=jobs_store.VERSION_TABLE,
                                  to="0010")[-1] == "0010"
        job = {"owner": "user-1", "program_id": "sampler", "runtime": "BUILTIN", "backend": "ibmq_qasm_simulator",
               "state": DONE, "reason": "", "reason_message": "", "inputs": "{}", "log_level": "INFO",
               "max_execution_seconds": 600.0, "trace_id": ""}
        jobs = [("old0", "crn:a", T0, ["exp", "x"]), ("old1", "crn:a", T0 + dt.timedelta(seconds=1), ["exp"]),
                ("old2", "crn:b", T0 + dt.timedelta(seconds=2), ["exp"]), ("old3", "crn:a", T0, ["exp"])]
        # As revision 0010 wrote them (tags without their job's instance and time), in tables as it made them.
        job_table = sa.table("jobs_job", *map(sa.column, job), sa.column("id"), sa.column("instance"),
                             sa.column("create_time", sa.DateTime(timezone=True)))
        tag_table = sa.table("jobs_job_tag", sa.column("job_id"), sa.column("tag"))
        with engine.begin() as conn:
            conn.execute(job_table.insert(), [{**job, "id": i, "instance": instance, "create_time": at}
                                              for i, instance, at, _ in jobs])
            conn.execute(tag_table.insert(), [{"job_id": i, "tag": tag} for i, _, _, tags in jobs for tag in tags])
    finally:
        engine.dispose()
    store = JobStore(database_url)
    try:
        assert store.get("old0").tags == ("exp", "x") and store.get("old2").tags == ("exp",)

        def walk(text: str, instance: str = "crn:a") -> list[str]:
            where, seen, token = parse_filter(text, caller="u"), [], ""
            while True:
                page, token = store.list(instance, page_size=1, page_token=token, where=where)
                seen.extend(j.id for j in page)
                if not token:
                    return seen

        # old3 and old0 were created in the same microsecond: ordered by id, each once.
        assert walk("tags:exp") == ["old1", "old3", "old0"] and walk("tags:exp", "crn:b") == ["old2"]
        assert walk("tags:x") == ["old0"] and walk(f'tags:exp AND create_time > "{T0.isoformat()}"') == ["old1"]
        # Tags written after the upgrade carry their job's instance and time too.
        store.set_tags("old1", ["x"])
        assert walk("tags:x") == ["old1", "old0"] and walk("tags:exp") == ["old3", "old0"]
    finally:
        store.close()
    assert schema_differences(database_url, jobs_store.metadata) == []


def test_replicas_starting_together_migrate_once(database_url):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: JobStore(database_url), range(4)))
    for store in stores:
        store.close()
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text(f"SELECT version_num FROM {jobs_store.VERSION_TABLE}")).scalars().all()
        assert versions == [migrations.head_revision(jobs_store.MIGRATIONS)]
    finally:
        engine.dispose()
    assert schema_differences(database_url, jobs_store.metadata) == []


def test_programs_store_of_the_previous_release_keeps_its_programs(database_url):
    ProgramStore().open(database_url)  # the release before: the same tables, made by create_all
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {programs_store.VERSION_TABLE}"))
        conn.execute(programs_store.programs_table.insert().values(
            id="calc-abc123", name="calc", description="d", inputs=[], max_execution_seconds=60,
            visibility="PRIVATE", runtime="PYTHON", owner_instance="crn:a", data="def main(b, u): pass\n",
            create_time=T0, update_time=T0, version=3))
    engine.dispose()
    store = ProgramStore()
    store.open(database_url)
    try:
        assert store.get("calc-abc123").version == 3
    finally:
        store.close()


def test_an_auth_store_of_the_release_before_migrations_is_adopted_with_its_accounts_and_keys(database_url):
    """That release made the auth tables with create_all, as the store declares them today."""
    engine = create_engine(database_url)
    try:
        auth_store.metadata.create_all(engine)
    finally:
        engine.dispose()
    store = AuthStore(database_url, b"k" * 32)
    owner = store.create_user("owner@example.com", "Owner")
    account = store.create_account("lab", owner)
    api_key, _ = store.create_user_key(owner, name="first")
    store.close()
    engine = create_engine(database_url)  # as the old release left it: no version table yet
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {auth_store.VERSION_TABLE}"))
    finally:
        engine.dispose()
    store = AuthStore(database_url, b"k" * 32)
    try:
        assert store.user(owner)["email"] == "owner@example.com"
        assert [m["account_id"] for m in store.memberships_of(owner)] == [account]
        assert store.owner_of_key(api_key).user_id == owner
        assert migrations.current_revision(store.engine, version_table=auth_store.VERSION_TABLE) == "0001"
    finally:
        store.close()
    assert schema_differences(database_url, auth_store.metadata) == []
