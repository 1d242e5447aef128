"""jobs_audit_outbox: the audit events of the calls whose effect this store commits (a job's creation),
written in the same transaction as that effect and forwarded to the auth service's trail from here
(audit_outbox.py), so that a job and the event of its creation are stored together or not at all."""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


def upgrade() -> None:
    op.create_table(
        "jobs_audit_outbox",
        sa.Column("id", SEQ, primary_key=True, autoincrement=True),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", _TIME, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("jobs_audit_outbox")
