"""The kit's SQLite engines: their WAL is checkpointed by a thread of their own, never by a commit."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from qruntime_kit.store import WalCheckpoints, create_engine


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, WalCheckpoints)]


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_commits_leave_the_wal_to_the_checkpoint_thread_which_copies_it_into_the_database(tmp_path):
    path = tmp_path / "store.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE blobs (data BLOB)")
            # 1,500 pages: past the 1,000 at which SQLite would checkpoint within this commit
            conn.exec_driver_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) "
                                 "INSERT INTO blobs SELECT randomblob(4000) FROM n")
        assert path.stat().st_size < 1_000_000  # in the WAL still: the commit did not checkpoint
        assert _wait_for(lambda: path.stat().st_size > 6_000_000)  # copied in by the thread
    finally:
        engine.dispose()


def test_the_checkpoint_thread_ends_when_its_engine_is_disposed_of(tmp_path):
    before = set(_checkpointers())
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    [started] = set(_checkpointers()) - before
    assert started.is_alive()
    engine.dispose()
    started.join(5)
    assert not started.is_alive()


def test_engines_of_other_databases_get_no_checkpoint_thread():
    before = set(_checkpointers())
    engine = create_engine("postgresql://nobody@127.0.0.1:1/none")  # made, never connected
    assert not set(_checkpointers()) - before and isinstance(engine, sa.Engine)
    engine.dispose()
