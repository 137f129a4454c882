#!/bin/sh
# One-shot database setup of the compose topology, run as PostgreSQL's superuser in the
# postgres image (psql only) before `tinydevcrm migrate`; the same steps the managed cluster
# takes at every start (docs/OPERATIONS.md). Idempotent: it runs at every `prod-up`.
#   1. the service role: LOGIN CREATEROLE, not a superuser (tenant roles are created at
#      registration), with the password of the deployment;
#   2. the database, owned by that role (tenant schemas are created in it);
#   3. src/db/harden.sql in that database (it must run as a superuser; the service cannot).
# Reads: PGHOST, PGUSER, PGPASSWORD (the superuser), TDC_DB_USER, TDC_DB_PASSWORD, TDC_DB_NAME,
# and HARDEN_SQL (the path of harden.sql; mounted by the compose file).
set -eu

: "${TDC_DB_USER:?}" "${TDC_DB_PASSWORD:?}" "${TDC_DB_NAME:?}" "${HARDEN_SQL:?}"

# The values reach SQL as psql variables, quoted by psql (:'name') and by format(%I, %L).
psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -d postgres \
  -v role="$TDC_DB_USER" -v password="$TDC_DB_PASSWORD" -v db="$TDC_DB_NAME" <<'SQL'
SELECT format('CREATE ROLE %I', :'role')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'role', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0', :'db', :'role', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role') \gexec
SQL

psql --no-psqlrc --quiet -v ON_ERROR_STOP=1 -d "$TDC_DB_NAME" -f "$HARDEN_SQL"
echo "db-setup: role $TDC_DB_USER, database $TDC_DB_NAME, hardening applied"
