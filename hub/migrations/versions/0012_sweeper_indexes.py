"""indexes for the sweeper's look-ups of unprocessed inbound events and unsent answers

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_inbound_events_processed_received",
        "inbound_events",
        ["processed_at", "received_at"],
    )
    op.create_index("ix_messages_status_created", "messages", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_status_created", table_name="messages")
    op.drop_index("ix_inbound_events_processed_received", table_name="inbound_events")
