"""Schema migrations: each service's store brings its own tables up to date at start, with Alembic.

A service keeps its revisions in a `migrations` package next to its store (`qruntime_jobs.migrations`),
one module per revision, and its own version table (`jobs_alembic_version`): services may share one
PostgreSQL database, and each migrates only its own tables. A revision's first one (the baseline)
builds the schema of the release before migrations, and adopts a store that release made (it added
columns in place then); every later schema change is a new revision module, never an edit of the
store's table definitions alone (tests compare the two).

Writing a revision by hand: copy the latest module, give it a new `revision` and set `down_revision`
to the one it follows, and use `alembic.op` (op.add_column, op.create_index, op.execute...).

Replicas may start together: on PostgreSQL the upgrade holds an advisory lock for its transaction,
on SQLite the database's write lock (BEGIN IMMEDIATE); the one that comes second finds it done.
"""

from __future__ import annotations

import zlib
from importlib import resources

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory

from .logging import get_logger

log = get_logger("kit.migrations")


def upgrade(engine: sa.Engine, package: str, *, version_table: str, to: str = "head") -> list[str]:
    """Run the revisions of `package` (a package of revision modules) that the database has not run
    yet, up to `to` (tests build a store as an earlier revision left it), in one transaction; returns
    their ids, oldest first ([] when the schema was up to date)."""
    script = _script_directory(package)
    applied: list[str] = []

    def upgrade_to(current, context):
        steps = script._upgrade_revs(to, current)
        applied.extend(step.revision.revision for step in steps)
        return steps

    with engine.begin() as conn:
        _lock(conn, version_table)
        with EnvironmentContext(Config(), script, fn=upgrade_to, destination_rev=to) as env:
            env.configure(connection=conn, version_table=version_table)
            with env.begin_transaction():
                env.run_migrations()
    if applied:
        log.info("store schema upgraded", version_table=version_table, revisions=applied)
    return applied


def current_revision(engine: sa.Engine, *, version_table: str) -> str | None:
    """The revision the database is at; None before its first upgrade."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()


def head_revision(package: str) -> str:
    """The newest revision of `package`."""
    return _script_directory(package).get_current_head()


def _script_directory(package: str) -> ScriptDirectory:
    location = str(resources.files(package))
    return ScriptDirectory(location, version_locations=[location])


def _lock(conn: sa.Connection, name: str) -> None:
    """Hold the database's lock for migrating until this transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(name.encode())})
    elif conn.dialect.name == "sqlite":
        # The driver has not begun a transaction yet (it does so lazily before DML): take the write
        # lock now, waiting up to the busy timeout, so DDL and the version row commit together.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
