//! The figures of each system: table rows, where the bytes go, and one
//! JSON object of everything.

use crate::files::beside;
use crate::procfs::ProcSample;
use crate::prometheus::{self, Blocks, HeadChunks};
use crate::split::Split;
use crate::window::{Counters, Window};
use crate::{DAY, MB, RETENTIONS_PER_DAY};
use std::collections::BTreeMap;
use std::path::Path;

pub fn per_day(bytes: f64, secs: f64) -> f64 {
    bytes * DAY / secs
}

pub fn mb(b: f64) -> String {
    format!("{:.1} MB", b / MB)
}

pub fn clock(wall_ms: i64) -> String {
    let s = wall_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

#[derive(Default)]
pub struct Figures(pub BTreeMap<String, f64>);

impl Figures {
    pub fn set(&mut self, name: &str, value: f64) -> f64 {
        self.0.insert(name.to_string(), value);
        value
    }
}

/// One system's figures: table rows, notes on where the bytes go, and
/// its write_bytes a day in the window and over a whole day.
pub struct Summary {
    pub rows: Vec<String>,
    pub notes: Vec<String>,
    pub window: f64,
    pub day: f64,
}

pub fn row(label: &str, write_bytes: f64, rest: Option<(f64, f64, &ProcSample)>) -> String {
    let mut s = format!("{label:<34} {:>16}", mb(write_bytes));
    if let Some((wchar, cpu, p)) = rest {
        s += &format!(
            " {:>12} {:>10.0} {:>20}",
            mb(wchar),
            cpu,
            format!(
                "{} / {}",
                mb(p.rss_bytes as f64),
                mb(p.peak_rss_bytes as f64)
            )
        );
    }
    s
}

pub fn service_summary(
    f: &mut Figures,
    w: &Window,
    polls: u64,
    series: usize,
    retention: f64,
    stats: &serde_json::Value,
    db: &Path,
) -> Summary {
    let secs = w.secs();
    let end = &w.looks.last().unwrap().service;
    let io = |get: fn(&ProcSample) -> u64| w.per_day(|l| Some(get(&l.service) as f64)).unwrap();
    let wb = f.set("pulse_write_bytes_per_day", io(|p| p.write_bytes));
    let wc = f.set("pulse_wchar_per_day", io(|p| p.wchar));
    let cpu = f.set(
        "pulse_cpu_seconds_per_day",
        w.per_day(|l| Some(l.service.cpu_secs)).unwrap(),
    );
    f.set(
        "pulse_cancelled_write_bytes_per_day",
        io(|p| p.cancelled_write_bytes),
    );
    f.set("pulse_rss_bytes", end.rss_bytes as f64);
    f.set("pulse_peak_rss_bytes", end.peak_rss_bytes as f64);

    let split = Split::of(&w.looks);
    let steady = f.set(
        "pulse_write_bytes_per_day_steady",
        split.steady_write_bytes_rate() * DAY,
    );
    let close = split.hour_close();
    let others = split.other_rate(secs) * DAY;
    let day = f.set(
        "pulse_write_bytes_per_day_model",
        steady + close.unwrap_or(0.0) * 24.0 + others + retention * RETENTIONS_PER_DAY,
    );
    f.set("pulse_retention_pass_write_bytes", retention);
    if let Some(c) = close {
        f.set("pulse_hour_close_write_bytes", c);
    }
    let journal = f.set(
        "pulse_journal_appended_per_day",
        per_day(w.journal.appended() as f64, secs),
    );
    let size = |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64);
    let (db_bytes, wal_bytes) = (
        f.set("pulse_db_bytes", size(db)),
        f.set("pulse_wal_bytes", size(&beside(db, "-wal"))),
    );
    let journal_bytes = f.set(
        "pulse_journal_bytes",
        stats["journalBytes"].as_f64().unwrap_or(f64::NAN),
    );

    let mut notes = vec![
        format!(
            "journal appends: {}/day of records, {:.2} bytes a point; {} segment(s) started in the window",
            mb(journal),
            w.journal.appended() as f64 / (polls.max(1) as f64 * series as f64),
            w.journal.created()
        ),
        format!(
            "the {:.0} s without a database write (journal appends, rollups that closed no hour): write_bytes {}/day, wchar {}/day",
            split.steady_secs,
            mb(steady),
            mb(split.steady_wchar_rate() * DAY)
        ),
    ];
    for e in &split.db_writes {
        notes.push(format!(
            "database write at {} ({:.0} s{}): write_bytes {:.0} KB, wchar {:.0} KB",
            clock(e.wall),
            e.secs,
            if e.hour_close { ", an hour closed" } else { "" },
            e.write_bytes / 1e3,
            e.wchar / 1e3
        ));
    }
    notes.push(format!(
        "one retention pass as the service runs it (with its WAL checkpoint), measured after the window: write_bytes {:.0} KB, {} a day at one an hour",
        retention / 1e3,
        mb(retention * RETENTIONS_PER_DAY)
    ));
    notes.push(match close {
        Some(c) => format!(
            "a day: steady {} + 24 hour closings of {:.0} KB + 24 retention passes + other database writes {} = {}",
            mb(steady),
            c / 1e3,
            mb(others),
            mb(day)
        ),
        None => format!(
            "a day: steady {} + 24 retention passes + other database writes {} = {}; NOT counting the 24 hour closings (none in this window: --cross-hour)",
            mb(steady),
            mb(others),
            mb(day)
        ),
    });
    notes.push(format!(
        "files at the end: database {}, WAL {}, journal {} ({} segments)",
        mb(db_bytes),
        mb(wal_bytes),
        mb(journal_bytes),
        stats["journalSegments"]
    ));
    Summary {
        rows: vec![
            row("pulse-metrics, in the window", wb, Some((wc, cpu, end))),
            row(
                if close.is_some() {
                    "pulse-metrics, a day"
                } else {
                    "pulse-metrics, a day (no hour close)"
                },
                day,
                None,
            ),
        ],
        notes,
        window: wb,
        day,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn prometheus_summary(
    f: &mut Figures,
    w: &Window,
    before: Counters,
    after: Counters,
    data: &Path,
    block: Option<Blocks>,
    scrapes: (u64, u64),
    series: usize,
) -> Summary {
    let secs = w.secs();
    let end = w.looks.last().unwrap().prometheus.unwrap_or_default();
    let io = |get: fn(&ProcSample) -> u64| {
        w.per_day(|l| l.prometheus.as_ref().map(|p| get(p) as f64))
            .unwrap_or(f64::NAN)
    };
    let wb = f.set("prometheus_write_bytes_per_day", io(|p| p.write_bytes));
    let wc = f.set("prometheus_wchar_per_day", io(|p| p.wchar));
    let cpu = f.set(
        "prometheus_cpu_seconds_per_day",
        w.per_day(|l| l.prometheus.map(|p| p.cpu_secs))
            .unwrap_or(f64::NAN),
    );
    f.set("prometheus_rss_bytes", end.rss_bytes as f64);
    f.set("prometheus_peak_rss_bytes", end.peak_rss_bytes as f64);
    let samples_day = f.set(
        "prometheus_samples_per_day",
        per_day(after.prom_samples - before.prom_samples, secs),
    );
    let head = prometheus::head_chunks(data);
    let mut notes = vec![
        format!(
            "WAL appends {}/day; block compactions in the window: {}",
            mb(per_day(w.prom_wal.appended() as f64, secs)),
            after.prom_compactions - before.prom_compactions
        ),
        format!(
            "{samples_day:.0} samples a day ({} series and the 5 Prometheus adds per target); {} scrapes in the window, {} without a new poll",
            series, scrapes.0, scrapes.1
        ),
    ];
    // Full head chunks reach chunks_head through a write buffer, in bursts
    // a window may miss or catch: counted instead as every sample written
    // there once, at what a sample weighs in the head's chunks so far.
    let head_per_sample = if head.samples > 0 {
        head.bytes as f64 / head.samples as f64
    } else {
        block.map_or(0.0, |b| b.chunk_bytes as f64 / b.samples as f64)
    };
    let head_seen = per_day(w.prom_chunks.appended() as f64, secs);
    let head_day = f.set(
        "prometheus_head_chunk_bytes_per_day",
        samples_day * head_per_sample,
    );
    notes.push(format!(
        "head chunks: {} chunks of {} samples so far, {head_per_sample:.2} bytes a sample; they leave a write buffer in bursts (the window saw {}/day): counted as every sample written once, {}/day",
        head.chunks,
        head.samples,
        mb(head_seen),
        mb(head_day)
    ));
    let compactions = compactions(f, samples_day, head, block);
    match &compactions {
        Some((_, note)) => notes.push(note.clone()),
        None => notes.push("no block or head chunk to count its compactions from".into()),
    }
    let day = (wb - head_seen).max(0.0) + head_day + compactions.map_or(0.0, |(c, _)| c);
    f.set("prometheus_write_bytes_per_day_with_compactions", day);
    Summary {
        rows: vec![
            row("Prometheus, in the window", wb, Some((wc, cpu, &end))),
            row("Prometheus, a day", day, None),
        ],
        notes,
        window: wb,
        day,
    }
}

/// Prometheus's block compactions per day, from what a sample weighs in a
/// block: each sample is written again at every level of
/// `block_ranges_hours` (2 h, 6 h, 18 h with the default retention). The
/// index is counted as a 2 h block's for every 2 h at every level (an
/// upper bound: a longer block's index is less than the sum of its
/// parts'). From promtool's block of the same values when promtool is
/// installed, else from the head's own chunks (whose headers are a little
/// larger than a block's) without the index.
pub fn compactions(
    f: &mut Figures,
    samples_day: f64,
    head: HeadChunks,
    block: Option<Blocks>,
) -> Option<(f64, String)> {
    let levels = prometheus::block_ranges_hours(prometheus::DEFAULT_RETENTION_HOURS);
    let names = levels
        .iter()
        .map(|h| format!("{h}h"))
        .collect::<Vec<_>>()
        .join(", ");
    let (per_sample, index, source) = match block {
        Some(b) => {
            let per_sample = b.chunk_bytes as f64 / b.samples as f64;
            let index = b.other_bytes as f64 / b.blocks as f64;
            (
                per_sample,
                index,
                format!(
                    "promtool's 2h block of the same values: {per_sample:.2} bytes a sample in chunks, {:.0} KB of index and meta",
                    index / 1e3
                ),
            )
        }
        None if head.samples > 0 => (
            head.bytes as f64 / head.samples as f64,
            0.0,
            "its head chunks (promtool not installed; index not counted)".to_string(),
        ),
        None => return None,
    };
    let per_level = samples_day * per_sample + 12.0 * index;
    let total = per_level * levels.len() as f64;
    f.set("prometheus_block_bytes_per_sample", per_sample);
    f.set("prometheus_compaction_bytes_per_day", total);
    Some((
        total,
        format!(
            "block compactions, outside the window: {} levels ({names}) x {} a day = {}; from {source}",
            levels.len(),
            mb(per_level),
            mb(total)
        ),
    ))
}
