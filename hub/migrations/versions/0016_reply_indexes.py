"""indexes for replies: the events waiting for a drain, and the notices sent to an address

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

WAITING = sa.text("processed_at IS NULL AND outcome IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_inbound_events_waiting",
        "inbound_events",
        ["id"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )
    op.create_index(
        "ix_deliveries_contact_point_sent", "deliveries", ["contact_point_id", "sent_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_contact_point_sent", table_name="deliveries")
    op.drop_index("ix_inbound_events_waiting", table_name="inbound_events")
