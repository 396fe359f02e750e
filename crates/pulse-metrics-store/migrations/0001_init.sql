-- pulse-metrics schema, version 1. See docs/storage.md for why it looks like this.
-- Applied once, in a transaction, by Store::open; user_version records it.

-- One row per series; the integer id is what every other table stores.
CREATE TABLE series (
    id            INTEGER PRIMARY KEY,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    metric        TEXT NOT NULL,
    UNIQUE (resource_type, resource_id, metric)
);

-- The raw tier's durable log: fixed-size page-sized slots rewritten in place,
-- reused once every point in them is rolled up and past raw retention.
CREATE TABLE raw_log (
    slot INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);

-- Rolled-up tiers. key = (span number << 24) | series id, so the rows of one
-- rollup pass are neighbours (few pages written) and one series' span is a
-- single lookup. seq = the last flushed batch folded into the row.
CREATE TABLE minute (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE hourly (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE daily  (key INTEGER PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL);

-- Watermarks and job times that must survive a restart.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
