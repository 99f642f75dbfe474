"""crmcluster's own tables in the state database (nodes, leases, audit, upgrade runs/steps/events).

These definitions mirror the Alembic migration chain in ``config/migrations``; the chain is the
source of truth for the database, these objects are what code queries through. Times are stored
as naive UTC (SQLite keeps no zone); use :func:`utcnow`.

- ``nodes``: written by the controller, read by the balancer within a second. ``state`` is one of
  the vocabulary's node states; ``weight`` (0..1) is the slow-start weight, never a state.
- ``leases``: compare-and-set rows with expiry; the controller leader holds ``controller``.
- ``audit``: every change made through the API (who, what, when, result; secrets redacted).
- ``upgrade_runs`` / ``upgrade_steps`` / ``upgrade_events``: the orchestrator's persisted progress.
- ``jobs`` / ``job_steps``: multi-step cluster operations (join a node, move the Replication Engine).
- ``balancer_pending``: pending logons each balancer replica publishes for the others.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the state database stores."""
    return datetime.now(UTC).replace(tzinfo=None)


nodes = Table(
    "nodes",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("state", String(16), nullable=False, server_default="down"),
    Column("weight", Float, nullable=False, server_default="1"),
    Column("fqdn", String(255), nullable=True),
    Column("agent_url", String(500), nullable=True),
    Column("roles", JSON, nullable=False, default=list),
    Column("version", String(20), nullable=True),
    Column("logged_on", Integer, nullable=False, server_default="0"),
    Column("observed", JSON, nullable=True),
    Column("fenced", Boolean, nullable=False, server_default="0"),
    Column("last_heartbeat", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("generation", Integer, nullable=False, server_default="0"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(200), nullable=True),
    Column("details", JSON, nullable=True),
    Column("result", String(20), nullable=False),
    Column("message", Text, nullable=True),
    Index("ix_audit_at", "at"),
)

upgrade_runs = Table(
    "upgrade_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("target_version", String(20), nullable=False),
    Column("from_version", String(20), nullable=True),
    Column("options", JSON, nullable=False),  # batch_size, failure_policy, require_signoff, overrides …
    Column("secrets", Text, nullable=True),  # Fernet token of a JSON object (license key, passwords)
    Column("preflight", JSON, nullable=False),
    Column("context", JSON, nullable=True),  # backups made, baseline fingerprints, touched nodes …
    Column("message", Text, nullable=True),
    Column("created_by", String(100), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("requested", String(20), nullable=True),  # 0003_upgrade: pause/abort/rollback asked
    Column("nodes", JSON, nullable=True),  # 0003_upgrade: the servers as the preflight saw them
)

upgrade_steps = Table(
    "upgrade_steps",
    metadata,
    Column("run_id", String(40), ForeignKey("upgrade_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("id", String(40), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("phase", String(30), nullable=False),
    Column("node", String(63), nullable=True),
    Column("action", String(60), nullable=False),
    Column("params", JSON, nullable=True),
    Column("status", String(20), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("op_id", String(120), nullable=True),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("message", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("wave", Integer, nullable=False, server_default="0"),  # 0003_upgrade
    Column("timeout", Float, nullable=True),  # 0003_upgrade: seconds from started_at
    Index("ix_upgrade_steps_run_seq", "run_id", "seq"),
)

upgrade_events = Table(
    "upgrade_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(40), ForeignKey("upgrade_runs.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_upgrade_events_run_id", "run_id", "id"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("target", String(63), nullable=True),
    Column("status", String(20), nullable=False),
    Column("params", JSON, nullable=True),
    Column("message", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

job_steps = Table(
    "job_steps",
    metadata,
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("node", String(63), nullable=True),
    Column("action", String(60), nullable=False),
    Column("status", String(20), nullable=False),
    Column("op_id", String(120), nullable=True),
    Column("started_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    Column("message", Text, nullable=True),
    Column("result", JSON, nullable=True),
)

#: Migration 0002_balancer: each balancer replica's pending logons per server (routed, not yet in
#: Activity), so replicas add each other's to a server's load. Rows older than a few seconds
#: belong to a replica that stopped and are ignored.
balancer_pending = Table(
    "balancer_pending",
    metadata,
    Column("replica", String(100), primary_key=True),
    Column("server", String(63), primary_key=True),
    Column("pending", Integer, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)


#: Migration 0004_node_credentials: one identity per agent. The hash and nonce of each node's token
#: (the token itself is derived with the secret key and never stored), and the agent certificate
#: pinned at registration when it speaks HTTPS.
node_credentials = Table(
    "node_credentials",
    metadata,
    Column("node", String(63), primary_key=True),
    Column("token_hash", String(80), nullable=False),
    Column("token_nonce", String(64), nullable=False),
    Column("issued_at", DateTime, nullable=False),
    Column("tls_fingerprint", String(100), nullable=True),
    Column("tls_certificate", Text, nullable=True),
    Index("ix_node_credentials_token_hash", "token_hash", unique=True),
)

#: Migration 0005_api_tokens: the API tokens of ``crmcluster tokens create`` (name, role and the
#: token's hash; the token is shown once and never stored) and the dashboard's sessions (the hash
#: of the cookie's random id), ended on the server by signing out or revoking their token.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(80), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("created_by", String(100), nullable=True),
    Column("last_used_at", DateTime, nullable=True),
    Index("ix_api_tokens_token_hash", "token_hash", unique=True),
)

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id_hash", String(80), primary_key=True),
    Column("actor", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("credential", String(63), nullable=False),
    Column("credential_hash", String(80), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Index("ix_dashboard_sessions_credential", "credential"),
)
