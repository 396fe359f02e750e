//! InfluxDB line protocol in, numbered lines out.
//!
//! The grammar (escaping, the five field types, comments) is the
//! `influxdb-line-protocol` crate's, the parser of InfluxDB IOx; this module
//! adds what a server needs around it: line numbers for error messages, the
//! `precision` of the timestamps, UTF-8 and CRLF handling, and the checks the
//! grammar leaves to the server (finite floats, timestamps that fit).

use crate::ingest::LineError;
use influxdb_line_protocol::{EscapedStr, FieldValue};
use std::collections::BTreeSet;
use std::fmt;

/// How much of a bad line an error message quotes.
const SNIPPET_CHARS: usize = 80;

/// The unit of the timestamps in a request (`precision=`), nanoseconds when
/// none is given, as in InfluxDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    /// The names InfluxDB v1 (`n`, `u`, `ms`, `s`, `m`, `h`) and v2 (`ns`,
    /// `us`, `ms`, `s`) accept; empty means nanoseconds.
    pub fn parse(s: &str) -> Result<Precision, String> {
        Ok(match s {
            "" | "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            _ => {
                return Err(format!(
                    "precision: unknown unit {s:?}; expected ns, us (or u), ms, s, m or h"
                ));
            }
        })
    }

    /// A timestamp in this unit as Unix milliseconds (rounded down), or None
    /// when it does not fit.
    pub fn to_ms(self, t: i64) -> Option<i64> {
        match self {
            Precision::Nanoseconds => Some(t.div_euclid(1_000_000)),
            Precision::Microseconds => Some(t.div_euclid(1_000)),
            Precision::Milliseconds => Some(t),
            Precision::Seconds => t.checked_mul(1_000),
            Precision::Minutes => t.checked_mul(60_000),
            Precision::Hours => t.checked_mul(3_600_000),
        }
    }
}

/// A field's value. Integers (`i`), unsigned integers (`u`) and floats are
/// all numbers here: the store keeps f64.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
}

impl Value {
    /// A finite number; booleans and strings are not numbers.
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// One point of line protocol, unescaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based number of the line it starts on.
    pub number: u64,
    pub measurement: String,
    /// In the order sent.
    pub tags: Vec<(String, String)>,
    /// In the order sent.
    pub fields: Vec<(String, Value)>,
    /// Unix ms: the line's timestamp in the request's precision, or the
    /// time it was received when it has none.
    pub timestamp: i64,
}

impl Line {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The last value given for `key` (InfluxDB keeps the last of a repeated
    /// field).
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// What a body held: its good lines and the bad ones, each named.
#[derive(Debug, Default)]
pub struct Parsed {
    pub lines: Vec<Line>,
    pub errors: Vec<LineError>,
}

/// Parses a whole body. Blank lines and `#` comments are skipped; lines end
/// at `\n` (a `\r` before it is dropped) except inside a quoted string.
/// `now_ms` stamps lines without a timestamp.
pub fn parse(body: &[u8], precision: Precision, now_ms: i64) -> Parsed {
    let (text, bad_utf8) = match std::str::from_utf8(body) {
        Ok(text) => (std::borrow::Cow::Borrowed(text), BTreeSet::new()),
        Err(_) => (String::from_utf8_lossy(body), invalid_utf8_lines(body)),
    };
    let mut out = Parsed::default();
    let mut number: u64 = 1;
    for chunk in influxdb_line_protocol::split_lines(&text) {
        let first = number;
        let spans = chunk.matches('\n').count() as u64;
        number += 1 + spans;
        let chunk = chunk.strip_suffix('\r').unwrap_or(chunk);
        if bad_utf8.range(first..=first + spans).next().is_some() {
            out.errors.push(LineError {
                line: first,
                reason: "not valid UTF-8".into(),
            });
            continue;
        }
        match parse_one(chunk, precision, now_ms) {
            Ok(None) => {}
            Ok(Some(mut line)) => {
                line.number = first;
                out.lines.push(line);
            }
            Err(reason) => out.errors.push(LineError {
                line: first,
                reason: format!("{reason}: {}", Snippet(chunk)),
            }),
        }
    }
    out
}

/// The physical lines (1-based) holding bytes that are not UTF-8.
fn invalid_utf8_lines(body: &[u8]) -> BTreeSet<u64> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| std::str::from_utf8(line).is_err())
        .map(|(i, _)| i as u64 + 1)
        .collect()
}

