"""Roles: ``api_tokens`` holds the API tokens made with ``crmcluster tokens create`` (a name, a
role, the token's hash — never the token), and ``dashboard_sessions`` the dashboard's signed-in
sessions (the hash of the cookie's session id), so signing out or revoking a token ends a session
on the server.

Revision ID: 0005_api_tokens
Revises: 0004_node_credentials
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_api_tokens"
down_revision = "0004_node_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("name", sa.String(length=63), primary_key=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_tokens_token_hash", "api_tokens", ["token_hash"], unique=True)
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(length=80), primary_key=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        # The credential it was opened with: "admin"/"operator" (with the bootstrap token's hash, so
        # rotating that token ends it) or the name of an API token (revoking it ends it).
        sa.Column("credential", sa.String(length=63), nullable=False),
        sa.Column("credential_hash", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_dashboard_sessions_credential", "dashboard_sessions", ["credential"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_sessions_credential", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    op.drop_index("ix_api_tokens_token_hash", table_name="api_tokens")
    op.drop_table("api_tokens")
