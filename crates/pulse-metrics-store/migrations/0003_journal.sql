-- pulse-metrics schema, version 3: the raw tier moves out of the database
-- into an append-only journal beside it (`<database>-raw/`, see
-- docs/storage.md). Before this runs, Store::open copies every batch of the
-- old log into the journal and syncs it.
DROP TABLE raw_log;
