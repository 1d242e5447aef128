"""jobs_job_tag gains its job's instance and create_time (copied when a tag is written; neither changes
for a job), and its index on tag becomes one on (tag, instance, create_time, job_id): a tags filter walks
its tag's jobs in the listing's order from that index, a page reading about a page of entries whatever
the tag's count, where before it read every job with the tag, or checked the instance's jobs one by one.

The tags stored before get both from their jobs in one UPDATE. SQLite cannot make a column NOT NULL in
place: Alembic's batch mode copies the table (once, after the backfill); PostgreSQL alters the columns."""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs_job_tag", sa.Column("instance", sa.String(512), nullable=True))
    op.add_column("jobs_job_tag", sa.Column("create_time", _TIME, nullable=True))
    tags = sa.table("jobs_job_tag", sa.column("job_id"), sa.column("instance"), sa.column("create_time"))
    jobs = sa.table("jobs_job", sa.column("id"), sa.column("instance"), sa.column("create_time"))
    # A tag whose job is gone (possible only where foreign keys were not enforced) would block NOT NULL,
    # and no listing could show it.
    op.execute(tags.delete().where(~sa.exists().where(jobs.c.id == tags.c.job_id)))

    def of_its_job(column: sa.ColumnClause) -> sa.ScalarSelect:
        return sa.select(column).where(jobs.c.id == tags.c.job_id).scalar_subquery()

    op.execute(tags.update().values(instance=of_its_job(jobs.c.instance), create_time=of_its_job(jobs.c.create_time)))
    op.drop_index("jobs_job_tag_tag", "jobs_job_tag")  # first: SQLite's copy below need not build it again
    with op.batch_alter_table("jobs_job_tag") as batch:
        batch.alter_column("instance", existing_type=sa.String(512), nullable=False)
        batch.alter_column("create_time", existing_type=_TIME, nullable=False)
    op.create_index("jobs_job_tag_instance_created", "jobs_job_tag", ["tag", "instance", "create_time", "job_id"])


def downgrade() -> None:
    op.drop_index("jobs_job_tag_instance_created", "jobs_job_tag")
    op.create_index("jobs_job_tag_tag", "jobs_job_tag", ["tag", "job_id"])
    op.drop_column("jobs_job_tag", "create_time")
    op.drop_column("jobs_job_tag", "instance")
