//! Proxmox VE collector. Owned by the Proxmox collector issue.

use super::{Sink, StatusBoard};
use crate::config::ProxmoxConfig;
use std::sync::Arc;

/// Starts one poller per configured cluster; they stop when `shutdown`
/// turns true. Each cluster reports on `board` as `proxmox:<name>`.
pub fn spawn(
    config: ProxmoxConfig,
    sink: Arc<dyn Sink>,
    board: StatusBoard,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let _ = (config, sink, board, shutdown);
    tokio::spawn(async {})
}
