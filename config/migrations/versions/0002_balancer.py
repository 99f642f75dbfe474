"""Pending logons shared by balancer replicas.

Each balancer replica publishes, per server, how many logons it has routed there that
``Activity`` does not show yet; the other replicas add them to that server's load.

Revision ID: 0002_balancer
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_balancer"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "balancer_pending",
        sa.Column("replica", sa.String(length=100), nullable=False),
        sa.Column("server", sa.String(length=63), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("replica", "server"),
    )


def downgrade() -> None:
    op.drop_table("balancer_pending")
