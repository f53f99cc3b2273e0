-- The role shop-sync connects to Cart PostgreSQL as (CART_PG_URL). It reads carts and reads, adds and
-- updates products, and nothing else: no DELETE (a product that left the catalog is deactivated, never
-- deleted), no TRUNCATE, no DDL (the cart service's migrations own the schema, cart_db_schema.sql).
--
-- Run it as the cart database's owner, in the cart database, with the password in a psql variable so it
-- is never written into this file, the repository or a migration:
--
--     psql "$CART_DB_OWNER_URL" -v ON_ERROR_STOP=1 -v etl_password="$ETL_CART_PASSWORD" -f etl_role.sql
--
-- The variable may hold a SCRAM verifier ('SCRAM-SHA-256$4096:...') instead of the password itself, so
-- that neither the server's statement log nor anyone reading the process list ever sees the password.
-- Idempotent: run it again to rotate the password or to take back privileges granted by hand.

\set ON_ERROR_STOP on
\if :{?etl_password}
\else
DO $$ BEGIN
    RAISE EXCEPTION 'etl_role.sql needs the password: psql -v etl_password=... -f etl_role.sql';
END $$;
\endif

SELECT 'CREATE ROLE shop_sync_etl' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_sync_etl')
\gexec
ALTER ROLE shop_sync_etl WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
    PASSWORD :'etl_password';

-- CONNECT, and TEMPORARY: the product sync stages each batch in session-private temporary tables
-- (product_stage, product_seen) that COPY fills and the upsert reads. They live in the session's own
-- pg_temp schema and vanish with it, so TEMPORARY gives no way to create or change a shared object.
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO shop_sync_etl', current_database())
\gexec

-- Before PostgreSQL 15 every role may create tables in the public schema; the ETL must not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO shop_sync_etl;

REVOKE ALL ON TABLE product, cart FROM shop_sync_etl;
-- The product copy: upsert by id (INSERT ... ON CONFLICT DO UPDATE) and deactivation (UPDATE).
GRANT SELECT, INSERT, UPDATE ON TABLE product TO shop_sync_etl;
-- Carts are read only: the cart snapshot sync, the source observation and the asset checks.
GRANT SELECT ON TABLE cart TO shop_sync_etl;
