"""Fixtures of the programs tests: an empty programs database, on SQLite or on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from postgres_support import new_postgres_database
from programs_support import World, make_world

from qruntime_kit.store import create_engine
from qruntime_programs.store import VERSION_TABLE, metadata


@pytest.fixture(scope="module")
def postgres_module_database() -> Iterator[str]:
    """A new PostgreSQL database for the tests of one module, dropped after them; skips if the server
    is down. Never a shared database: other branches' tests may hold programs_* tables in another shape."""
    with new_postgres_database("qruntime_programs") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> Iterator[str]:
    """The URL of an empty programs database: a new SQLite file, or the module's PostgreSQL database
    with no programs_* tables (dropped after each test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'programs.db'}"
        return
    url = request.getfixturevalue("postgres_module_database")
    yield url
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {VERSION_TABLE}"))
    engine.dispose()


@pytest.fixture
def world(start_suite) -> Iterator[World]:
    """Callers of a fresh suite serving programs (SQLite)."""
    world = make_world(start_suite("programs"))
    yield world
    world.close()
