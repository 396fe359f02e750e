//! Writing a tier's stored points as JSON Lines or CSV, in the shapes
//! `ingest` reads back: a raw export ingested into an empty store gives the
//! same raw points. JSON Lines begins with a resource record
//! (`{"resource": {...}}`) for every resource with metadata, so the names,
//! nodes and tags come back too; CSV has no place for them.
//!
//! Values are written in the shortest form that parses back to the same
//! `f64` (serde_json's), so nothing is lost on the way round.

use crate::error::{Error, Result};
use crate::model::{HistoryPoint, SeriesKey, Tier};
use crate::store::Store;
use serde::Serialize;
use std::io::Write;

/// The two output formats of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One point object per line: the write API's fields, plus `min`, `max`
    /// and `count` for rolled-up tiers; resource records first.
    JsonLines,
    /// Header `resourceType,resourceId,metric,value,timestamp` (plus
    /// `min,max,count` for rolled-up tiers).
    Csv,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<ExportFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Ok(ExportFormat::JsonLines),
            "csv" => Ok(ExportFormat::Csv),
            _ => Err(format!("unknown format {s:?} (expected jsonl or csv)")),
        }
    }
}

/// `{"resource": {...}}`, its fields in their declared order.
#[derive(Serialize)]
struct ResourceLine<'a> {
    resource: &'a crate::store::Resource,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawLine<'a> {
    resource_type: &'a str,
    resource_id: &'a str,
    metric: &'a str,
    value: f64,
    timestamp: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BucketLine<'a> {
    resource_type: &'a str,
    resource_id: &'a str,
    metric: &'a str,
    value: f64,
    timestamp: i64,
    min: f64,
    max: f64,
    count: u64,
}

/// Writes every stored point of `tier` to `out`, series by series in key
/// order and oldest first. Returns the number of points written.
pub fn export(store: &Store, tier: Tier, format: ExportFormat, out: &mut dyn Write) -> Result<u64> {
    let mut written = 0u64;
    let io = |e: std::io::Error| Error::io("write the export", e);
    match format {
        ExportFormat::JsonLines => {
            for r in store.resources() {
                serde_json::to_writer(&mut *out, &ResourceLine { resource: &r })
                    .map_err(|e| io(e.into()))?;
                out.write_all(b"\n").map_err(io)?;
            }
            store.export(tier, |key, p| {
                if tier == Tier::Raw {
                    serde_json::to_writer(&mut *out, &raw_line(key, p))
                } else {
                    serde_json::to_writer(&mut *out, &bucket_line(key, p))
                }
                .map_err(|e| io(e.into()))?;
                out.write_all(b"\n").map_err(io)?;
                written += 1;
                Ok(())
            })?;
        }
        ExportFormat::Csv => {
            let mut csv = csv::WriterBuilder::new().from_writer(&mut *out);
            let mut header = crate::ingest::CSV_COLUMNS.to_vec();
            if tier != Tier::Raw {
                header.extend(["min", "max", "count"]);
            }
            csv.write_record(&header).map_err(|e| io(e.into()))?;
            store.export(tier, |key, p| {
                let mut row = vec![
                    key.resource_type.clone(),
                    key.resource_id.clone(),
                    key.metric.clone(),
                    float(p.value),
                    p.timestamp.to_string(),
                ];
                if tier != Tier::Raw {
                    row.extend([float(p.min), float(p.max), p.count.to_string()]);
                }
                csv.write_record(&row).map_err(|e| io(e.into()))?;
                written += 1;
                Ok(())
            })?;
            csv.flush().map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(written)
}

fn raw_line<'a>(key: &'a SeriesKey, p: &HistoryPoint) -> RawLine<'a> {
    RawLine {
        resource_type: &key.resource_type,
        resource_id: &key.resource_id,
        metric: &key.metric,
        value: p.value,
        timestamp: p.timestamp,
    }
}

fn bucket_line<'a>(key: &'a SeriesKey, p: &HistoryPoint) -> BucketLine<'a> {
    BucketLine {
        resource_type: &key.resource_type,
        resource_id: &key.resource_id,
        metric: &key.metric,
        value: p.value,
        timestamp: p.timestamp,
        min: p.min,
        max: p.max,
        count: p.count,
    }
}

/// The shortest text that parses back to the same `f64`.
fn float(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip() {
        for v in [0.1 + 0.2, 1e300, -5e-324, 12.5, 100.0, f64::MAX, 1.0 / 3.0] {
            assert_eq!(float(v).parse::<f64>().unwrap(), v, "{}", float(v));
        }
    }
}
