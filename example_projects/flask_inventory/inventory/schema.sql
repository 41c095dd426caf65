-- The inventory an agent manages: warehouses, products, stock levels and orders.
-- Constraints matter to the story: stock never goes negative, and products that stock
-- or orders reference cannot be deleted.

CREATE TABLE warehouses (
    id   integer PRIMARY KEY,
    name text NOT NULL UNIQUE,
    city text NOT NULL
);

CREATE TABLE products (
    id    integer PRIMARY KEY,
    sku   text NOT NULL UNIQUE,
    name  text NOT NULL,
    price numeric(10, 2) NOT NULL CONSTRAINT products_price_positive CHECK (price > 0)
);

CREATE TABLE stock (
    warehouse_id  integer NOT NULL REFERENCES warehouses (id),
    product_id    integer NOT NULL REFERENCES products (id),
    quantity      integer NOT NULL CONSTRAINT stock_quantity_not_negative CHECK (quantity >= 0),
    reorder_level integer NOT NULL,
    PRIMARY KEY (warehouse_id, product_id)
);

CREATE TABLE orders (
    id           integer PRIMARY KEY,
    customer     text NOT NULL,
    product_id   integer NOT NULL REFERENCES products (id),
    warehouse_id integer NOT NULL REFERENCES warehouses (id),
    quantity     integer NOT NULL CHECK (quantity > 0),
    status       text NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'fulfilled', 'cancelled'))
);

INSERT INTO warehouses VALUES
    (1, 'North', 'Leeds'),
    (2, 'South', 'Bristol');

INSERT INTO products VALUES
    (1, 'LAMP-01', 'Desk lamp', 24.50),
    (2, 'CHAIR-02', 'Office chair', 149.00),
    (3, 'MUG-03', 'Coffee mug', 6.90),
    (4, 'DESK-04', 'Standing desk', 399.00);

-- Four levels are below their reorder level.
INSERT INTO stock VALUES
    (1, 1, 3, 10),
    (1, 2, 12, 5),
    (1, 3, 40, 20),
    (1, 4, 2, 4),
    (2, 1, 15, 10),
    (2, 2, 1, 5),
    (2, 3, 8, 20),
    (2, 4, 6, 4);

-- Order 1001 needs 6 lamps at North, which has 3 until someone restocks.
INSERT INTO orders VALUES
    (1001, 'Ada Lovelace', 1, 1, 6, 'open'),
    (1002, 'Grace Hopper', 4, 2, 1, 'open'),
    (1003, 'Alan Turing', 3, 1, 2, 'fulfilled');
