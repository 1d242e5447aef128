"""Job inputs uploaded in chunks (CreateInputUpload, UploadInputChunk): the tables jobs_input_upload and
jobs_input_upload_chunk; and on jobs_job, what reads need to know of inputs that may now be hundreds
of MiB without reading them: primitive_inputs (whether they are typed; set here for the primitive jobs
stored before: the built-in sampler's and estimator's whose inputs begin {"__primitive_input__":), and
inputs_bytes and inputs_sha256 (their size and SHA-256 as GetJobInputs serves them; NULL for jobs
stored before, computed and kept when first read)."""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs_job", sa.Column("primitive_inputs", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("jobs_job", sa.Column("inputs_bytes", sa.BigInteger, nullable=True))
    op.add_column("jobs_job", sa.Column("inputs_sha256", sa.String(64), nullable=True))
    jobs = sa.table("jobs_job", sa.column("runtime"), sa.column("program_id"), sa.column("inputs"),
                    sa.column("primitive_inputs"))
    head = '{"__primitive_input__":'  # how typed.stored_inputs has always begun them (compared exactly: no LIKE)
    op.execute(jobs.update().where(jobs.c.runtime == "BUILTIN", jobs.c.program_id.in_(("sampler", "estimator")),
                                   sa.func.substr(jobs.c.inputs, 1, len(head)) == head)
               .values(primitive_inputs=True))
    op.create_table(
        "jobs_input_upload",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance", sa.String(512), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("content", sa.String(32), nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("received_bytes", sa.BigInteger, nullable=False),
        sa.Column("create_time", _TIME, nullable=False),
        sa.Column("expire_time", _TIME, nullable=False),
        sa.Column("job_id", sa.String(64)),
    )
    op.create_index("jobs_input_upload_instance", "jobs_input_upload", ["instance", "expire_time"])
    op.create_index("jobs_input_upload_expire", "jobs_input_upload", ["expire_time"])
    op.create_table(
        "jobs_input_upload_chunk",
        sa.Column("upload_id", sa.String(64), sa.ForeignKey("jobs_input_upload.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("start_byte", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("jobs_input_upload_chunk")
    op.drop_index("jobs_input_upload_expire", "jobs_input_upload")
    op.drop_index("jobs_input_upload_instance", "jobs_input_upload")
    op.drop_table("jobs_input_upload")
    op.drop_column("jobs_job", "inputs_sha256")
    op.drop_column("jobs_job", "inputs_bytes")
    op.drop_column("jobs_job", "primitive_inputs")
