"""ProgramStore: the programs service's own tables (programs_*), over SQLAlchemy Core.

Runs on SQLite (one machine) and PostgreSQL (several replicas). Every write is one transaction.
Methods are synchronous; the servicer calls them in a worker thread so the event loop never waits
on the database.

programs_program holds each program as it is now (its latest version); programs_version holds every
version's full content, the latest included, because a job records the version it ran and fetches
exactly that source when it runs. A version is written in the same transaction as the change that
makes it, so the two tables never disagree.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from qruntime_kit import migrations
from qruntime_kit.errors import AlreadyExists, Unavailable
from qruntime_kit.logging import get_logger
from qruntime_kit.store import create_engine

from .model import InputType, Program, ProgramInput, Runtime, Visibility

log = get_logger("programs")

# The tables below are what the revisions in qruntime_programs.migrations build; change both together.
metadata = sa.MetaData()
MIGRATIONS, VERSION_TABLE = "qruntime_programs.migrations", "programs_alembic_version"

# Ids sort bytewise on every database ("C" collation on PostgreSQL), so pages and their order agree.
_ID = sa.String(80).with_variant(sa.String(80, collation="C"), "postgresql")

programs_table = sa.Table(
    "programs_program",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),  # [{"name", "type", "required", "description"}]
    sa.Column("max_execution_seconds", sa.Integer, nullable=False),
    sa.Column("visibility", sa.String(16), nullable=False),
    sa.Column("runtime", sa.String(16), nullable=False),
    sa.Column("owner_instance", sa.String(255), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Index("programs_program_owner_instance_id", "owner_instance", "id"),
    sa.Index("programs_program_visibility_id", "visibility", "id"),
)

# One row per version of each program: what an update changes, as it was after that update. The id,
# owner, runtime and creation time never change, so they stay in programs_program alone.
versions_table = sa.Table(
    "programs_version",
    metadata,
    sa.Column("program_id", _ID, sa.ForeignKey("programs_program.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("max_execution_seconds", sa.Integer, nullable=False),
    sa.Column("visibility", sa.String(16), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),  # when this version was made
)

# The columns update() may change; the rest (the id above all) are fixed when a program is created.
UPDATABLE = frozenset({"name", "description", "visibility", "data", "inputs", "max_execution_seconds"})
# The columns a built-in's catalogue entry sets; seeding rewrites a stored built-in when one differs.
_CONTENT = ("name", "description", "inputs", "max_execution_seconds", "visibility", "runtime",
            "owner_instance", "data")
# The columns each version keeps (UPDATABLE, by another name where the table's order reads better).
_VERSIONED = ("name", "description", "inputs", "max_execution_seconds", "visibility", "data")


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a listing; more is True when programs follow the last one."""

    programs: list[Program]
    more: bool


@dataclasses.dataclass(frozen=True)
class VersionPage:
    """One page of a program's versions, newest first; more is True when older ones follow."""

    versions: list[Program]
    more: bool


@dataclasses.dataclass(frozen=True)
class SeedReport:
    """What seeding the built-ins changed."""

    inserted: list[str]
    updated: list[str]
    removed: list[str]


