"""jobs_job.time_limit_source: which limit a job's max_execution_seconds is (SYSTEM, PROGRAM or USER:
the TimeLimitSource names without their prefix); "" for jobs created before it was kept."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs_job", sa.Column("time_limit_source", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("jobs_job", "time_limit_source")
