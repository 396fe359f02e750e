//! Reading points from JSON Lines and CSV input one line at a time, so a
//! file of any size is checked and stored with bounded memory, and writing
//! them into a store without ever dropping a batch.
//!
//! Every bad line is reported with its number and the same per-field reason
//! the write API gives (`value: must be a finite number, got NaN`).

use crate::error::{Error, Result};
use crate::model::{Point, parse_timestamp};
use crate::store::{Resource, ResourceMeta, Store, point_from_json};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, ErrorKind, Read};
use std::path::Path;

/// The two input formats of `ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One write-API point object per line.
    JsonLines,
    /// Header `resourceType,resourceId,metric,value,timestamp`, one point per row.
    Csv,
}

impl InputFormat {
    /// `.csv` files are CSV, anything else JSON Lines (as the contract says).
    pub fn for_path(path: &Path) -> InputFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => InputFormat::Csv,
            _ => InputFormat::JsonLines,
        }
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<InputFormat, String> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Ok(InputFormat::JsonLines),
            "csv" => Ok(InputFormat::Csv),
            _ => Err(format!("unknown format {s:?} (expected jsonl or csv)")),
        }
    }
}

/// One line that is not a valid point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: u64,
    /// What is wrong, naming the field (`timestamp: ...`).
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Longest accepted line. A point is a few hundred bytes at most; anything
/// longer is garbage, and capping it keeps memory bounded on such input.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The CSV columns, in the order `export` writes them.
pub const CSV_COLUMNS: [&str; 5] = ["resourceType", "resourceId", "metric", "value", "timestamp"];
/// Columns a CSV header may add: the resource's name and node (an empty
/// field gives neither).
pub const CSV_OPTIONAL_COLUMNS: [&str; 2] = ["name", "node"];

/// Streams points out of JSON Lines or CSV input.
///
/// Each item is `Ok(Ok(point))`, `Ok(Err(bad line))`, or `Err(error)` for
/// input that cannot be read at all (an I/O failure, a missing CSV header),
/// after which the reader yields nothing more.
///
/// Resource metadata is gathered on the side ([`PointReader::resources`]):
/// the `name` and `node` a point may carry, and JSON Lines resource records
/// `{"resource": {"resourceType", "resourceId", "name", ...}}`, which are
/// not points and are not yielded (a bad one is a bad line).
///
/// ```
/// use pulse_metrics::ingest::{InputFormat, PointReader};
/// let input = "resourceType,resourceId,metric,value,timestamp\n\
///              vm,pve1:101,cpu,12.5,1700000000000\n\
///              vm,pve1:101,cpu,NaN,1700000005000\n";
/// let items: Vec<_> = PointReader::new(input.as_bytes(), InputFormat::Csv)
///     .collect::<Result<_, _>>()?;
/// assert_eq!(items[0].as_ref().unwrap().value, 12.5);
/// assert_eq!(items[1].as_ref().unwrap_err().to_string(), "line 3: value: must be a finite number, got NaN");
/// # Ok::<(), pulse_metrics::Error>(())
/// ```
pub struct PointReader<R: BufRead> {
    reader: R,
    format: InputFormat,
    /// Number of the line in `buf`.
    line: u64,
    buf: Vec<u8>,
    /// CSV: position of each of `CSV_COLUMNS` then `CSV_OPTIONAL_COLUMNS`
    /// (`usize::MAX` when absent) in the header, once read, and its width.
    columns: Option<([usize; 7], usize)>,
    done: bool,
    /// Metadata read so far, the later update of a resource applied over
    /// the earlier (one entry per resource, so memory stays bounded).
    described: BTreeMap<(String, String), ResourceMeta>,
}

impl<R: BufRead> PointReader<R> {
    pub fn new(reader: R, format: InputFormat) -> PointReader<R> {
        PointReader {
            reader,
            format,
            line: 0,
            buf: Vec::new(),
            columns: None,
            done: false,
            described: BTreeMap::new(),
        }
    }

    /// The metadata read so far, one update per resource.
    pub fn resources(&self) -> Vec<Resource> {
        self.described
            .iter()
            .map(|((t, id), meta)| Resource::new(t, id, meta.clone()))
            .collect()
    }

    fn describe(&mut self, r: Resource) {
        let meta = self
            .described
            .entry((r.resource_type, r.resource_id))
            .or_default();
        *meta = merge_update(meta, &r.meta);
    }

