//! Background maintenance: rollup, retention (pruning) and vacuum, each on
//! its own task and its own configured interval.
//!
//! The interval is read from `store.config()` again at every check (once a
//! second at most), so a config PUT that shortens an interval applies at the
//! next check rather than after the old, longer wait. A failing job is
//! logged and counted (the store also records it in stats `lastError`) and
//! simply runs again at its next interval: it never stops the service.

use super::App;
use crate::config::MetricsConfig;
use crate::model::now_ms;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The kinds of background job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Rollup,
    Retention,
    Vacuum,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Rollup, JobKind::Retention, JobKind::Vacuum];

    pub fn name(self) -> &'static str {
        match self {
            JobKind::Rollup => "rollup",
            JobKind::Retention => "retention",
            JobKind::Vacuum => "vacuum",
        }
    }

    fn interval(self, config: &MetricsConfig) -> Duration {
        match self {
            JobKind::Rollup => config.rollup_interval,
            JobKind::Retention => config.retention_interval,
            JobKind::Vacuum => config.vacuum_interval,
        }
    }
}

/// Runs and failures per job kind, for `/metrics`.
#[derive(Debug, Default)]
pub struct JobCounters {
    runs: [AtomicU64; 3],
    failures: [AtomicU64; 3],
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct JobCount {
    pub runs: u64,
    pub failures: u64,
}

impl JobCounters {
    fn record(&self, kind: JobKind, ok: bool) {
        let i = kind as usize;
        self.runs[i].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, kind: JobKind) -> JobCount {
        let i = kind as usize;
        JobCount {
            runs: self.runs[i].load(Ordering::Relaxed),
            failures: self.failures[i].load(Ordering::Relaxed),
        }
    }
}

/// Longest sleep between two looks at the live interval.
const RECHECK: Duration = Duration::from_secs(1);

/// Starts one task per job kind; they end when `stop` turns true.
pub fn spawn(app: App, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = JobKind::ALL
        .into_iter()
        .map(|kind| tokio::spawn(job_loop(kind, app.clone(), stop.clone())))
        .collect();
    tasks.push(tokio::spawn(flush_nudge(app, stop)));
    tasks
}

/// Asks the store to flush once per `flush_interval`.
///
/// Works around a store bug (see `tests/store_bugs.rs`): a write smaller than
/// `write_buffer` into an idle store is not flushed when `flush_interval` is
/// up, so the host collector's few points a poll would stay invisible (and
/// not durable) for minutes. `flush()` costs nothing when nothing is pending.
/// Remove once the store's writer wakes itself for the interval.
async fn flush_nudge(app: App, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = app.state.store.config().flush_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let store = app.state.store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_closed() => return,
            // The store records flush failures itself (stats, lastError).
            Ok(Err(e)) => tracing::debug!("periodic flush: {e}"),
            Err(e) => tracing::error!("periodic flush task failed: {e}"),
        }
    }
}

async fn job_loop(kind: JobKind, app: App, mut stop: watch::Receiver<bool>) {
    // The first run comes one interval after start: a restart must not
    // trigger a vacuum, and the store's own open already caught up.
    let mut last = Instant::now();
    loop {
        let interval = kind.interval(&app.state.store.config());
        let due = last + interval;
        let now = Instant::now();
        if now < due {
            let nap = (due - now).min(RECHECK);
            tokio::select! {
                _ = tokio::time::sleep(nap) => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        if *stop.borrow() {
            return;
        }
        last = Instant::now();
        if !run_once(kind, &app).await {
            // The store is closed: nothing more to do.
            return;
        }
    }
}

/// Runs one job now; returns false when the store is closed.
pub async fn run_once(kind: JobKind, app: &App) -> bool {
    let store = app.state.store.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        match kind {
            JobKind::Rollup => store.rollup(now).map(|r| {
                format!(
                    "{} minute buckets, {} hourly, {} daily",
                    r.minute_buckets, r.hourly_buckets, r.daily_buckets
                )
            }),
            JobKind::Retention => store.prune(now).map(|r| {
                format!(
                    "pruned {} raw points, {} minute, {} hourly, {} daily buckets",
                    r.raw_points, r.minute_buckets, r.hourly_buckets, r.daily_buckets
                )
            }),
            JobKind::Vacuum => store
                .vacuum()
                .map(|r| format!("{} bytes freed", r.reclaim.bytes_freed)),
        }
    })
    .await;
    let elapsed = started.elapsed();
    match result {
        Ok(Ok(summary)) => {
            app.state.jobs.record(kind, true);
            tracing::debug!(job = kind.name(), ?elapsed, "{summary}");
            true
        }
        Ok(Err(e)) if e.is_closed() => false,
        Ok(Err(e)) => {
            app.state.jobs.record(kind, false);
            tracing::warn!(
                job = kind.name(),
                ?elapsed,
                "job failed, retried next interval: {e}"
            );
            true
        }
        Err(join) => {
            // A panic inside the store: count it, keep the service up.
            app.state.jobs.record(kind, false);
            tracing::error!(job = kind.name(), "job task failed: {join}");
            true
        }
    }
}
