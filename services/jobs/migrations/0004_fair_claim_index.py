"""An index for fair claiming: queued and running jobs by instance, oldest first, so choosing the
instance with the fewest running jobs and its oldest queued job reads the index, not the table."""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("jobs_job_state_instance_created", "jobs_job", ["state", "instance", "create_time", "id"])


def downgrade() -> None:
    op.drop_index("jobs_job_state_instance_created", "jobs_job")
