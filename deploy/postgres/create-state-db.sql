-- The state database of crmcluster (nodes, upgrade runs, steps, events, leases, audit) and its
-- role, for production on PostgreSQL 13 or later.
--
-- Run it once as a PostgreSQL superuser (or a role with CREATEROLE and CREATEDB):
--
--     sudo -u postgres psql -f create-state-db.sql
--     sudo -u postgres psql -v role=crmcluster -v db=crmcluster -f create-state-db.sql
--
-- It asks for the new role's password (psql's \prompt: it never appears on a command line or in
-- the shell history). Then, in /etc/crmcluster/controller.env and balancer.env:
--
--     CRMCLUSTER_STATE_DB_URL=postgresql+asyncpg://crmcluster:PASSWORD@db01.example.com:5432/crmcluster
--
-- The role owns its database and nothing else: no superuser, no CREATEDB/CREATEROLE. The
-- tables are not made here: the first crmcluster service to start (or `crmcluster migrate`)
-- applies the migration chain, under a lock, as this role.

\set ON_ERROR_STOP on

\if :{?role}
\else
    \set role crmcluster
\endif
\if :{?db}
\else
    \set db crmcluster
\endif
\if :{?password}
\else
    \prompt 'Password of the new PostgreSQL role: ' password
\endif

CREATE ROLE :"role" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE :"db" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0;
-- Only the role (and superusers) may connect.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"role";

\connect :"db"
-- PostgreSQL 15 already works this way; older servers let every role create in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO :"role";
