//! `check` and `salvage`: what an operator runs when the store refuses to
//! start over damaged content (its message points here).

use super::{CliResult, Failure, print_json};
use pulse_metrics::store::check::{Damage, check as check_db};
use pulse_metrics::store::salvage::salvage as salvage_db;
use std::path::Path;

fn line(d: &Damage) -> String {
    let mut s = format!("{} {}: {}", d.table, d.part, d.problem);
    if !d.series.is_empty() {
        s.push_str(&format!(" [series: {}]", d.series.join(", ")));
    }
    s
}

/// Prints the report; exit 1 when anything is damaged.
pub(crate) fn check(db: &Path) -> CliResult {
    let report = check_db(db)?;
    for message in &report.integrity {
        say!("damaged: sqlite: {message}");
    }
    for d in &report.damage {
        say!("damaged: {}", line(d));
    }
    for note in &report.notes {
        say!("note: {note}");
    }
    if report.ok {
        say!(
            "ok: {} series, {} journal segments ({} raw points) and {} chunks checked in {}",
            report.series,
            report.journal_segments,
            report.raw_points,
            report.chunks,
            db.display()
        );
    } else {
        say!(
            "{} is damaged; `pulse-metrics --db {} salvage NEW.db` copies everything readable into a new file",
            db.display(),
            db.display()
        );
    }
    print_json(&report)?;
    if report.ok {
        Ok(())
    } else {
        Err(Failure::Exit(1))
    }
}

/// Copies what is readable into `out`; lists what was left behind.
pub(crate) fn salvage(db: &Path, out: &Path) -> CliResult {
    let report = salvage_db(db, out)?;
    for d in &report.lost {
        say!("lost: {}", line(d));
    }
    say!(
        "copied {} series, {} journal segments ({} raw points) and {} chunks ({} buckets) into {}; {} damaged part(s) left behind",
        report.series,
        report.journal_segments,
        report.raw_points,
        report.chunks,
        report.buckets,
        out.display(),
        report.lost.len()
    );
    print_json(&report)
}
