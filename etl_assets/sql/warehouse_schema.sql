-- The warehouse is owned by the ETL: sync state, quarantine and analytics tables.
-- Idempotent; every sync applies it before it starts.
CREATE TABLE IF NOT EXISTS etl_sync_state (
    sync_name   text PRIMARY KEY,
    watermark   jsonb,
    last_run_id text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS etl_quarantine (
    source      text        NOT NULL,
    record_id   text        NOT NULL,
    reason      text        NOT NULL,
    payload     jsonb       NOT NULL,
    run_id      text        NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    PRIMARY KEY (source, record_id)
);
CREATE INDEX IF NOT EXISTS etl_quarantine_open_idx ON etl_quarantine (source) WHERE resolved_at IS NULL;

CREATE TABLE IF NOT EXISTS orders (
    order_id       text PRIMARY KEY,
    order_day      date          NOT NULL,
    user_id        text          NOT NULL,
    order_status   text          NOT NULL,
    payment_status text          NOT NULL,
    subtotal       numeric(14,2) NOT NULL,
    tax            numeric(14,2) NOT NULL,
    shipping       numeric(14,2) NOT NULL,
    discount       numeric(14,2) NOT NULL,
    total          numeric(14,2) NOT NULL,
    created_at     timestamptz   NOT NULL,
    paid_at        timestamptz
);
CREATE INDEX IF NOT EXISTS orders_day_idx ON orders (order_day);
-- The cart funnel looks up a user's latest order of a product.
CREATE INDEX IF NOT EXISTS orders_user_idx ON orders (user_id, created_at);

CREATE TABLE IF NOT EXISTS order_items (
    order_id      text          NOT NULL,
    line_no       integer       NOT NULL,
    order_day     date          NOT NULL,
    product_id    text          NOT NULL,
    product_title text          NOT NULL,
    seller_id     text,
    quantity      integer       NOT NULL,
    unit_price    numeric(12,2) NOT NULL,
    subtotal      numeric(14,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX IF NOT EXISTS order_items_day_idx ON order_items (order_day);

CREATE TABLE IF NOT EXISTS daily_sales (
    day     date PRIMARY KEY,
    orders  integer       NOT NULL,
    units   integer       NOT NULL,
    revenue numeric(14,2) NOT NULL
);

CREATE TABLE IF NOT EXISTS product_sales (
    day        date          NOT NULL,
    product_id text          NOT NULL,
    units      integer       NOT NULL,
    revenue    numeric(14,2) NOT NULL,
    PRIMARY KEY (day, product_id)
);

CREATE TABLE IF NOT EXISTS cart_funnel (
    day              date    PRIMARY KEY,
    active_carts     integer NOT NULL,
    abandoned_carts  integer NOT NULL,
    converted_carts  integer NOT NULL,
    abandon_after_days integer NOT NULL
);