    /// CSV is read line by line too: a valid point never spans lines (no
    /// field may hold a line break), and this keeps line numbers exact.
    fn read_next(&mut self) -> Result<Option<std::result::Result<Point, LineError>>> {
        loop {
            let Some(too_long) = read_line_capped(&mut self.reader, &mut self.buf, MAX_LINE_BYTES)
                .map_err(|e| Error::io("read input", e))?
            else {
                return Ok(None);
            };
            self.line += 1;
            let line = self.line;
            if line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
            }
            let bad = |reason: String| Ok(Some(Err(LineError { line, reason })));
            if too_long {
                return bad(format!("longer than {MAX_LINE_BYTES} bytes"));
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.format {
                InputFormat::JsonLines => match json_record(&self.buf) {
                    Ok(Record::Point(p, r)) => {
                        if let Some(r) = r {
                            self.describe(r);
                        }
                        return Ok(Some(Ok(p)));
                    }
                    Ok(Record::Resource(r)) => self.describe(r),
                    Err(reason) => return bad(reason),
                },
                InputFormat::Csv => {
                    let Ok(text) = std::str::from_utf8(&self.buf) else {
                        if self.columns.is_none() {
                            return Err(Error::invalid_input(format!(
                                "line {line}: the CSV header is not valid UTF-8"
                            )));
                        }
                        return bad("not valid UTF-8".into());
                    };
                    let fields = match split_csv_line(text) {
                        Ok(f) => f,
                        Err(reason) if self.columns.is_some() => return bad(reason),
                        Err(reason) => {
                            return Err(Error::invalid_input(format!(
                                "line {line}: the CSV header is not valid: {reason}"
                            )));
                        }
                    };
                    match self.columns {
                        None => self.columns = Some(csv_header(&fields, line)?),
                        Some((cols, width)) => match csv_point(&fields, cols, width) {
                            Ok((p, r)) => {
                                if let Some(r) = r {
                                    self.describe(r);
                                }
                                return Ok(Some(Ok(p)));
                            }
                            Err(reason) => return bad(reason),
                        },
                    }
                }
            }
        }
    }
}

/// Splits one CSV line (RFC 4180: `,` separated, `"` quoted with `""` for a
/// quote); spaces around fields are trimmed.
fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "unexpected {c:?} after a quoted field (a quote inside a field is written \"\")"
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim_end().to_string());
        }
    }
}

