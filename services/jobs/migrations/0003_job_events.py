"""A job's history as numbered events, tags, usage, and a shared secret for page tokens.

- jobs_job_event replaces jobs_job_log and jobs_job_interim_result: every state change, log line
  and interim result of a job, numbered 1, 2, 3, ... per job (WatchJob streams them). Existing log
  lines and interim results are copied over in their order, after one event for the job's current
  state (a store of an earlier release kept no history of states).
- jobs_job.events: the number of the job's last event; jobs_job.usage_seconds: what its last attempt
  ran, for ended jobs.
- jobs_job_tag: a job's tags; jobs_secret: keys the replicas share (the one signing page tokens).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs_job", sa.Column("events", sa.Integer, nullable=False, server_default="0"))
    op.add_column("jobs_job", sa.Column("usage_seconds", sa.Float, nullable=False, server_default="0"))
    op.create_table(
        "jobs_job_event",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("time", TIME, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "jobs_job_tag",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs_job.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("jobs_job_tag_tag", "jobs_job_tag", ["tag", "job_id"])
    op.create_table(
        "jobs_secret",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    _copy_history(op.get_bind())
    op.drop_table("jobs_job_log")
    op.drop_table("jobs_job_interim_result")


def _copy_history(conn: sa.Connection) -> None:
    """Each existing job's state, then its log lines and interim results in the order they were stored."""
    meta = sa.MetaData()
    jobs = sa.Table("jobs_job", meta, autoload_with=conn)
    logs = sa.Table("jobs_job_log", meta, autoload_with=conn)
    interim = sa.Table("jobs_job_interim_result", meta, autoload_with=conn)
    events = sa.Table("jobs_job_event", meta, autoload_with=conn)
    blank = {"state": "", "reason": "", "attempt": 0, "level": "", "text": ""}
    for job in conn.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.reason, jobs.c.reason_message,
                                      jobs.c.attempts, jobs.c.create_time, jobs.c.end_time)).all():
        rows = [{**blank, "kind": "STATE", "time": job.end_time or job.create_time, "state": job.state,
                 "reason": job.reason, "attempt": job.attempts, "text": job.reason_message}]
        kept = [(r.seq, {**blank, "kind": "LOG", "time": r.time, "level": r.level, "text": r.message})
                for r in conn.execute(sa.select(logs).where(logs.c.job_id == job.id))]
        kept += [(r.seq + (1 << 62), {**blank, "kind": "INTERIM", "time": r.time, "text": r.data})
                 for r in conn.execute(sa.select(interim).where(interim.c.job_id == job.id))]
        kept.sort(key=lambda item: (item[1]["time"], item[0]))
        rows += [row for _, row in kept]
        if job.state in ("DONE", "ERROR", "CANCELLED"):  # the final state stays last in the history
            rows.append(rows.pop(0))
        conn.execute(events.insert(), [{**row, "job_id": job.id, "number": n} for n, row in enumerate(rows, 1)])
        conn.execute(jobs.update().where(jobs.c.id == job.id).values(events=len(rows)))


def downgrade() -> None:
    raise NotImplementedError("a job's history cannot be split back into the tables of logs and interim results")
