//! The service: HTTP API, web UI, background jobs and collectors over one
//! store.
//!
//! | module   | owns                                                        |
//! |----------|-------------------------------------------------------------|
//! | `api`    | the router, auth, every `/api` handler and their JSON shapes |
//! | `charts` | the `/api/charts` body (megabytes), written fast by hand     |
//! | `conn`   | accepting connections: timeouts and the connection cap      |
//! | `guard`  | `Host`, `Origin`, content type and size checks before handlers |
//! | `influx` | InfluxDB's `/write`, `/api/v2/write`, `/health`, `/ping`     |
//! | `jobs`   | rollup, retention and vacuum on their (live) intervals       |
//! | `prom`   | `/metrics` in the Prometheus text format                     |
//! | `udp`    | line protocol over UDP (`ingest.influx.udp`)                 |
//!
//! [`serve`] is what `pulse-metrics serve` calls: it opens the store, binds,
//! and runs until SIGINT/SIGTERM. [`run`] is the same service over a listener
//! and shutdown signal the caller provides, which is how the tests drive it.

pub mod api;
pub mod charts;
pub mod conn;
pub mod guard;
pub mod influx;
pub mod jobs;
pub mod prom;
pub mod udp;

use crate::collectors::{self, Sink, StatusBoard};
use crate::config::{Config, SettingsFile};
use crate::store::Store;
use anyhow::Context;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What `pulse-metrics serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The loaded, validated configuration (settings.json applied).
    pub config: Config,
    /// Where settings changed through the API are kept, and what they
    /// apply over.
    pub settings: SettingsFile,
}

/// How long shutdown waits for in-flight requests before it stops waiting
/// and flushes anyway: SIGTERM must end the process within a few seconds
/// even if a client keeps a slow request open.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for collectors and jobs to notice the signal.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) state: Arc<AppState>,
}

pub(crate) struct AppState {
    pub store: Store,
    /// The whole configuration as last saved; the lock serializes config
    /// PUTs so two of them cannot interleave their read-modify-write.
    pub config: tokio::sync::Mutex<Config>,
    /// Where settings changes go (`settings.json`) and what they apply over.
    pub settings: SettingsFile,
    pub board: StatusBoard,
    pub prom: prom::HttpMetrics,
    pub jobs: jobs::JobCounters,
    /// `server.api_token`, if non-empty. Fixed for the life of the process.
    pub token: Option<String>,
    /// Unix ms the service started (health checks measure from here).
    pub started_ms: i64,
    /// The names requests may be addressed to.
    pub hosts: guard::HostPolicy,
    /// `server.max_answer_points`.
    pub max_answer_points: usize,
    /// Reads over every series (charts, the series list), a few at a time.
    pub heavy_reads: Arc<tokio::sync::Semaphore>,
    /// Every other store read: each holds a SQLite reader (descriptors).
    pub light_reads: Arc<tokio::sync::Semaphore>,
    /// Line protocol pushes (HTTP and UDP), with their counters.
    pub influx: Arc<crate::influx::Receiver>,
    /// Where the UDP line protocol listener is bound, once it is.
    pub udp_addr: std::sync::OnceLock<SocketAddr>,
}

/// Store reads other than the heavy ones that may run at once.
const LIGHT_READS: usize = 16;

impl App {
    /// The service state over an open store. `config.metrics` should be
    /// what the store was opened with; `settings` says where config PUTs are
    /// saved (`SettingsFile::in_memory`: they apply until restart only).
    pub fn new(store: Store, config: Config, settings: SettingsFile) -> App {
        let token = Some(config.server.api_token.clone()).filter(|t| !t.is_empty());
        let hosts = guard::HostPolicy::new(&config.server);
        let max_answer_points = config.server.max_answer_points;
        let heavy_reads = Arc::new(tokio::sync::Semaphore::new(config.server.max_heavy_reads));
        let board = StatusBoard::default();
        let sink: Arc<dyn Sink> = Arc::new(store.clone());
        let influx = Arc::new(crate::influx::Receiver::new(sink, board.clone()));
        App {
            state: Arc::new(AppState {
                store,
                config: tokio::sync::Mutex::new(config),
                settings,
                board,
                prom: prom::HttpMetrics::default(),
                jobs: jobs::JobCounters::default(),
                token,
                started_ms: crate::model::now_ms(),
                hosts,
                max_answer_points,
                heavy_reads,
                light_reads: Arc::new(tokio::sync::Semaphore::new(LIGHT_READS)),
                influx,
                udp_addr: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub fn board(&self) -> &StatusBoard {
        &self.state.board
    }

    /// The bound address of the UDP line protocol listener, once `run` has
    /// started it (`ingest.influx.udp`).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.state.udp_addr.get().copied()
    }

    /// The router of the whole service (API, `/metrics`, `/healthz`, UI).
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }
}

/// Is `listen` (an address as written in the config) a loopback address?
/// Only 127.0.0.0/8, ::1 and `localhost` count: anything else (including
/// 0.0.0.0 and unresolved host names) is treated as exposed.
pub fn is_loopback_listen(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    if let Ok(ip) = listen.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = match listen.rsplit_once(':') {
        Some((host, _port)) => host,
        None => listen,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses to expose the API without a token (see CONTRACT: "Listening on a
/// non-loopback address without a token is refused at startup").
pub fn check_listen(config: &Config) -> anyhow::Result<()> {
    if !is_loopback_listen(&config.server.listen) && config.server.api_token.is_empty() {
        anyhow::bail!(
            "refusing to listen on {} without server.api_token: anyone who can reach it could read and write metrics. \
             Set server.api_token (or listen on 127.0.0.1)",
            config.server.listen
        );
    }
    Ok(())
}

/// Runs the service until SIGINT/SIGTERM, then flushes everything and returns.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let ServeOptions { config, settings } = options;
    config.check_startable().context("invalid configuration")?;
    check_listen(&config)?;
    let signal = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let metrics = config.metrics.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(metrics))
        .await
        .context("store open task failed")?
        .with_context(|| {
            format!(
                "cannot open the metrics store {}",
                config.metrics.database_path.display()
            )
        })?;
    if !config.metrics.enabled {
        tracing::warn!(
            "metrics.enabled is false: history is kept in memory only and lost at restart"
        );
    }
    let app = App::new(store, config, settings);
    run(listener, app, signal).await
}

/// Resolves at the first SIGINT or SIGTERM. The handlers are installed
/// here, before the caller announces it is listening: a signal that arrives
/// right after must still flush, not kill the process unflushed.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::error!("cannot listen for {name}: {e}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = wait(int, "SIGINT") => tracing::info!("SIGINT received, shutting down"),
                _ = wait(term, "SIGTERM") => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received, shutting down");
    }
}

/// Serves `app` on `listener` with its background jobs and collectors until
/// `shutdown` resolves; then stops accepting, lets in-flight requests finish
/// (up to a few seconds), stops jobs and collectors, and closes the store
/// (every accepted point flushed, WAL checkpointed).
///
/// Prints `listening on http://ADDR` (the real bound address) to stderr.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = start_background(&app, stop_rx).await?;

    // One plain line that scripts and tests parse; the log says it too,
    // worded differently so a grep finds exactly one line. The next says
    // where the history and the UI's settings are kept.
    tracing::info!(%addr, "serving the API and the web UI");
    // Not eprintln!: a stderr nobody reads must not stop the service.
    let _ = writeln!(std::io::stderr(), "listening on http://{addr}");
    let _ = writeln!(std::io::stderr(), "{}", where_data_is(&app));

    // The shutdown future is shared: every connection's graceful shutdown waits on it,
    // and so does the drain deadline below.
    let (signal_tx, signal_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal_tx.send(true);
    });
    let limits = conn::Limits::from_config(&app.state.config.lock().await.server);
    let server = conn::serve(listener, app.router(), limits, signal_rx.clone());
    let mut deadline_rx = signal_rx;
    let served = tokio::select! {
        () = server => Ok(()),
        _ = async {
            let _ = deadline_rx.wait_for(|v| *v).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing anyway");
            Ok(())
        }
    };

    let _ = stop_tx.send(true);
    for task in tasks {
        if tokio::time::timeout(TASK_STOP_TIMEOUT, task).await.is_err() {
            tracing::warn!("a background task did not stop in time");
        }
    }
    let store = app.state.store.clone();
    drop(app);
    let closed = tokio::task::spawn_blocking(move || store.close())
        .await
        .context("store close task failed")?;
    match closed {
        Ok(()) => tracing::info!("store flushed and closed"),
        Err(e) => {
            tracing::error!("closing the store failed: {e}");
            return Err(anyhow::Error::new(e).context("closing the store failed"));
        }
    }
    served
}

