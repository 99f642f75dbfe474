"""One identity per agent: ``node_credentials`` holds each node's token hash and nonce (never the
token: controller/access/node_tokens.py derives it with the secret key), and — once TLS is used —
the agent certificate pinned at registration.

Revision ID: 0004_node_credentials
Revises: 0003_upgrade
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_node_credentials"
down_revision = "0003_upgrade"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_credentials",
        sa.Column("node", sa.String(length=63), primary_key=True),
        sa.Column("token_hash", sa.String(length=80), nullable=False),
        sa.Column("token_nonce", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("tls_fingerprint", sa.String(length=100), nullable=True),
        sa.Column("tls_certificate", sa.Text(), nullable=True),
    )
    op.create_index("ix_node_credentials_token_hash", "node_credentials", ["token_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_node_credentials_token_hash", table_name="node_credentials")
    op.drop_table("node_credentials")
