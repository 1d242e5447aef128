"""jobs_job_session_state gains create_time and id: a dedicated session's next job (its oldest queued
one, which the claim reads for every open session) is an index seek, not a scan of the queue."""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("jobs_job_session_state", "jobs_job")
    op.create_index("jobs_job_session_state", "jobs_job", ["session_id", "state", "create_time", "id"])


def downgrade() -> None:
    op.drop_index("jobs_job_session_state", "jobs_job")
    op.create_index("jobs_job_session_state", "jobs_job", ["session_id", "state"])