/// "history in /var/lib/pulse-metrics/metrics.db; settings changed in the
/// web UI in ./data/settings.json", with absolute paths.
fn where_data_is(app: &App) -> String {
    let metrics = app.state.store.config();
    let absolute = |p: &std::path::Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let history = if metrics.enabled {
        format!("history in {}", absolute(&metrics.database_path))
    } else {
        "history in memory only (metrics.enabled: false): lost at restart".to_string()
    };
    let settings = match &app.state.settings.path {
        Some(p) => format!("settings changed in the web UI in {}", absolute(p)),
        None => "settings changed in the web UI last until restart".to_string(),
    };
    format!("{history}; {settings}")
}

/// Starts the maintenance jobs, the UDP listener and the enabled
/// collectors; fails when the UDP address cannot be bound.
async fn start_background(
    app: &App,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let config = app.state.config.lock().await.clone();
    let udp = udp::start(app, &config.ingest.influx, stop.clone()).await?;
    let mut tasks = jobs::spawn(app.clone(), stop.clone());
    tasks.extend(udp);
    let sink: Arc<dyn Sink> = Arc::new(app.state.store.clone());
    if config.collectors.host.enabled {
        tasks.push(collectors::host::spawn(
            config.collectors.host.clone(),
            sink.clone(),
            app.state.board.clone(),
            stop.clone(),
        ));
    } else {
        app.state
            .board
            .update("host", |s| s.state = "disabled".into());
    }
    if config.collectors.proxmox.enabled {
        tasks.push(collectors::proxmox::spawn(
            config.collectors.proxmox.clone(),
            sink,
            app.state.board.clone(),
            stop,
        ));
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for ok in [
            "127.0.0.1:7656",
            "127.1.2.3:80",
            "[::1]:7656",
            "localhost:7656",
            "LOCALHOST:1",
            "::1",
            "127.0.0.1",
        ] {
            assert!(is_loopback_listen(ok), "{ok}");
        }
        for exposed in [
            "0.0.0.0:7656",
            "[::]:7656",
            "192.168.1.5:7656",
            "example.com:80",
            "10.0.0.1",
        ] {
            assert!(!is_loopback_listen(exposed), "{exposed}");
        }
    }

    #[test]
    fn exposed_listen_needs_a_token() {
        let mut c = Config::default();
        c.server.listen = "0.0.0.0:7656".into();
        let err = check_listen(&c).unwrap_err().to_string();
        assert!(err.contains("api_token"), "{err}");
        c.server.api_token = "s3cret".into();
        assert!(check_listen(&c).is_ok());
        assert!(check_listen(&Config::default()).is_ok());
    }
}