fn parse_one(chunk: &str, precision: Precision, now_ms: i64) -> Result<Option<Line>, String> {
    let Some(parsed) = influxdb_line_protocol::parse_lines(chunk).next() else {
        return Ok(None);
    };
    let parsed = parsed.map_err(|e| describe(&e))?;
    let mut fields = Vec::with_capacity(parsed.field_set.len());
    for (key, value) in &parsed.field_set {
        let value = match value {
            FieldValue::F64(f) if !f.is_finite() => {
                return Err(format!("field `{key}`: {f} is not a finite number"));
            }
            FieldValue::F64(f) => Value::Number(*f),
            FieldValue::I64(i) => Value::Number(*i as f64),
            FieldValue::U64(u) => Value::Number(*u as f64),
            FieldValue::Boolean(b) => Value::Bool(*b),
            FieldValue::String(s) => Value::Text(s.to_string()),
        };
        fields.push((key.to_string(), value));
    }
    let timestamp = match parsed.timestamp {
        None => now_ms,
        Some(t) => precision
            .to_ms(t)
            .ok_or_else(|| format!("timestamp {t} is out of range for precision {precision}"))?,
    };
    let owned = |s: &EscapedStr<'_>| s.to_string();
    let mut tags: Vec<(String, String)> = Vec::new();
    for (k, v) in parsed.series.tag_set.iter().flatten() {
        if tags.iter().any(|(seen, _)| seen == k.as_str()) {
            // InfluxDB refuses these too: which value would be the series'?
            return Err(format!("tag `{k}` is given twice"));
        }
        tags.push((owned(k), owned(v)));
    }
    Ok(Some(Line {
        number: 0,
        measurement: owned(&parsed.series.measurement),
        tags,
        fields,
        timestamp,
    }))
}

/// The crate's messages, with its catch-all made readable.
fn describe(e: &influxdb_line_protocol::Error) -> String {
    use influxdb_line_protocol::Error as E;
    match e {
        E::GenericParsingError { .. } => {
            "not line protocol (expected `measurement[,tag=value...] field=value[,field=value...] [timestamp]`)".into()
        }
        E::FieldSetMissing => {
            "no valid field (expected key=value: a number such as 1.5, 2i or 3u, true/false, or a \"quoted string\")".into()
        }
        E::CannotParseEntireLine { trailing_content } => format!(
            "unexpected {:?} after the fields and timestamp (a space, comma or = in a name must be escaped with \\, a string value quoted)",
            Snippet(trailing_content).text()
        ),
        other => other.to_string(),
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
            Precision::Minutes => "m",
            Precision::Hours => "h",
        })
    }
}

/// The start of a line, quoted, for an error message.
struct Snippet<'a>(&'a str);

impl Snippet<'_> {
    fn text(&self) -> String {
        let mut s: String = self.0.chars().take(SNIPPET_CHARS).collect();
        if self.0.chars().nth(SNIPPET_CHARS).is_some() {
            s.push('…');
        }
        s
    }
}

