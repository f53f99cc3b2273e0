-- The cart service's schema, including the columns the ETL owns on `product`.
-- Applied by the cart service's migrations (and by `make demo` for the embedded store);
-- the ETL itself never runs DDL against the cart database.
CREATE TABLE IF NOT EXISTS product (
    id                varchar(24) PRIMARY KEY,           -- hex of the Product MongoDB _id
    title             text          NOT NULL,
    price             numeric(12,2) NOT NULL,
    image             text          NOT NULL,
    seller_id         text,
    quantity          integer       NOT NULL DEFAULT 5,
    category          text          NOT NULL DEFAULT 'other',
    description       text,
    rating            numeric(3,2),
    tags              jsonb         NOT NULL DEFAULT '[]'::jsonb,
    source_updated_at timestamptz,
    content_hash      char(32)      NOT NULL,
    is_active         boolean       NOT NULL DEFAULT true,
    synced_at         timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS product_synced_at_idx ON product (synced_at);

CREATE TABLE IF NOT EXISTS cart (
    id         uuid        PRIMARY KEY,
    user_id    text        NOT NULL,
    product_id varchar(24) NOT NULL REFERENCES product (id),
    quantity   integer     NOT NULL,
    version    integer     NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cart_updated_at_idx ON cart (updated_at);
CREATE INDEX IF NOT EXISTS cart_product_id_idx ON cart (product_id);
