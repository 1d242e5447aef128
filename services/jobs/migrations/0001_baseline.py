"""Baseline: the jobs_* tables as the release before migrations made them.

A new database gets them all. A store that release (or an earlier one) made is adopted as it is:
its missing tables are created and the columns added since the first release (attempts,
program_version) are added with their defaults, so its jobs are kept.

The definitions are frozen here, not imported from the store: later revisions change the schema.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "jobs_job" not in tables:
        op.create_table(
            "jobs_job",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("instance", sa.String(512), nullable=False),
            sa.Column("owner", sa.String(256), nullable=False),
            sa.Column("program_id", sa.String(256), nullable=False),
            sa.Column("runtime", sa.String(16), nullable=False),
            sa.Column("backend", sa.String(256), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("reason", sa.String(32), nullable=False),
            sa.Column("reason_message", sa.Text, nullable=False),
            sa.Column("inputs", sa.Text, nullable=False),
            sa.Column("log_level", sa.String(16), nullable=False),
            sa.Column("max_execution_seconds", sa.Float, nullable=False),
            sa.Column("create_time", TIME, nullable=False),
            sa.Column("start_time", TIME),
            sa.Column("end_time", TIME),
            sa.Column("request_id", sa.String(256)),
            sa.Column("trace_id", sa.String(256), nullable=False),
            sa.Column("claimed_by", sa.String(256)),
            sa.Column("heartbeat_time", TIME),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("program_version", sa.Integer, nullable=False, server_default="0"),
            sa.UniqueConstraint("instance", "request_id", name="jobs_job_instance_request_id"),
        )
        op.create_index("jobs_job_instance_created", "jobs_job", ["instance", "create_time", "id"])
        op.create_index("jobs_job_state_created", "jobs_job", ["state", "create_time", "id"])
    else:
        present = {column["name"] for column in inspector.get_columns("jobs_job")}
        for name in ("attempts", "program_version"):
            if name not in present:
                op.add_column("jobs_job", sa.Column(name, sa.Integer, nullable=False, server_default="0"))
    if "jobs_job_result" not in tables:
        op.create_table(
            "jobs_job_result",
            sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("result", sa.Text, nullable=False),
        )
    for name, payload in (("jobs_job_log", [sa.Column("level", sa.String(16), nullable=False),
                                            sa.Column("message", sa.Text, nullable=False)]),
                          ("jobs_job_interim_result", [sa.Column("data", sa.Text, nullable=False)])):
        if name in tables:
            continue
        op.create_table(
            name,
            sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
            sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), nullable=False),
            sa.Column("time", TIME, nullable=False),
            *payload,
        )
        op.create_index(f"{name}_job", name, ["job_id", "seq"])


def downgrade() -> None:
    for name in ("jobs_job_interim_result", "jobs_job_log", "jobs_job_result", "jobs_job"):
        op.drop_table(name)
