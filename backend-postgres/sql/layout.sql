-- The schema and its layout marker: one row, the layout version of the objects of the
-- files that follow (see crate::schema).
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.layout (
    version integer NOT NULL
);