impl fmt::Display for Snippet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_123;

    fn one(text: &str) -> Line {
        let p = parse(text.as_bytes(), Precision::Nanoseconds, NOW);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.lines.len(), 1, "{:?}", p.lines);
        p.lines.into_iter().next().unwrap()
    }

    fn error(text: &str) -> LineError {
        let p = parse(text.as_bytes(), Precision::Nanoseconds, NOW);
        assert_eq!(p.errors.len(), 1, "{text:?} gave {:?}", p.lines);
        p.errors.into_iter().next().unwrap()
    }

    #[test]
    fn every_field_type() {
        let l = one(
            r#"m f=1.5,neg=-2.25,exp=1e-05,expdec=-1.5E+20,bare=42,i=-7i,u=18446744073709551615u,s="text",t=t,T=T,tr=true,Tr=True,TR=TRUE,f0=f,F0=F,fa=false,Fa=False,FA=FALSE 1"#,
        );
        let n = |k: &str| l.field(k).unwrap().number().unwrap();
        assert_eq!(n("f"), 1.5);
        assert_eq!(n("neg"), -2.25);
        assert_eq!(n("exp"), 1e-5);
        assert_eq!(n("expdec"), -1.5e20);
        assert_eq!(n("bare"), 42.0);
        assert_eq!(n("i"), -7.0);
        assert_eq!(n("u"), u64::MAX as f64);
        assert_eq!(l.field("s"), Some(&Value::Text("text".into())));
        for k in ["t", "T", "tr", "Tr", "TR"] {
            assert_eq!(l.field(k), Some(&Value::Bool(true)), "{k}");
        }
        for k in ["f0", "F0", "fa", "Fa", "FA"] {
            assert_eq!(l.field(k), Some(&Value::Bool(false)), "{k}");
        }
    }

    #[test]
    fn every_escaping_rule() {
        // Measurement: comma and space escaped; tag keys/values and field
        // keys: comma, equals sign and space; string values: quote and
        // backslash; any other backslash is literal.
        let l = one(
            r#"my\ meas\,ure,tag\ key\,a\=b=tag\ val\,c\=d,plain=a\b f\ k\,e\=y="say \"hi\" \\ back\slash",x=1 1"#,
        );
        assert_eq!(l.measurement, "my meas,ure");
        assert_eq!(
            l.tags,
            vec![
                ("tag key,a=b".to_string(), "tag val,c=d".to_string()),
                ("plain".to_string(), r"a\b".to_string()),
            ]
        );
        assert_eq!(
            l.field("f k,e=y"),
            Some(&Value::Text(r#"say "hi" \ back\slash"#.into()))
        );
        // A newline inside a quoted string does not end the line.
        let p = parse(
            b"m s=\"two\nlines\" 1\nm x=2 2\n",
            Precision::Nanoseconds,
            NOW,
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(
            p.lines[0].field("s"),
            Some(&Value::Text("two\nlines".into()))
        );
        assert_eq!(p.lines[1].number, 3);
        // Unicode is fine anywhere.
        let l = one("température,lieu=salle\\ à\\ manger valeur=21.5 1");
        assert_eq!(l.measurement, "température");
        assert_eq!(l.tag("lieu"), Some("salle à manger"));
    }

    #[test]
    fn every_precision() {
        let cases = [
            ("", 1_700_000_000_123_456_789_i64, 1_700_000_000_123_i64),
            ("n", 1_700_000_000_123_456_789, 1_700_000_000_123),
            ("ns", 1_700_000_000_123_456_789, 1_700_000_000_123),
            ("u", 1_700_000_000_123_456, 1_700_000_000_123),
            ("us", 1_700_000_000_123_456, 1_700_000_000_123),
            ("ms", 1_700_000_000_123, 1_700_000_000_123),
            ("s", 1_700_000_000, 1_700_000_000_000),
            ("m", 28_333_333, 1_699_999_980_000),
            ("h", 472_222, 1_699_999_200_000),
        ];
        for (name, ts, ms) in cases {
            let p = Precision::parse(name).unwrap();
            let parsed = parse(format!("m v=1 {ts}").as_bytes(), p, NOW);
            assert_eq!(parsed.lines[0].timestamp, ms, "{name}");
        }
        assert!(Precision::parse("days").unwrap_err().contains("ns, us"));
        // No timestamp: the time it arrived.
        assert_eq!(one("m v=1").timestamp, NOW);
        // Too far for the unit: named, not wrapped around.
        let e = parse(b"m v=1 9223372036854775807", Precision::Hours, NOW);
        assert!(
            e.errors[0].reason.contains("out of range"),
            "{:?}",
            e.errors
        );
    }

    #[test]
    fn lines_comments_and_blank_lines_are_counted() {
        let body = "# a comment\n\nm v=1 1\r\n   \nm,t=a v=2 2\nm v=3 3";
        let p = parse(body.as_bytes(), Precision::Nanoseconds, NOW);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let numbers: Vec<u64> = p.lines.iter().map(|l| l.number).collect();
        assert_eq!(numbers, [3, 5, 6]);
        assert!(parse(b"", Precision::Nanoseconds, NOW).lines.is_empty());
    }

    #[test]
    fn malformed_lines_are_named_with_the_reason() {
        let body = "m v=1 1\nm v=1.2.3 1\nm\nm v=\"open\nm v=1 1";
        let p = parse(body.as_bytes(), Precision::Nanoseconds, NOW);
        assert_eq!(p.lines.len(), 1);
        let lines: Vec<u64> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4], "{:?}", p.errors);
        for e in &p.errors {
            assert!(e.reason.contains("\"m"), "quotes the line: {e}");
        }

        for (text, needle) in [
            ("m v=1.2.3", "1.2.3"),
            ("m v=99999999999999999999i", "integer"),
            ("m v=-1u", ""),
            ("m v=1e999", "finite"),
            ("m", "field"),
            ("m,t v=1", "Tag Set"),
            ("m,t=a,t=b v=1", "twice"),
            ("m v=1 12x", "unexpected"),
            ("m v=1 1 extra", "unexpected"),
            ("m,t=a\\", "backslash"),
            ("m v=abc", "no valid field"),
            ("m v=1 1 2", "unexpected"),
            ("m v", "no valid field"),
            ("m,t=a", "not line protocol"),
            ("m v=1 99999999999999999999", "timestamp"),
            (",t=a v=1", ""),
        ] {
            let e = error(text);
            assert_eq!(e.line, 1);
            assert!(e.reason.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn invalid_utf8_names_its_line_only() {
        let body = b"m v=1 1\nm,t=\xff v=2 2\nm v=3 3\n";
        let p = parse(body, Precision::Nanoseconds, NOW);
        assert_eq!(p.lines.len(), 2);
        assert_eq!(
            p.errors,
            vec![LineError {
                line: 2,
                reason: "not valid UTF-8".into()
            }]
        );
    }
}
