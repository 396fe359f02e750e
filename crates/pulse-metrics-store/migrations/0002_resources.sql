-- pulse-metrics schema, version 2: resource metadata and merged series.

-- What is known about a resource beyond its numbers (see resources.rs).
-- Written only when something changes; tags are a JSON list of strings.
CREATE TABLE resources (
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    name          TEXT,
    node          TEXT,
    instance      TEXT,
    status        TEXT,
    template      INTEGER,
    tags          TEXT,
    PRIMARY KEY (resource_type, resource_id)
) WITHOUT ROWID;

-- A series merged into another (a guest id that no longer carries its node):
-- its rolled-up chunks were added to the target's, raw points still logged
-- under it are read as the target's, and writes under its key go there.
ALTER TABLE series ADD COLUMN merged_into INTEGER;
