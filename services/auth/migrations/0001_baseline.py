"""Baseline: the auth_* tables as the release before migrations made them (with create_all).

A new database gets them all; a store that release made is adopted as it is (tables it has are
left alone, with their rows).

The definitions are frozen here, not imported from the store: later revisions change the schema.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def tables() -> sa.MetaData:
    m = sa.MetaData()
    sa.Table("auth_account", m, sa.Column("id", sa.String(64), primary_key=True),
             sa.Column("name", sa.String(200), nullable=False), sa.Column("create_time", TIME, nullable=False))
    sa.Table("auth_user", m, sa.Column("id", sa.String(64), primary_key=True),
             sa.Column("email", sa.String(320), nullable=False, unique=True),
             sa.Column("name", sa.String(200), nullable=False),
             sa.Column("disabled", sa.Boolean, nullable=False), sa.Column("operator", sa.Boolean, nullable=False),
             sa.Column("service_id_account_id", sa.String(64), nullable=True),
             sa.Column("create_time", TIME, nullable=False))
    sa.Table("auth_membership", m,
             sa.Column("account_id", sa.ForeignKey("auth_account.id"), primary_key=True),
             sa.Column("user_id", sa.ForeignKey("auth_user.id"), primary_key=True),
             sa.Column("role", sa.String(20), nullable=False), sa.Column("state", sa.String(20), nullable=False),
             sa.Column("create_time", TIME, nullable=False))
    sa.Table("auth_instance", m, sa.Column("id", sa.String(64), primary_key=True),
             sa.Column("crn", sa.String(300), nullable=False, unique=True),
             sa.Column("name", sa.String(200), nullable=False),
             sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
             sa.Column("plan", sa.String(20), nullable=False), sa.Column("create_time", TIME, nullable=False),
             sa.UniqueConstraint("account_id", "name"))
    sa.Table("auth_access_group", m, sa.Column("id", sa.String(64), primary_key=True),
             sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
             sa.Column("name", sa.String(200), nullable=False), sa.Column("create_time", TIME, nullable=False),
             sa.UniqueConstraint("account_id", "name"))
    sa.Table("auth_access_group_member", m,
             sa.Column("group_id", sa.ForeignKey("auth_access_group.id", ondelete="CASCADE"), primary_key=True),
             sa.Column("user_id", sa.ForeignKey("auth_user.id"), primary_key=True))
    sa.Table("auth_policy", m, sa.Column("id", sa.String(64), primary_key=True),
             sa.Column("account_id", sa.ForeignKey("auth_account.id"), nullable=False),
             sa.Column("subject_kind", sa.String(20), nullable=False),
             sa.Column("subject_id", sa.String(64), nullable=False),
             sa.Column("instance_id", sa.ForeignKey("auth_instance.id"), nullable=True),
             sa.Column("role", sa.String(20), nullable=False), sa.Column("create_time", TIME, nullable=False))
    sa.Table("auth_api_key", m, sa.Column("id", sa.String(32), primary_key=True),
             sa.Column("secret_hash", sa.String(64), nullable=False),
             sa.Column("kind", sa.String(20), nullable=False),
             sa.Column("user_id", sa.ForeignKey("auth_user.id"), nullable=True),
             sa.Column("service_name", sa.String(100), nullable=True, unique=True),
             sa.Column("name", sa.String(200), nullable=False), sa.Column("disabled", sa.Boolean, nullable=False),
             sa.Column("create_time", TIME, nullable=False))
    sa.Table("auth_signing_key", m, sa.Column("key_id", sa.String(64), primary_key=True),
             sa.Column("private_key_pem", sa.Text, nullable=False),
             sa.Column("public_key_pem", sa.Text, nullable=False),
             sa.Column("create_time", TIME, nullable=False))
    sa.Table("auth_revocation", m, sa.Column("subject", sa.String(64), primary_key=True),
             sa.Column("revoke_time", sa.Float, nullable=False))
    sa.Table("auth_audit_event", m,
             sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                       autoincrement=True),
             sa.Column("time", sa.Float, nullable=False),
             sa.Column("account_id", sa.String(64), nullable=False, index=True),
             *(sa.Column(name, sa.String(length), nullable=False) for name, length in (
                 ("subject", 100), ("instance", 300), ("action", 100), ("method", 200), ("outcome", 20),
                 ("code", 40), ("reason", 100), ("request_id", 128), ("target", 300))))
    return m


def upgrade() -> None:
    tables().create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    tables().drop_all(op.get_bind())
