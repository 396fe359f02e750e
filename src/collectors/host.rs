//! This machine as resource type `node` (id = hostname): `cpu`, `memory`,
//! `disk` (percent of the root filesystem). Owned by the service issue.

use super::{Sink, StatusBoard};
use crate::config::HostCollectorConfig;
use std::sync::Arc;

/// Starts the host collector; it stops when `shutdown` turns true.
pub fn spawn(
    config: HostCollectorConfig,
    sink: Arc<dyn Sink>,
    board: StatusBoard,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let _ = (config, sink, board, shutdown);
    tokio::spawn(async {})
}
