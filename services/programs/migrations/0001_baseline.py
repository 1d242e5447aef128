"""Baseline: the programs_* tables as the release before migrations made them.

A new database gets them all. A store that release made is adopted as it is; one made before
programs had versions gets the version column, and every program becomes its own version 1.

The definitions are frozen here, not imported from the store: later revisions change the schema.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Ids sort bytewise on every database ("C" collation on PostgreSQL), so pages and their order agree.
ID = sa.String(80).with_variant(sa.String(80, collation="C"), "postgresql")
TIME = sa.DateTime(timezone=True)
VERSIONED = ("name", "description", "inputs", "max_execution_seconds", "visibility", "data")


def content_columns() -> list[sa.Column]:
    return [
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("max_execution_seconds", sa.Integer, nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
    ]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    copy_versions = False
    if "programs_program" not in tables:
        op.create_table(
            "programs_program",
            sa.Column("id", ID, primary_key=True),
            *content_columns(),
            sa.Column("runtime", sa.String(16), nullable=False),
            sa.Column("owner_instance", sa.String(255), nullable=False),
            sa.Column("data", sa.Text, nullable=False),
            sa.Column("create_time", TIME, nullable=False),
            sa.Column("update_time", TIME, nullable=False),
            sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")),
        )
        op.create_index("programs_program_owner_instance_id", "programs_program", ["owner_instance", "id"])
        op.create_index("programs_program_visibility_id", "programs_program", ["visibility", "id"])
    elif "version" not in {column["name"] for column in inspector.get_columns("programs_program")}:
        op.add_column("programs_program",
                      sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("1")))
        copy_versions = True
    if "programs_version" not in tables:
        op.create_table(
            "programs_version",
            sa.Column("program_id", ID, sa.ForeignKey("programs_program.id"), primary_key=True),
            sa.Column("version", sa.Integer, primary_key=True),
            *content_columns(),
            sa.Column("data", sa.Text, nullable=False),
            sa.Column("create_time", TIME, nullable=False),
        )
    if copy_versions:  # the release before versions: each program is its own version 1
        columns = ", ".join(VERSIONED)
        op.execute(f"INSERT INTO programs_version (program_id, version, create_time, {columns}) "
                   f"SELECT id, version, update_time, {columns} FROM programs_program")


def downgrade() -> None:
    op.drop_table("programs_version")
    op.drop_table("programs_program")
