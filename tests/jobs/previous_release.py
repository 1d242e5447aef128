"""The jobs_* tables exactly as the release at commit b47d180 (the last before schema migrations)
made them with create_all, frozen here so upgrade tests keep building that release's stores.

`without_attempts=True` gives the first release's jobs_job, before attempts and program_version."""

from __future__ import annotations

import sqlalchemy as sa

_TIME = sa.DateTime(timezone=True)
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def tables(*, without_attempts: bool = False) -> sa.MetaData:
    metadata = sa.MetaData()
    later = [] if without_attempts else [
        sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),
        sa.Column("program_version", sa.Integer, nullable=False, default=0, server_default="0"),
    ]
    sa.Table(
        "jobs_job", metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance", sa.String(512), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("program_id", sa.String(256), nullable=False),
        sa.Column("runtime", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False, default=""),
        sa.Column("reason_message", sa.Text, nullable=False, default=""),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("log_level", sa.String(16), nullable=False),
        sa.Column("max_execution_seconds", sa.Float, nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("start_time", _TIME),
        sa.Column("end_time", _TIME),
        sa.Column("request_id", sa.String(256)),
        sa.Column("trace_id", sa.String(256), nullable=False, default=""),
        sa.Column("claimed_by", sa.String(256)),
        sa.Column("heartbeat_time", _TIME),
        *later,
        sa.UniqueConstraint("instance", "request_id", name="jobs_job_instance_request_id"),
        sa.Index("jobs_job_instance_created", "instance", "create_time", "id"),
        sa.Index("jobs_job_state_created", "state", "create_time", "id"),
    )
    sa.Table(
        "jobs_job_result", metadata,
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("result", sa.Text, nullable=False),
    )
    sa.Table(
        "jobs_job_log", metadata,
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Index("jobs_job_log_job", "job_id", "seq"),
    )
    sa.Table(
        "jobs_job_interim_result", metadata,
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Index("jobs_job_interim_result_job", "job_id", "seq"),
    )
    return metadata
