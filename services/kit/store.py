"""Database engines and paging, shared by every service's own store.

Each service owns its tables and its Store class; this module only makes engines the same way
(SQLite tuned for one machine, PostgreSQL for several replicas) and encodes page tokens.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
import weakref
from typing import Any

import sqlalchemy as sa

from .errors import InvalidArgument
from .logging import get_logger

log = get_logger("kit.store")


def _set_wal(cursor, attempts: int = 50) -> None:
    """Switch the database to WAL. Two processes opening a new database at once may see "database is
    locked" here without SQLite's busy timeout applying (seen under load when replicas start together):
    try again for a few seconds."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def create_engine(url: str) -> sa.Engine:
    """An engine for url; SQLite gets WAL, foreign keys and a busy timeout so writers wait, not fail, and
    its WAL checkpointed by a thread of its own (WalCheckpoints)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _tune(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            _set_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # WalCheckpoints does it
            cursor.close()

        WalCheckpoints(engine).start()
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_pre_ping=True)


class WalCheckpoints(threading.Thread):
    """Checkpoints an SQLite engine's WAL into its database every CHECKPOINT_SECONDS, until the engine
    is disposed of or collected.

    SQLite does it itself in the thread whose commit takes the WAL past 1,000 pages, and a checkpoint
    syncs the WAL and the database to disk (synchronous=NORMAL): about one JobStore.create in 80 took
    11-16 ms instead of 0.6 (measured: p99 11.2 ms, mean 0.86 ms; with this thread 1.2 and 0.69). PASSIVE:
    a checkpoint never waits for readers or writers, nor they for it; what it cannot copy yet, the next
    one does."""

    CHECKPOINT_SECONDS = 0.5

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(name="wal-checkpoints", daemon=True)
        self._engine = weakref.ref(engine)  # the thread does not keep the engine alive
        self._stopped = threading.Event()
        sa.event.listen(engine, "engine_disposed", lambda _engine: self._stopped.set())

    def run(self) -> None:
        while not self._stopped.wait(self.CHECKPOINT_SECONDS):
            engine = self._engine()
            if engine is None:
                return
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except sa.exc.SQLAlchemyError as err:  # the next one tries again
                log.warning("WAL checkpoint failed", database=engine.url.database, error=str(err))
            del engine


def page_size(requested: int, *, default: int, maximum: int) -> int:
    """The page size to use: default for 0, capped at maximum; negative is an error."""
    if requested < 0:
        raise InvalidArgument(
            f"page_size must not be negative, got {requested}",
            reason="INVALID_PAGE_SIZE",
            field_violations=[("page_size", "must be 0 (default) or positive")],
        )
    return min(requested or default, maximum)


def encode_page_token(position: dict[str, Any]) -> str:
    """An opaque token for the position after the last item of a page."""
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_page_token(token: str, **fields: type) -> dict[str, Any] | None:
    """The position a token stands for; None for the first page.

    Each keyword names a field the position must hold and its type (after=str); a token that is not
    one this service returned is InvalidArgument, never a server error."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(position, dict):
            raise ValueError
        for name, type_ in fields.items():
            value = position.get(name)
            if not isinstance(value, type_) or isinstance(value, bool) or isinstance(value, str) and "\x00" in value:
                raise ValueError
            if isinstance(value, int) and not -(2**63) <= value < 2**63:  # past a database's BIGINT
                raise ValueError
        return position
    except (ValueError, RecursionError):
        raise invalid_page_token() from None


def invalid_page_token(why: str = "page_token is not a token this service returned") -> InvalidArgument:
    """The error for a page token this service did not return (or that was altered)."""
    return InvalidArgument(
        why,
        reason="INVALID_PAGE_TOKEN",
        field_violations=[("page_token", "pass the next_page_token of the previous response unchanged")],
    )
