-- New value types, and a status enum for the shipments table.
CREATE DOMAIN positive_money AS numeric(14, 2) CHECK (VALUE >= 0);

CREATE TYPE shipment_status AS ENUM ('pending', 'shipped', 'delivered', 'returned');

CREATE TABLE shipments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    status shipment_status NOT NULL DEFAULT 'pending',
    cost positive_money NOT NULL,
    shipped_at timestamptz
);

CREATE INDEX shipments_order_id_idx ON shipments (order_id);
