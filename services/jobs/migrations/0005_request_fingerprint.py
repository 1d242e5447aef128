"""jobs_job.request_fingerprint: a digest of the CreateJob request that made the job (everything but
its request_id), so that a request_id reused with a different request is refused, never answered with
the first job. Jobs made before have none; for them the program and inputs are compared."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs_job", sa.Column("request_fingerprint", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("jobs_job", "request_fingerprint")
