//! The web UI, embedded in the binary. Owned by the UI issue.