class ProgramStore:
    """The catalogue of programs. Create it, then open(url); until then every call is Unavailable."""

    def __init__(self) -> None:
        self._engine: sa.Engine | None = None

    def open(self, url: str) -> None:
        """Connect to url and bring its tables up to date (made, or migrated from an earlier release)."""
        engine = create_engine(url)
        migrations.upgrade(engine, MIGRATIONS, version_table=VERSION_TABLE)
        self._engine = engine

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            raise Unavailable("the programs store is not open yet; retry shortly", reason="STORE_NOT_OPEN")
        return self._engine

    def get(self, program_id: str) -> Program | None:
        """The program with this id, source included; None when there is none."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(programs_table).where(programs_table.c.id == program_id)).first()
        return _program(row) if row is not None else None

    def get_version(self, program_id: str, version: int) -> Program | None:
        """The program as it was at version, source included; None when it has no such version."""
        query = _versions_query().where(versions_table.c.program_id == program_id,
                                        versions_table.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _program(row) if row is not None else None

    def list_versions(self, program_id: str, *, limit: int, before: int | None = None) -> VersionPage:
        """The program's versions, newest first, older than `before`; sources are left out."""
        v = versions_table
        query = _versions_query(with_data=False).where(v.c.program_id == program_id)
        if before is not None:
            query = query.where(v.c.version < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(v.c.version.desc()).limit(limit + 1)).all()
        return VersionPage([_program(r) for r in rows[:limit]], more=len(rows) > limit)

    def list_visible(self, instance_crn: str | None, *, limit: int, after: str | None = None) -> Page:
        """Programs ordered by id after `after`: public ones and instance_crn's own, or all of them when
        instance_crn is None (service callers). Sources are left out."""
        t = programs_table
        query = sa.select(*(c for c in t.c if c.name != "data")).order_by(t.c.id).limit(limit + 1)
        if instance_crn is not None:
            visible = t.c.visibility == Visibility.PUBLIC.value
            if instance_crn:
                visible = sa.or_(visible, t.c.owner_instance == instance_crn)
            query = query.where(visible)
        if after is not None:
            query = query.where(t.c.id > after)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return Page([_program(r) for r in rows[:limit]], more=len(rows) > limit)

    def create(self, program: Program) -> Program:
        """Insert the program as version 1, stamping its times; AlreadyExists when its id is taken."""
        now = _now()
        row = {**_row(program), "create_time": now, "update_time": now, "version": 1}
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(programs_table).values(row))
                conn.execute(sa.insert(versions_table).values(_version_row(row)))
        except sa.exc.IntegrityError:
            raise AlreadyExists(
                f"a program with id {program.id!r} already exists",
                reason="PROGRAM_ALREADY_EXISTS",
                metadata={"program_id": program.id},
            ) from None
        return dataclasses.replace(program, create_time=now, update_time=now, version=1)

    def update(self, program_id: str, changes: Mapping[str, Any]) -> Program | None:
        """Set the given fields (names from UPDATABLE, values as on Program) as a new version, stamping
        update_time; returns the program as stored after the change (unchanged, at the same version,
        when every value equals the stored one), or None when there is none."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {k: _column_value(k, v) for k, v in changes.items()}
        t = programs_table
        with self.engine.begin() as conn:
            # Lock the program's row first, with a write that changes nothing: the one lock both
            # databases take alike (SQLite's write lock, PostgreSQL's row lock). The read below then
            # sees the latest version, and concurrent updates of one program take turns, each
            # making its own version, instead of failing.
            if conn.execute(sa.update(t).where(t.c.id == program_id).values(version=t.c.version)).rowcount == 0:
                return None
            current = conn.execute(sa.select(t).where(t.c.id == program_id)).one()
            if all(getattr(current, k) == v for k, v in values.items()):
                return _program(current)
            new = {**values, "update_time": _now(), "version": current.version + 1}
            conn.execute(sa.update(t).where(t.c.id == program_id).values(new))
            row = conn.execute(sa.select(t).where(t.c.id == program_id)).one()
            conn.execute(sa.insert(versions_table).values(_version_row(row._mapping)))
        return _program(row)

    def delete(self, program_id: str) -> bool:
        """Delete the program with all its versions; False when there was none."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(versions_table).where(versions_table.c.program_id == program_id))
            result = conn.execute(sa.delete(programs_table).where(programs_table.c.id == program_id))
        return result.rowcount > 0

    def seed_builtins(self, builtins: Sequence[Program]) -> SeedReport:
        """Make the stored built-ins equal the catalogue: insert new ones, update changed ones,
        remove retired ones. Programs of other runtimes are never touched."""
        try:
            return self._seed(builtins)
        except sa.exc.IntegrityError:
            # Another replica seeded the same new built-in at the same moment: its rows are there now.
            return self._seed(builtins)

    def _seed(self, builtins: Sequence[Program]) -> SeedReport:
        t = programs_table
        report = SeedReport([], [], [])
        now = _now()
        wanted = {p.id: _row(p) for p in builtins}
        for program in builtins:
            if program.runtime != Runtime.BUILTIN:
                raise ValueError(f"{program.id} is not a built-in program")
        with self.engine.begin() as conn:
            query = sa.select(t).where(t.c.id.in_(list(wanted)) | (t.c.runtime == Runtime.BUILTIN.value))
            stored = {r.id: r for r in conn.execute(query)}
            for program_id, row in wanted.items():
                current = stored.get(program_id)
                # A built-in is always version 1: a release rewrites that version, as the jobs service's
                # runner runs the release's code whatever a job recorded.
                full = {**row, "create_time": now, "update_time": now, "version": 1}
                if current is None:
                    conn.execute(sa.insert(t).values(full))
                    conn.execute(sa.insert(versions_table).values(_version_row(full)))
                    report.inserted.append(program_id)
                elif current.runtime != Runtime.BUILTIN.value:
                    # Uploaded ids carry a suffix, so this cannot happen; never overwrite a user's program.
                    log.warning("builtin id taken by an uploaded program; not seeded", program_id=program_id)
                elif any(getattr(current, k) != row[k] for k in _CONTENT):
                    conn.execute(sa.update(t).where(t.c.id == program_id).values({**row, "update_time": now}))
                    v = versions_table
                    conn.execute(sa.delete(v).where(v.c.program_id == program_id))
                    conn.execute(sa.insert(v).values(_version_row({**full, "create_time": current.create_time})))
                    report.updated.append(program_id)
            retired = [i for i, r in stored.items() if i not in wanted and r.runtime == Runtime.BUILTIN.value]
            if retired:
                conn.execute(sa.delete(versions_table).where(versions_table.c.program_id.in_(retired)))
                conn.execute(sa.delete(t).where(t.c.id.in_(retired), t.c.runtime == Runtime.BUILTIN.value))
                report.removed.extend(retired)
        return report


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _row(program: Program) -> dict[str, Any]:
    return {
        "id": program.id,
        "name": program.name,
        "description": program.description,
        "inputs": _inputs_json(program.inputs),
        "max_execution_seconds": program.max_execution_seconds,
        "visibility": program.visibility.value,
        "runtime": program.runtime.value,
        "owner_instance": program.owner_instance,
        "data": program.data,
    }


