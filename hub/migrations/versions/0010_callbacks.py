"""callbacks to other city systems: endpoints, the callback outbox and its attempts

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "callback_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "callback_outbox",
        sa.Column("id", BigId, nullable=False),
        sa.Column("public_id", sa.String(length=36), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.SmallInteger(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("last_status_code", sa.SmallInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["endpoint_id"], ["callback_endpoints.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("public_id"),
    )
    op.create_index(
        "ix_callback_outbox_status_next", "callback_outbox", ["status", "next_attempt_at"]
    )
    op.create_index("ix_callback_outbox_endpoint", "callback_outbox", ["endpoint_id", "id"])
    op.create_table(
        "callback_attempts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("outbox_id", BigId, nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["callback_endpoints.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["outbox_id"], ["callback_outbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_callback_attempts_endpoint", "callback_attempts", ["endpoint_id", "id"])
    op.create_index("ix_callback_attempts_outbox", "callback_attempts", ["outbox_id"])


def downgrade() -> None:
    op.drop_index("ix_callback_attempts_outbox", table_name="callback_attempts")
    op.drop_index("ix_callback_attempts_endpoint", table_name="callback_attempts")
    op.drop_table("callback_attempts")
    op.drop_index("ix_callback_outbox_endpoint", table_name="callback_outbox")
    op.drop_index("ix_callback_outbox_status_next", table_name="callback_outbox")
    op.drop_table("callback_outbox")
    op.drop_table("callback_endpoints")
