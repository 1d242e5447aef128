"""jobs_job_result.size_bytes and .sha256: a result's UTF-8 length and SHA-256, kept when it is
written, so that GetJobResult reads only the chunk asked for; NULL for results written before
(computed, and kept, when first read)."""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs_job_result", sa.Column("size_bytes", sa.BigInteger, nullable=True))
    op.add_column("jobs_job_result", sa.Column("sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs_job_result", "sha256")
    op.drop_column("jobs_job_result", "size_bytes")