impl<R: BufRead> Iterator for PointReader<R> {
    type Item = Result<std::result::Result<Point, LineError>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_next() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Updates to an update: what `later` gives replaces, an empty value
/// still clears (it is passed on to the store as given).
fn merge_update(earlier: &ResourceMeta, later: &ResourceMeta) -> ResourceMeta {
    ResourceMeta {
        name: later.name.clone().or_else(|| earlier.name.clone()),
        node: later.node.clone().or_else(|| earlier.node.clone()),
        instance: later.instance.clone().or_else(|| earlier.instance.clone()),
        status: later.status.clone().or_else(|| earlier.status.clone()),
        template: later.template.or(earlier.template),
        tags: later.tags.clone().or_else(|| earlier.tags.clone()),
    }
}

/// One line of JSON Lines input.
enum Record {
    /// A point, and the metadata update its `name`/`node` make.
    Point(Point, Option<Resource>),
    /// `{"resource": {...}}`
    Resource(Resource),
}

fn json_record(line: &[u8]) -> std::result::Result<Record, String> {
    let value = json_value(line)?;
    if let Some(obj) = value.as_object()
        && obj.len() == 1
        && let Some(r) = obj.get("resource")
    {
        return Resource::from_json(r)
            .map(Record::Resource)
            .map_err(|e| format!("resource: {e}"));
    }
    point_from_json(&value).map(|(p, r)| Record::Point(p, r))
}

#[cfg(test)]
fn json_point(line: &[u8]) -> std::result::Result<Point, String> {
    Point::from_json(&json_value(line)?)
}

fn json_value(line: &[u8]) -> std::result::Result<serde_json::Value, String> {
    // serde_json's default float parser may be one bit off; `value` is read
    // from its source text with Rust's exact parser instead, so an export
    // ingested again gives back the very same numbers.
    if let Ok(fields) = serde_json::from_slice::<
        std::collections::BTreeMap<String, &serde_json::value::RawValue>,
    >(line)
    {
        let mut obj = serde_json::Map::new();
        for (k, raw) in fields {
            let exact = (k == "value")
                .then(|| raw.get().parse::<f64>().ok())
                .flatten()
                .and_then(serde_json::Number::from_f64);
            let v = match exact {
                Some(n) => serde_json::Value::Number(n),
                None => serde_json::from_str(raw.get())
                    .map_err(|_| format!("{k}: must be a finite number, got {}", raw.get()))?,
            };
            obj.insert(k, v);
        }
        return Ok(serde_json::Value::Object(obj));
    }
    serde_json::from_slice(line).map_err(|e| {
        let text = e.to_string();
        // serde_json says "at line 1 column N": the line is ours already.
        let what = text.split(" at line ").next().unwrap_or(&text);
        format!("not valid JSON: {what} (column {})", e.column())
    })
}

fn csv_header(record: &[String], line: u64) -> Result<([usize; 7], usize)> {
    let expected = CSV_COLUMNS.join(",");
    let mut cols = [usize::MAX; 7];
    for (i, name) in record.iter().enumerate() {
        let name = name.as_str();
        let known = CSV_COLUMNS.iter().chain(&CSV_OPTIONAL_COLUMNS);
        match known.clone().position(|c| *c == name) {
            Some(j) if cols[j] == usize::MAX => cols[j] = i,
            Some(_) => {
                return Err(Error::invalid_input(format!(
                    "line {line}: the CSV header names column `{name}` twice"
                )));
            }
            None => {
                let looks_like_data = CSV_COLUMNS.iter().all(|c| !record.iter().any(|f| f == c));
                let hint = if looks_like_data {
                    format!("the first line must be the header {expected}")
                } else {
                    format!(
                        "unknown column `{name}` in the CSV header (expected {expected}, and optionally {})",
                        CSV_OPTIONAL_COLUMNS.join(",")
                    )
                };
                return Err(Error::invalid_input(format!("line {line}: {hint}")));
            }
        }
    }
    if let Some(j) = cols[..5].iter().position(|&c| c == usize::MAX) {
        return Err(Error::invalid_input(format!(
            "line {line}: the CSV header lacks column `{}` (expected {expected})",
            CSV_COLUMNS[j]
        )));
    }
    Ok((cols, record.len()))
}

fn csv_point(
    record: &[String],
    cols: [usize; 7],
    width: usize,
) -> std::result::Result<(Point, Option<Resource>), String> {
    if record.len() != width {
        return Err(format!(
            "expected {width} fields as in the header, got {}",
            record.len()
        ));
    }
    let field = |j: usize| record.get(cols[j]).map_or("", String::as_str);
    let value_text = field(3);
    if value_text.is_empty() {
        return Err("value: missing".into());
    }
    let value = value_text
        .parse::<f64>()
        .map_err(|_| format!("value: must be a finite number, got {value_text:?}"))?;
    let ts_text = field(4);
    if ts_text.is_empty() {
        return Err("timestamp: missing".into());
    }
    let timestamp = parse_timestamp(ts_text).map_err(|e| format!("timestamp: {e}"))?;
    let point = Point {
        resource_type: field(0).to_string(),
        resource_id: field(1).to_string(),
        metric: field(2).to_string(),
        value,
        timestamp,
    };
    point.validate()?;
    let text = |j: usize| Some(field(j)).filter(|s| !s.is_empty()).map(str::to_string);
    let meta = ResourceMeta {
        name: text(5),
        node: text(6),
        ..ResourceMeta::default()
    };
    if meta.is_empty() {
        return Ok((point, None));
    }
    meta.validate()?;
    let r = Resource::new(&point.resource_type, &point.resource_id, meta);
    Ok((point, Some(r)))
}

/// Reads one line into `buf` without its line ending, keeping at most `cap`
/// bytes. `None` at the end of input; `Some(true)` when the line was longer
/// than `cap` (its excess was skipped).
fn read_line_capped<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        any = true;
        let (chunk, used, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if buf.len() + chunk.len() > cap {
            too_long = true;
        } else {
            buf.extend_from_slice(chunk);
        }
        r.consume(used);
        if end {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(too_long))
}

/// Points per `write_batch` call.
pub const BATCH: usize = 10_000;

/// Writes `points` in batches, waiting for the writer (a flush) when its
/// queue is full instead of dropping anything. Points must be valid: a bad
/// one refuses its batch, as `write_batch` does. Returns the points written.
pub fn write_all(store: &Store, points: &[Point]) -> Result<usize> {
    let mut written = 0;
    for batch in points.chunks(BATCH) {
        let mut attempts = 0;
        loop {
            match store.write_batch(batch) {
                Ok(n) => {
                    written += n;
                    break;
                }
                Err(e) if e.is_overloaded() && attempts < 100 => {
                    attempts += 1;
                    store.flush()?;
                    if attempts > 1 {
                        std::thread::sleep(std::time::Duration::from_millis(10 * attempts));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}

/// Raw points a bulk load may add to what the store holds in memory (~24 B
/// each, so ~12 MB) before it folds them into the rolled-up tiers; folding
/// needs memory in proportion too.
pub const RAW_HELD_BEFORE_ROLLUP: u64 = 500_000;

/// Keeps a bulk load's memory bounded. The store holds raw points in memory
/// until a rollup folds them (dropping those past the raw retention), which
/// the service does every few minutes but a one-shot load of a large file of
/// old points never would. Called after each flush: once `limit` more raw
/// points are held than after the last fold, it runs the rollup and the
/// retention pass the service would run now (so minute rows of old points
/// do not pile up in the file either).
#[derive(Debug)]
pub struct RawBound {
    limit: u64,
    /// Raw points held after the last fold (0 before the first).
    held: u64,
    /// Rollups run so far.
    pub rollups: u64,
}

impl RawBound {
    pub fn new(limit: u64) -> RawBound {
        RawBound {
            limit,
            held: 0,
            rollups: 0,
        }
    }

    /// Folds when the load has added `limit` raw points since the last
    /// fold; returns whether it did.
    pub fn check(&mut self, store: &Store, now_ms: i64) -> Result<bool> {
        let held_now = |store: &Store| store.stats().map(|s| s.raw_count + s.late_count);
        if held_now(store)? < self.held.saturating_add(self.limit) {
            return Ok(false);
        }
        self.fold(store, now_ms)?;
        self.held = held_now(store)?;
        Ok(true)
    }

    /// Folds everything written so far into the tiers as of `now_ms` (the
    /// rollup and retention pass the service would run): how a load ends,
    /// so all of it is queryable at once, at every range. Returns what the
    /// retention pass did (its `floors` say what no tier keeps).
    pub fn fold(&mut self, store: &Store, now_ms: i64) -> Result<crate::store::PruneReport> {
        store.rollup(now_ms)?;
        let pruned = store.prune(now_ms)?;
        self.rollups += 1;
        Ok(pruned)
    }
}

/// Copies everything read through it into `copy`, so input that can be read
/// only once (stdin) can be read again from the copy.
pub struct Tee<R, W> {
    reader: R,
    copy: W,
}

impl<R: Read, W: std::io::Write> Tee<R, W> {
    pub fn new(reader: R, copy: W) -> Tee<R, W> {
        Tee { reader, copy }
    }

    pub fn into_copy(self) -> W {
        self.copy
    }
}

impl<R: Read, W: std::io::Write> Read for Tee<R, W> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.reader.read(out)?;
        self.copy.write_all(&out[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A load of old points folds as it goes: what the store holds stays
    /// under the bound, and every point ends up counted in its bucket.
    #[test]
    fn a_bulk_load_of_old_points_is_folded_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(crate::MetricsConfig {
            database_path: dir.path().join("m.db"),
            ..Default::default()
        })
        .unwrap();
        let now = 1_800_000_000_000i64;
        let start = now - 20 * 86_400_000;
        let limit = 5_000;
        let mut bound = RawBound::new(limit);
        let mut written = 0u64;
        let mut most_held = 0;
        for minute in 0..3_000i64 {
            let batch: Vec<Point> = (0..10)
                .map(|s| Point {
                    resource_type: "vm".into(),
                    resource_id: format!("g{s}"),
                    metric: "cpu".into(),
                    value: (minute % 7) as f64,
                    timestamp: start + minute * 60_000,
                })
                .collect();
            written += write_all(&store, &batch).unwrap() as u64;
            if minute % 100 == 99 {
                store.flush().unwrap();
                bound.check(&store, now).unwrap();
                let st = store.stats().unwrap();
                most_held = most_held.max(st.raw_count + st.late_count);
            }
        }
        assert!(bound.rollups >= 5, "{} rollups", bound.rollups);
        assert!(most_held <= limit + 1_000, "held {most_held}");
        store.maintain(now).unwrap();
        let mut counted = 0;
        store
            .export(crate::Tier::Daily, |_, p| {
                counted += p.count;
                Ok(())
            })
            .unwrap();
        assert_eq!(counted, written);
        store.close().unwrap();
    }

    fn read(input: &str, format: InputFormat) -> Vec<std::result::Result<Point, LineError>> {
        PointReader::new(input.as_bytes(), format)
            .collect::<Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn json_lines_name_each_bad_line() {
        let input = "\u{feff}{\"resourceType\":\"vm\",\"resourceId\":\"1\",\"metric\":\"cpu\",\"value\":1.5,\"timestamp\":1700000001000}\r\n\
            \n\
            {\"resourceType\":\"vm\",\"resourceId\":\"1\",\"metric\":\"cpu\",\"value\":\"x\",\"timestamp\":1700000001000}\n\
            {not json\n\
            {\"resourceType\":\"vm\",\"resourceId\":\"1\",\"metric\":\"cpu\",\"value\":2,\"timestamp\":\"2023-11-14T22:13:22Z\"}";
        let items = read(input, InputFormat::JsonLines);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_ref().unwrap().value, 1.5);
        let e = items[1].as_ref().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.starts_with("value:"), "{e}");
        let e = items[2].as_ref().unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("not valid JSON"), "{e}");
        assert_eq!(items[3].as_ref().unwrap().timestamp, 1_700_000_002_000);
    }

    #[test]
    fn json_values_are_read_exactly() {
        for v in [
            123456789.12345679f64,
            0.1 + 0.2,
            1e300,
            -5e-324,
            2.2250738585072014e-308,
        ] {
            let line = format!(
                r#"{{"resourceType":"vm","resourceId":"1","metric":"cpu","value":{},"timestamp":1700000000000}}"#,
                serde_json::to_string(&v).unwrap()
            );
            let p = json_point(line.as_bytes()).unwrap();
            assert_eq!(p.value.to_bits(), v.to_bits(), "{line}");
        }
        let line = r#"{"resourceType":"vm","resourceId":"1","metric":"cpu","value":1e999,"timestamp":1700000000000}"#;
        assert!(
            json_point(line.as_bytes())
                .unwrap_err()
                .starts_with("value:")
        );
    }

    #[test]
    fn csv_by_header_with_field_reasons() {
        let input = "timestamp,value,metric,resourceId,resourceType\n\
            1700000001000,1.5,cpu,\"pve1:node1:101\",vm\n\
            \n\
            1700000002000,inf,cpu,x,vm\n\
            1700000003000,abc,cpu,x,vm\n\
            soon,1,cpu,x,vm\n\
            1700000004000,1,cpu usage,x,vm\n\
            1700000005000,1,cpu\n";
        let items = read(input, InputFormat::Csv);
        assert_eq!(items.len(), 6);
        let p = items[0].as_ref().unwrap();
        assert_eq!(
            (p.resource_id.as_str(), p.value, p.timestamp),
            ("pve1:node1:101", 1.5, 1_700_000_001_000)
        );
        let reasons: Vec<String> = items[1..]
            .iter()
            .map(|i| i.as_ref().unwrap_err().to_string())
            .collect();
        assert!(
            reasons[0].starts_with("line 4: value: must be a finite"),
            "{reasons:?}"
        );
        assert!(reasons[1].starts_with("line 5: value:"), "{reasons:?}");
        assert!(reasons[2].starts_with("line 6: timestamp:"), "{reasons:?}");
        assert!(reasons[3].starts_with("line 7: metric:"), "{reasons:?}");
        assert!(
            reasons[4].starts_with("line 8: expected 5 fields"),
            "{reasons:?}"
        );
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            split_csv_line(r#" vm , "a,""b" ,cpu,,"" "#).unwrap(),
            ["vm", "a,\"b", "cpu", "", ""]
        );
        assert!(split_csv_line(r#"vm,"open"#).is_err());
        assert!(split_csv_line(r#"vm,"a"b,c"#).is_err());
        let items = read(
            "resourceType,resourceId,metric,value,timestamp\nvm,\"x\ny\",cpu,1,1000\n",
            InputFormat::Csv,
        );
        assert!(items.iter().all(|i| i.is_err()), "{items:?}");
    }

    #[test]
    fn csv_needs_its_header() {
        for (input, needle) in [
            ("vm,1,cpu,1,1000\n", "must be the header"),
            (
                "resourceType,resourceId,metric,value\n",
                "lacks column `timestamp`",
            ),
            (
                "resourceType,resourceId,metric,value,timestamp,min\n",
                "unknown column `min`",
            ),
        ] {
            let err = PointReader::new(input.as_bytes(), InputFormat::Csv)
                .collect::<Result<Vec<_>>>()
                .unwrap_err();
            assert!(err.is_invalid_input());
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(read("", InputFormat::Csv).is_empty());
    }

    #[test]
    fn long_lines_are_capped() {
        let mut input = "x".repeat(MAX_LINE_BYTES + 10);
        input.push_str("\n{}\n");
        let items = read(&input, InputFormat::JsonLines);
        assert_eq!(items.len(), 2);
        assert!(
            items[0]
                .as_ref()
                .unwrap_err()
                .reason
                .contains("longer than")
        );
        assert_eq!(items[1].as_ref().unwrap_err().line, 2);
    }
}
