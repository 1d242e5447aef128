"""Sessions and batches: the table jobs_session, and jobs_job.session_id (NULL for a job on its own)
with an index to find a session's queued and running jobs; the fair-claim index gains session_id, so
choosing the next job still reads the index alone."""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs_session",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance", sa.String(512), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("backend", sa.String(256), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("accepting_jobs", sa.Boolean, nullable=False),
        sa.Column("max_seconds", sa.Float, nullable=False),
        sa.Column("idle_seconds", sa.Float, nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("start_time", _TIME),
        sa.Column("activate_time", _TIME),
        sa.Column("last_job_start_time", _TIME),
        sa.Column("last_job_end_time", _TIME),
        sa.Column("expire_time", _TIME),
        sa.Column("close_time", _TIME),
        sa.Column("idle_deadline", _TIME),
        sa.Column("close_reason", sa.Text, nullable=False),
        sa.Column("usage_seconds", sa.Float, nullable=False),
    )
    op.create_index("jobs_session_instance_created", "jobs_session", ["instance", "create_time", "id"])
    op.create_index("jobs_session_state", "jobs_session", ["state"])
    op.add_column("jobs_job", sa.Column("session_id", sa.String(64)))
    op.create_index("jobs_job_session_state", "jobs_job", ["session_id", "state"])
    op.drop_index("jobs_job_state_instance_created", "jobs_job")
    op.create_index("jobs_job_state_instance_created", "jobs_job", ["state", "instance", "create_time", "id",
                                                                     "session_id"])


def downgrade() -> None:
    op.drop_index("jobs_job_state_instance_created", "jobs_job")
    op.create_index("jobs_job_state_instance_created", "jobs_job", ["state", "instance", "create_time", "id"])
    op.drop_index("jobs_job_session_state", "jobs_job")
    op.drop_column("jobs_job", "session_id")
    op.drop_index("jobs_session_state", "jobs_session")
    op.drop_index("jobs_session_instance_created", "jobs_session")
    op.drop_table("jobs_session")
