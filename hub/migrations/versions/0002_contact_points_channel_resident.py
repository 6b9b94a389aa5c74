"""index contact points by channel and resident, for planning

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_points", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contact_points_channel_resident", ["channel", "resident_id", "rank"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_points", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_points_channel_resident")
