"""GOV.UK Notify-compatible API: templates, their versions, notifications

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notify_templates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("template_type", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "notify_template_versions",
        sa.Column("template_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["template_id"], ["notify_templates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("template_id", "version"),
    )
    op.create_table(
        "notify_notifications",
        sa.Column("seq", BigId, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("key_type", sa.String(length=8), nullable=False),
        sa.Column("notification_type", sa.String(length=8), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("template_id", sa.String(length=36), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=1000), nullable=True),
        sa.Column("subject", sa.String(length=1000), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("provider_id", sa.String(length=300), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["template_id"], ["notify_templates.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index(
        "ix_notify_notifications_key_type_seq", "notify_notifications", ["key_type", "seq"]
    )
    op.create_index("ix_notify_notifications_provider_id", "notify_notifications", ["provider_id"])
    op.create_index(
        "ix_notify_notifications_status_created", "notify_notifications", ["status", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("notify_notifications")
    op.drop_table("notify_template_versions")
    op.drop_table("notify_templates")
