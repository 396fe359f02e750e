//! The service: HTTP API, web UI, background jobs and collectors over one
//! store. Owned by the service issue; this is the interface the CLI calls.

use crate::config::Config;
use std::path::PathBuf;

/// What `pulse-metrics serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The loaded, validated configuration.
    pub config: Config,
    /// The file it came from, if any: settings changed through the API are
    /// written back there. Without one they apply until restart only.
    pub config_path: Option<PathBuf>,
}

/// Runs the service until SIGINT/SIGTERM, then flushes everything and returns.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let _ = options;
    anyhow::bail!("the service is not built yet")
}
