"""A new PostgreSQL database on the test server (127.0.0.1:5432, trust auth), dropped afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def new_postgres_database(prefix: str = "qruntime_test") -> Iterator[str]:
    """The URL of a new, empty database; skips the test if the server is down."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {err}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
