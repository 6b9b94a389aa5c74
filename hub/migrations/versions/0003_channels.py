"""channels: push subscription details, SMS transliteration, provider ids, instance keys

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sms_transliterate", sa.Boolean(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("contact_points", schema=None) as batch_op:
        batch_op.add_column(sa.Column("details", sa.JSON(), nullable=True))
        batch_op.alter_column(
            "address",
            existing_type=sa.VARCHAR(length=320),
            type_=sa.String(length=1000),
            existing_nullable=False,
        )

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_deliveries_provider_id", ["provider_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_provider_id")

    with op.batch_alter_table("contact_points", schema=None) as batch_op:
        batch_op.alter_column(
            "address",
            existing_type=sa.String(length=1000),
            type_=sa.VARCHAR(length=320),
            existing_nullable=False,
        )
        batch_op.drop_column("details")

    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_column("sms_transliterate")

    op.drop_table("instance_keys")
