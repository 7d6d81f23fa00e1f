#!/bin/bash
# Creates one login role and one database per service that keeps its data in PostgreSQL
# (booking, payment, inventory, notification, analytics; the gateway has none: its read model is SQLite inside each of its pods).
# Each database is reachable only by its owner (CONNECT revoked from PUBLIC), so a service
# cannot open another's data.
# Run by the postgres image on first start (/docker-entrypoint-initdb.d), as the superuser;
# passwords come from each service's Secret `<service>-db` (key `password`).
# Idempotent, so it can be re-run by hand after adding a service.
# CHOREO_DB_PREFIX (default empty) prefixes every role and database name; only the tests set it.
set -euo pipefail

prefix="${CHOREO_DB_PREFIX:-}"

# create_owner ROLE PASSWORD DATABASE...
create_owner() {
    local role="${prefix}$1" password="$2"
    shift 2
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
        -v role="$role" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'password') \gexec
SQL
    local database
    for database in "$@"; do
        psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
            -v role="$role" -v database="${prefix}${database}" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'database') \gexec
SQL
    done
}

create_owner booking "$BOOKING_DB_PASSWORD" booking
# payment_ledger: the payment-provider simulator's own ledger (a real PSP keeps it on its side).
create_owner payment "$PAYMENT_DB_PASSWORD" payment payment_ledger
create_owner inventory "$INVENTORY_DB_PASSWORD" inventory
create_owner notification "$NOTIFICATION_DB_PASSWORD" notification
create_owner analytics "$ANALYTICS_DB_PASSWORD" analytics
