-- The two roles shop-sync uses in Warehouse PostgreSQL, run by a superuser in the warehouse database:
--
--   shop_sync_warehouse          the run-time role (WAREHOUSE_PG_URL): reads and writes the rows of the
--                                ETL's tables (the day loads replace a day with DELETE and INSERT), no DDL.
--   shop_sync_warehouse_migrate  the migration role (WAREHOUSE_PG_MIGRATE_URL), for `python -m
--                                etl_assets.migrate warehouse`: it owns the warehouse database and every
--                                table in it, and the ETL owns the whole warehouse.
--
--     psql "$WAREHOUSE_ADMIN_URL" -v ON_ERROR_STOP=1 -v runtime_password="$ETL_WAREHOUSE_PASSWORD" \
--          -v migrate_password="$ETL_WAREHOUSE_MIGRATE_PASSWORD" -f warehouse_role.sql
--
-- As in etl_role.sql, a variable may hold a SCRAM verifier instead of the password. Idempotent. Run it
-- before the first migration; it also adopts the tables of a warehouse that an older shop-sync created
-- as its run-time role (they change owner to the migration role).

\set ON_ERROR_STOP on
\if :{?runtime_password}
\else
DO $$ BEGIN
    RAISE EXCEPTION 'warehouse_role.sql needs the password: psql -v runtime_password=... -f warehouse_role.sql';
END $$;
\endif
\if :{?migrate_password}
\else
DO $$ BEGIN
    RAISE EXCEPTION 'warehouse_role.sql needs the migration role''s password: psql -v migrate_password=... -f warehouse_role.sql';
END $$;
\endif

SELECT 'CREATE ROLE shop_sync_warehouse'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_sync_warehouse')
\gexec
ALTER ROLE shop_sync_warehouse WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    NOINHERIT PASSWORD :'runtime_password';
SELECT 'CREATE ROLE shop_sync_warehouse_migrate'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_sync_warehouse_migrate')
\gexec
ALTER ROLE shop_sync_warehouse_migrate WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS NOINHERIT PASSWORD :'migrate_password';

-- The migration role owns the database, its public schema (pg_database_owner, PostgreSQL 15 and later)
-- and every table in it; the run-time role may connect, and create nothing.
SELECT format('ALTER DATABASE %I OWNER TO shop_sync_warehouse_migrate', current_database())
\gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO shop_sync_warehouse', current_database())
\gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO shop_sync_warehouse_migrate;
GRANT USAGE ON SCHEMA public TO shop_sync_warehouse;
SELECT format('ALTER TABLE public.%I OWNER TO shop_sync_warehouse_migrate', tablename) FROM pg_tables
WHERE schemaname = 'public' AND tableowner <> 'shop_sync_warehouse_migrate'
\gexec
CREATE SCHEMA IF NOT EXISTS shop_sync AUTHORIZATION shop_sync_warehouse_migrate;
GRANT USAGE ON SCHEMA shop_sync TO shop_sync_warehouse;

-- Every table a migration creates, now or later: its rows to the run-time role; the version table
-- (schema shop_sync) only to read, for the check at step start.
ALTER DEFAULT PRIVILEGES FOR ROLE shop_sync_warehouse_migrate IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO shop_sync_warehouse;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO shop_sync_warehouse;
ALTER DEFAULT PRIVILEGES FOR ROLE shop_sync_warehouse_migrate IN SCHEMA shop_sync
    GRANT SELECT ON TABLES TO shop_sync_warehouse;
GRANT SELECT ON ALL TABLES IN SCHEMA shop_sync TO shop_sync_warehouse;
