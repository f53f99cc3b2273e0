-- Development and tests only: the cart service's own tables, as the cart service's migrations create
-- them in production. The ETL never applies this file to a real cart database. The columns the ETL owns
-- on `product` (category ... synced_at) and its index come from the ETL's own migration history,
-- etl_assets/migrations/cart_db, applied after this file.
CREATE TABLE IF NOT EXISTS product (
    id        varchar(24)   PRIMARY KEY,           -- hex of the Product MongoDB _id
    title     text          NOT NULL,
    price     numeric(12,2) NOT NULL,
    image     text          NOT NULL,
    seller_id text,
    quantity  integer       NOT NULL DEFAULT 5
);

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
