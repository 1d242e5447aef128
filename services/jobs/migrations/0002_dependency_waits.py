"""jobs_job.dependency_waits: how many times the job went back to the queue because a service it
needs (devices, programs, auth) was down. Those runs are not the job's fault, so they do not count
against its attempts (attempts still counts every claim: it is the fencing token)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs_job", sa.Column("dependency_waits", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("jobs_job", "dependency_waits")
