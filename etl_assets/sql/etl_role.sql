-- The two roles shop-sync uses in Cart PostgreSQL, run by the cart database's owner (a superuser, or a
-- role with CREATEROLE that owns `product`), in the cart database:
--
--   shop_sync_etl           the run-time role (CART_PG_URL). It reads carts and reads, adds and updates
--                           products, and nothing else: no DELETE (a product that left the catalog is
--                           deactivated, never deleted), no TRUNCATE, no DDL.
--   shop_sync_cart_migrate  the migration role (CART_PG_MIGRATE_URL), for `python -m etl_assets.migrate
--                           cart_db` at deploy time: DDL on `product`, where the ETL owns columns and
--                           an index, on its own schema `shop_sync` (the version table), and on what it
--                           creates itself. Nothing on `cart` or on any other object of the cart service.
--
-- The passwords come in psql variables so that they are never written into this file, the repository
-- or a migration:
--
--     psql "$CART_DB_OWNER_URL" -v ON_ERROR_STOP=1 -v etl_password="$ETL_CART_PASSWORD" \
--          -v migrate_password="$ETL_CART_MIGRATE_PASSWORD" -f etl_role.sql
--
-- A variable may hold a SCRAM verifier ('SCRAM-SHA-256$4096:...') instead of the password itself, so
-- that neither the server's statement log nor anyone reading the process list ever sees the password.
-- Idempotent: run it again to rotate the passwords or to take back privileges granted by hand. Run it
-- before the first migration: the cart service's `product` and `cart` tables must exist.

\set ON_ERROR_STOP on
\if :{?etl_password}
\else
DO $$ BEGIN
    RAISE EXCEPTION 'etl_role.sql needs the password: psql -v etl_password=... -f etl_role.sql';
END $$;
\endif
\if :{?migrate_password}
\else
DO $$ BEGIN
    RAISE EXCEPTION 'etl_role.sql needs the migration role''s password: psql -v migrate_password=... -f etl_role.sql';
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

-- The migration role. INHERIT, so that it acts with the rights of the group that owns `product`.
SELECT 'CREATE ROLE shop_sync_cart_migrate'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_sync_cart_migrate')
\gexec
ALTER ROLE shop_sync_cart_migrate WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    INHERIT PASSWORD :'migrate_password';
SELECT format('GRANT CONNECT ON DATABASE %I TO shop_sync_cart_migrate', current_database())
\gexec
-- CREATE on the schema too: PostgreSQL asks for it to add an index (which lives beside its table). It
-- lets the role create objects of its own there, never change one it does not own.
GRANT USAGE, CREATE ON SCHEMA public TO shop_sync_cart_migrate;
REVOKE ALL ON TABLE cart FROM shop_sync_cart_migrate;

-- PostgreSQL grants DDL on a table only to its owner, never per column. So `product` is owned by a
-- group, shop_sync_product_owner, whose members are the table's previous owner (the cart service's own
-- role, whose migrations keep every right they had) and the migration role. That is the narrowest DDL
-- right PostgreSQL can give: the whole of `product` and nothing else; the ETL's migrations themselves
-- only add the ETL's columns and indexes (etl_assets/migrations/cart_db).
SELECT 'CREATE ROLE shop_sync_product_owner NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop_sync_product_owner')
\gexec
SELECT format('GRANT shop_sync_product_owner TO %I', tableowner) FROM pg_tables
WHERE schemaname = 'public' AND tablename = 'product' AND tableowner <> 'shop_sync_product_owner'
\gexec
ALTER TABLE product OWNER TO shop_sync_product_owner;
GRANT shop_sync_product_owner TO shop_sync_cart_migrate;

-- The migration history's version table lives in a schema of the ETL's own, apart from any version
-- table of the cart service's. The run-time role reads it to check that the schema is current.
CREATE SCHEMA IF NOT EXISTS shop_sync AUTHORIZATION shop_sync_cart_migrate;
GRANT USAGE ON SCHEMA shop_sync TO shop_sync_etl;
ALTER DEFAULT PRIVILEGES FOR ROLE shop_sync_cart_migrate IN SCHEMA shop_sync GRANT SELECT ON TABLES TO shop_sync_etl;
GRANT SELECT ON ALL TABLES IN SCHEMA shop_sync TO shop_sync_etl;
