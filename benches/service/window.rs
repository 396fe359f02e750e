//! The window: both processes and their files looked at once a second,
//! and the counters both publish, read before and after it.

use crate::files::{Growth, beside, stamp};
use crate::procfs::ProcSample;
use crate::report::per_day;
use crate::running::now_ms;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One look, once a second over the window.
pub struct Look {
    /// Seconds since the window started.
    pub t: f64,
    /// Wall clock, ms.
    pub wall: i64,
    pub service: ProcSample,
    pub prometheus: Option<ProcSample>,
    /// The database, its WAL or its shared-memory index changed since the
    /// look before.
    pub db_changed: bool,
}

/// What the looks over the window found.
pub struct Window {
    pub looks: Vec<Look>,
    pub journal: Growth,
    pub prom_wal: Growth,
    pub prom_chunks: Growth,
}

impl Window {
    pub fn secs(&self) -> f64 {
        self.looks.last().unwrap().t - self.looks[0].t
    }

    /// How much `get` grew over the window, per day.
    pub fn per_day(&self, get: impl Fn(&Look) -> Option<f64>) -> Option<f64> {
        let (a, b) = (get(&self.looks[0])?, get(self.looks.last().unwrap())?);
        Some(per_day(b - a, self.secs()))
    }
}

/// Looks once a second until `done`, then once more.
pub fn watch(
    db: PathBuf,
    service: u32,
    prom: Option<(u32, PathBuf)>,
    done: Arc<AtomicBool>,
) -> Window {
    let journal_dir = beside(&db, "-raw");
    let watched = [db.clone(), beside(&db, "-wal"), beside(&db, "-shm")];
    let mut w = Window {
        looks: Vec::new(),
        journal: Growth::default(),
        prom_wal: Growth::default(),
        prom_chunks: Growth::default(),
    };
    let started = Instant::now();
    let mut stamps_before = watched.iter().map(|p| stamp(p)).collect::<Vec<_>>();
    loop {
        let last = done.load(Ordering::Relaxed);
        let stamps = watched.iter().map(|p| stamp(p)).collect::<Vec<_>>();
        w.looks.push(Look {
            t: started.elapsed().as_secs_f64(),
            wall: now_ms(),
            service: ProcSample::read(service).expect("the service is running"),
            prometheus: prom.as_ref().and_then(|(pid, _)| ProcSample::read(*pid)),
            db_changed: stamps != stamps_before,
        });
        stamps_before = stamps;
        w.journal.look(&journal_dir);
        if let Some((_, data)) = &prom {
            w.prom_wal.look(&data.join("wal"));
            w.prom_chunks.look(&data.join("chunks_head"));
        }
        if last {
            return w;
        }
        let next = Duration::from_secs_f64(w.looks.last().unwrap().t.floor() + 1.0);
        std::thread::sleep(next.saturating_sub(started.elapsed()));
    }
}

/// Counters both systems publish, read over HTTP before the first look
/// and after the last (so that reading them is not in the window).
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    pub rollups: f64,
    pub retentions: f64,
    pub hourly_buckets: f64,
    pub prom_samples: f64,
    pub prom_compactions: f64,
}

impl Counters {
    pub async fn read(client: &reqwest::Client, service: &str, prom: Option<&str>) -> Counters {
        let metrics = format!("{service}/metrics");
        let stats = get_json(client, &format!("{service}/api/metrics-store/stats")).await;
        let prom_metrics = prom.map(|p| format!("{p}/metrics"));
        let prom = |name: &'static str| {
            let url = prom_metrics.clone();
            async move {
                match url {
                    Some(u) => family_sum(client, &u, name).await,
                    None => f64::NAN,
                }
            }
        };
        Counters {
            rollups: family_sum(client, &metrics, "pulse_metrics_job_rollup_runs_total").await,
            retentions: family_sum(client, &metrics, "pulse_metrics_job_retention_runs_total")
                .await,
            hourly_buckets: stats["hourlyCount"].as_f64().unwrap_or(f64::NAN),
            prom_samples: prom("prometheus_tsdb_head_samples_appended_total").await,
            prom_compactions: prom("prometheus_tsdb_compactions_total").await,
        }
    }
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    match client.get(url).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// The sum of a `/metrics` page's lines of family `name` (over labels).
pub async fn family_sum(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let Ok(r) = client.get(url).send().await else {
        return f64::NAN;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let family = series.split('{').next()?;
            (family == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