def _version_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The programs_version row of a programs_program row: its versioned columns, as of update_time."""
    return {"program_id": row["id"], "version": row["version"], "create_time": row["update_time"],
            **{k: row[k] for k in _VERSIONED}}


def _versions_query(*, with_data: bool = True) -> sa.Select:
    """Versions joined to their program, in the columns _program() reads (a version's time is its
    update_time)."""
    p, v = programs_table, versions_table
    columns = [p.c.id, p.c.runtime, p.c.owner_instance, p.c.create_time, v.c.version,
               v.c.create_time.label("update_time"), *(v.c[k] for k in _VERSIONED if with_data or k != "data")]
    return sa.select(*columns).join_from(v, p, v.c.program_id == p.c.id)


def _column_value(name: str, value: Any) -> Any:
    if name == "inputs":
        return _inputs_json(value)
    if name == "visibility":
        return Visibility(value).value
    return value


def _inputs_json(inputs: Iterable[ProgramInput]) -> list[dict[str, Any]]:
    return [
        {"name": i.name, "type": i.type.value, "required": i.required, "description": i.description}
        for i in inputs
    ]


def _utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _program(row: sa.Row) -> Program:
    m = row._mapping
    return Program(
        id=m["id"],
        name=m["name"],
        description=m["description"],
        inputs=tuple(
            ProgramInput(i["name"], InputType(i["type"]), bool(i["required"]), i.get("description", ""))
            for i in m["inputs"]
        ),
        max_execution_seconds=m["max_execution_seconds"],
        visibility=Visibility(m["visibility"]),
        runtime=Runtime(m["runtime"]),
        owner_instance=m["owner_instance"],
        data=m.get("data", ""),
        create_time=_utc(m["create_time"]),
        update_time=_utc(m["update_time"]),
        version=m["version"],
    )
