"""Upgrade orchestration: the operator's pending request on a run, each step's wave and time-out.

- ``upgrade_runs.requested``: ``pause``/``abort``/``rollback`` asked by an operator and not yet
  acted on by the leader's reconcile loop (kept apart from ``status``, which only the loop writes).
- ``upgrade_runs.nodes``: the servers as the preflight saw them (fixed for the run; kept apart from
  ``context``, which the run rewrites as it goes).
- ``upgrade_steps.wave``: steps of one wave run at the same time, one lane per node; a wave starts
  when every step of the waves before it has succeeded.
- ``upgrade_steps.timeout``: seconds the step may take from ``started_at`` (survives a restart).

Revision ID: 0003_upgrade
Revises: 0002_balancer
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_upgrade"
down_revision = "0002_balancer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("upgrade_runs") as batch:
        batch.add_column(sa.Column("requested", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("nodes", sa.JSON(), nullable=True))
    with op.batch_alter_table("upgrade_steps") as batch:
        batch.add_column(sa.Column("wave", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("timeout", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upgrade_steps") as batch:
        batch.drop_column("timeout")
        batch.drop_column("wave")
    with op.batch_alter_table("upgrade_runs") as batch:
        batch.drop_column("nodes")
        batch.drop_column("requested")
