"""The whole suite on PostgreSQL: every service's store in one shared database, the quick start through it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from qruntime import IBMRuntimeService, ReferenceCircuits

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_quick_start_with_every_store_on_postgres(start_suite, postgres_database):
    suite = start_suite("programs", "devices", "jobs", database_url=postgres_database)
    with IBMRuntimeService(auth="cloud", token=suite.api_key, instance=suite.instance, url=suite.address) as service:
        hello = service.run(program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"},
                            inputs={"iterations": 2})
        bell = service.run(program_id="sampler", inputs={"circuits": ReferenceCircuits.bell()})
        assert hello.result() == "All done!"
        assert set(bell.result()["quasi_dists"][0]) == {"00", "11"}
        assert len(hello.interim_results()) == 2
        assert [j.job_id for j in service.jobs()] == [bell.job_id, hello.job_id]

    engine = sa.create_engine(postgres_database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        states = dict(conn.execute(sa.text("SELECT id, state FROM jobs_job")).all())
    engine.dispose()
    # Each service keeps to its own prefixed tables in the shared database.
    assert {t.split("_")[0] for t in tables} == {"auth", "programs", "jobs"}
    assert states == {hello.job_id: "DONE", bell.job_id: "DONE"}
