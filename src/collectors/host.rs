//! This machine as resource type `node` (id = hostname): `cpu`, `memory`,
//! `disk` (percent of the root filesystem). Owned by the service issue.
