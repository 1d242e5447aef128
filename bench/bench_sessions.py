"""Sessions: what they cost the claim, and what their priority buys, each against a baseline of the same run.

- claim: p50 of JobStore.claim_next_queued with 20,000 jobs queued, 500 of them in 100 open sessions
  (50 dedicated, 50 batches), against the same queue without sessions; on SQLite, and on PostgreSQL
  when it answers on 127.0.0.1:5432.
- iterative: an iterative client (each Bell sampler job created once the previous one's result is
  back, as a variational loop does) while its own instance keeps 16 hello-world jobs queued on the
  same backend: p50 per iteration inside a Session (its jobs go ahead of the queue) against the same
  loop without one (its jobs wait their turn). Embedded suite, 4 executor workers.

    .venv/bin/python -W ignore bench/bench_sessions.py [--only claim,iterative]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

QUEUED = 20_000
SESSIONS, SESSION_JOBS = 100, 5
CLAIMS = 200
BACKLOG, ITERATIONS, WORKERS = 16, 10, 4
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- claim ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def fresh_database(kind: str) -> Iterator[str | None]:
    """The URL of an empty database of that kind; None when PostgreSQL does not answer."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/jobs.db"
        return
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        yield None
        return
    name = f"qruntime_bench_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def claim_ms(url: str, with_sessions: bool) -> float:
    """p50 ms of one claim from a queue of QUEUED jobs (SESSIONS sessions' jobs among them if asked)."""
    from qruntime_jobs import store as m

    store = m.JobStore(url)
    try:
        in_sessions = SESSIONS * SESSION_JOBS if with_sessions else 0
        row = {"owner": "u", "program_id": "sampler", "runtime": "BUILTIN", "backend": "b", "state": m.QUEUED,
               "reason": "", "reason_message": "", "inputs": "{}", "log_level": "INFO",
               "max_execution_seconds": 60.0, "trace_id": "", "events": 1, "create_time": m.utcnow()}
        with store._engine.begin() as conn:
            conn.execute(m.job_table.insert(), [{**row, "id": m.new_job_id(), "instance": f"crn:{i % 50}"}
                                                for i in range(QUEUED - in_sessions)])
        for i in range(SESSIONS if with_sessions else 0):
            session = store.create_session(instance=f"crn:{i % 50}", owner="u", backend="b", max_seconds=3600,
                                           mode=m.DEDICATED if i % 2 else m.BATCH, idle_seconds=60)
            for _ in range(SESSION_JOBS):
                store.create(instance=session.instance, owner="u", program_id="sampler", runtime="BUILTIN",
                             backend="b", inputs="{}", log_level="INFO", max_execution_seconds=60,
                             session_id=session.id)
        times = []
        for _ in range(CLAIMS):
            started = time.perf_counter()
            assert store.claim_next_queued("bench") is not None
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        store.close()


def bench_claim() -> None:
    print(f"\n## claim: p50 of one claim, {QUEUED:,} jobs queued, {CLAIMS} claims; "
          f"{SESSIONS * SESSION_JOBS} of them in {SESSIONS} open sessions, or none")
    print(f"{'database':10} {'no sessions ms':>15} {'sessions ms':>12} {'ratio':>7}")
    for kind in ("sqlite", "postgres"):
        measured = []
        for with_sessions in (False, True):
            with fresh_database(kind) as url:
                if url is None:
                    break
                measured.append(claim_ms(url, with_sessions))
        if len(measured) == 2:
            print(f"{kind:10} {measured[0]:15.2f} {measured[1]:12.2f} {measured[1] / measured[0]:7.2f}")
        else:
            print(f"{kind:10} (PostgreSQL does not answer at {POSTGRES_ADMIN}: skipped)")


# -- iterative -----------------------------------------------------------------------------------

def iteration_seconds(service, in_session: bool) -> list[float]:
    """Seconds per iteration of an iterative loop of Bell sampler jobs while the same instance keeps
    BACKLOG hello-world jobs queued on the same backend (topped up as they start)."""
    from qruntime import ReferenceCircuits, Session
    from qruntime.exceptions import FailedPreconditionError

    backend = "ibmq_qasm_simulator"
    session = Session(backend, service=service) if in_session else None
    if session is not None:  # active from its first job, as a loop's first evaluation makes it
        session.run("sampler", {"circuits": ReferenceCircuits.bell()}).result()
    stop = threading.Event()

    def top_up() -> None:
        while not stop.is_set():
            pending = len(service.jobs(limit=BACKLOG + WORKERS, program_id="hello-world", pending=True))
            for _ in range(BACKLOG + WORKERS - pending):  # the workers run 4, 16 wait
                service.run("hello-world", {"iterations": 1}, {"backend_name": backend})
            stop.wait(0.2)

    filler = threading.Thread(target=top_up, daemon=True)
    filler.start()
    time.sleep(2)  # the backlog is there, the workers busy with it
    times = []
    for _ in range(ITERATIONS):
        started = time.perf_counter()
        job = (session.run if session else service.run)(
            "sampler", {"circuits": ReferenceCircuits.bell()}, {"backend_name": backend})
        job.result(timeout=300)
        times.append(time.perf_counter() - started)
    stop.set()
    filler.join()
    for job in service.jobs(limit=None, pending=True):
        with contextlib.suppress(FailedPreconditionError):  # it ended meanwhile
            job.cancel()
    if session is not None:
        session.cancel()
    return times


def bench_iterative() -> None:
    from qruntime import IBMRuntimeService

    from qruntime_suite import launch

    print(f"\n## iterative: {ITERATIONS} Bell sampler jobs one after another, while {BACKLOG} hello-world jobs "
          "of the same instance stay queued on the same backend")
    print(f"{'variant':12} {'p50 s':>8} {'max s':>8} {'p50 / session':>14}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        env = {"QRUNTIME_WARM_UP": "false", "QRUNTIME_WORKERS": str(WORKERS)}
        with launch.running(launch.embedded(Path(folder) / "data", extra_env=env)) as running:
            boot = running.bootstrap
            with IBMRuntimeService(token=boot["api_key"], instance=boot["instance"], url=running.url) as service:
                for name, in_session in (("session", True), ("no session", False)):
                    results[name] = iteration_seconds(service, in_session)
    base = statistics.median(results["session"])
    for name, times in results.items():
        print(f"{name:12} {statistics.median(times):8.2f} {max(times):8.2f} {statistics.median(times) / base:14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="claim,iterative")
    parts = parser.parse_args().only.split(",")
    print(f"# bench_sessions on {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    if "claim" in parts:
        bench_claim()
    if "iterative" in parts:
        bench_iterative()


if __name__ == "__main__":
    main()
