//! Background maintenance: rollup, retention (pruning) and vacuum, each on
//! its own task and its own configured interval.
//!
//! The interval is read from `store.config()` again at every check (once a
//! second at most), so a config PUT that shortens an interval applies at the
//! next check rather than after the old, longer wait. A failing job is
//! logged and counted (the store also records it in stats `lastError`) and
//! simply runs again at its next interval: it never stops the service.
//!
//! Late points (written older than the raw retention, e.g. a backfill over
//! HTTP) are invisible to ranges answered from the rolled-up tiers until a
//! rollup folds them in, which would be up to `rollup_interval` (5 min)
//! away. So a watcher looks at their count about once a second (at most
//! once a flush interval) and runs the rollup as soon as any are waiting:
//! a batch is folded within a flush interval of being flushed.

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
    /// Late points waiting to be folded, as the watcher last saw them.
    late: AtomicU64,
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

    /// Late points waiting to be folded into their buckets (stats
    /// `lateCount`), as of the watcher's last look (about a second ago).
    pub fn late_waiting(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
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

/// Starts one task per job kind and the late-point watcher; they end when
/// `stop` turns true.
pub fn spawn(app: App, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = JobKind::ALL
        .into_iter()
        .map(|kind| tokio::spawn(job_loop(kind, app.clone(), stop.clone())))
        .collect();
    tasks.push(tokio::spawn(late_loop(app, stop)));
    tasks
}

/// Shortest pause between two looks at the late points.
const LATE_MIN_PERIOD: Duration = Duration::from_millis(250);

/// Longest wait before folding again after a failed fold.
const LATE_MAX_BACKOFF: Duration = Duration::from_secs(60);

async fn late_loop(app: App, mut stop: watch::Receiver<bool>) {
    // After a failure (a full disk, say) the fold is retried with a growing
    // pause, so the log gets a line a minute, not one a second.
    let mut backoff = Duration::ZERO;
    let mut retry_at = Instant::now();
    loop {
        let period = app
            .state
            .store
            .config()
            .flush_interval
            .clamp(LATE_MIN_PERIOD, RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match late_count(&app).await {
            0 => {}
            _ if Instant::now() < retry_at => {}
            _ => {
                match fold_late(&app).await {
                    None => return,
                    Some(true) => backoff = Duration::ZERO,
                    Some(false) => {
                        backoff = (backoff * 2).clamp(RECHECK, LATE_MAX_BACKOFF);
                        retry_at = Instant::now() + backoff;
                    }
                }
                late_count(&app).await;
            }
        }
    }
}

/// Reads (and publishes) the late points waiting. From memory, not
/// `stats()`: that also reads the file's free pages and oldest bucket, and
/// once a second it kept an idle service at ~2 % of a core.
async fn late_count(app: &App) -> u64 {
    let store = app.state.store.clone();
    // The count sits behind the state lock, which a commit holds briefly.
    let n = tokio::task::spawn_blocking(move || store.late_count())
        .await
        .unwrap_or(0);
    app.state.jobs.late.store(n, Ordering::Relaxed);
    n
}

/// One rollup for late points: whether it worked, None once the store is
/// closed.
async fn fold_late(app: &App) -> Option<bool> {
    let store = app.state.store.clone();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || store.rollup(now_ms())).await;
    match result {
        Ok(Ok(r)) => {
            app.state.jobs.record(JobKind::Rollup, true);
            tracing::info!(
                elapsed = ?started.elapsed(),
                "folded {} late point(s) into their buckets{}",
                r.late_points,
                if r.discarded_points > 0 {
                    format!(
                        "; {} older than every retention were discarded",
                        r.discarded_points
                    )
                } else {
                    String::new()
                }
            );
            Some(true)
        }
        Ok(Err(e)) if e.is_closed() => None,
        Ok(Err(e)) => {
            app.state.jobs.record(JobKind::Rollup, false);
            tracing::warn!("folding late points failed, retried later: {e}");
            Some(false)
        }
        Err(join) => {
            app.state.jobs.record(JobKind::Rollup, false);
            tracing::error!("late-point rollup task failed: {join}");
            Some(false)
        }
    }
}

async fn last_run(kind: JobKind, app: &App) -> Instant {
    let store = app.state.store.clone();
    let stats = tokio::task::spawn_blocking(move || store.stats()).await;
    let last_ms = match stats {
        Ok(Ok(s)) => match kind {
            JobKind::Rollup => s.last_rollup,
            JobKind::Retention => s.last_retention,
            JobKind::Vacuum => s.last_vacuum,
        },
        _ => 0,
    };
    let now = Instant::now();
    if last_ms <= 0 {
        return now;
    }
    let age = Duration::from_millis(u64::try_from(now_ms() - last_ms).unwrap_or(0));
    now.checked_sub(age).unwrap_or(now)
}

async fn job_loop(kind: JobKind, app: App, mut stop: watch::Receiver<bool>) {
    // Due one interval after the job last ran, as the store remembers it
    // across restarts (so a service restarted daily still vacuums weekly);
    // a job that never ran is due one interval after start.
    let mut last = last_run(kind, &app).await;
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
                let [minute, hourly, daily] = r.expired_buckets;
                format!(
                    "{} minute buckets, {} hourly, {} daily; pruned {minute} minute, {hourly} hourly, {daily} daily buckets past retention",
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
