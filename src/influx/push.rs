//! Receiving pushes: parse, map, store, remember the counters, and report
//! on the status board. The same for HTTP (all or nothing per request) and
//! UDP (each good line kept, bad ones counted), so the transports only move
//! bytes.

use super::map::{self, Memory};
use super::parse::{self, Precision};
use crate::collectors::{Sink, StatusBoard};
use crate::ingest::LineError;
use crate::model::now_ms;
use crate::store::Resource;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Distinct instances (db / bucket names) one service keeps state for. A
/// cluster is one instance; this bounds what clients can make us remember.
pub const MAX_INSTANCES: usize = 256;
/// Resources whose counters (and shared storages whose recorder, and merges
/// done) are remembered per instance.
const MAX_RATE_ENTRIES: usize = 100_000;
/// Counters not refreshed for this long are forgotten (a deleted guest); a
/// resource back after that starts its rates over.
const RATE_TTL_MS: i64 = 3_600_000;

/// How a request's bad lines are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTP: one bad line refuses the request; nothing of it is stored.
    AllOrNothing,
    /// UDP: nobody can be told, so the good lines are stored and the bad
    /// ones counted.
    Lenient,
}

/// What a push did.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Lines read (comments and blank lines aside), good or bad.
    pub lines: usize,
    /// Points stored.
    pub points: usize,
    /// Lines that carried nothing stored, by rule (see `map`).
    pub ignored: usize,
    /// Lenient mode only: the lines that were skipped.
    pub bad_lines: Vec<LineError>,
    /// What the push said about its resources (names, nodes, status).
    pub resources: Vec<Resource>,
}

/// Why a push stored nothing.
#[derive(Debug)]
pub enum PushError {
    /// The db / bucket name cannot be an instance.
    Instance(String),
    /// Lines that are not line protocol or cannot be mapped.
    Lines(Vec<LineError>),
    /// The store refused the batch: bad points are named by line, anything
    /// else (a full queue, a closed store) is the store's own error.
    Store {
        error: crate::Error,
        lines: Vec<LineError>,
    },
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Instance(m) => f.write_str(m),
            PushError::Lines(lines) | PushError::Store { lines, .. } if !lines.is_empty() => {
                write!(
                    f,
                    "{} bad line(s), nothing stored; first: {}",
                    lines.len(),
                    lines[0]
                )
            }
            PushError::Lines(_) => f.write_str("bad lines, nothing stored"),
            PushError::Store { error, .. } => write!(f, "the store refused the points: {error}"),
        }
    }
}

/// The status board entry of an instance's pushes.
pub fn board_key(instance: &str) -> String {
    format!("influx:{instance}")
}

/// Checks a db / bucket name for use as an instance (see
/// `config::rules::push_instance`).
pub fn check_instance(name: &str) -> Result<(), String> {
    crate::config::rules::push_instance(name)
}

/// Receives pushes for every instance. Cheap to share (`Arc`).
pub struct Receiver {
    sink: Arc<dyn Sink>,
    board: StatusBoard,
    instances: Mutex<HashMap<String, Arc<Mutex<Memory>>>>,
}

impl Receiver {
    pub fn new(sink: Arc<dyn Sink>, board: StatusBoard) -> Receiver {
        Receiver {
            sink,
            board,
            instances: Mutex::new(HashMap::new()),
        }
    }

    /// Parses `body`, maps it for `instance` and stores it; lines without a
    /// timestamp get the time of the call. Blocking (the sink may block):
    /// call it off async threads.
    pub fn push(
        &self,
        instance: &str,
        body: &[u8],
        precision: Precision,
        mode: Mode,
    ) -> Result<Report, PushError> {
        // A name that cannot be an instance has no status to report under.
        check_instance(instance).map_err(PushError::Instance)?;
        let outcome = self.push_inner(instance, body, precision, mode);
        self.report(instance, &outcome);
        outcome
    }

    fn push_inner(
        &self,
        instance: &str,
        body: &[u8],
        precision: Precision,
        mode: Mode,
    ) -> Result<Report, PushError> {
        let state = self.state(instance)?;
        let parsed = parse::parse(body, precision, now_ms());
        let read = parsed.lines.len() + parsed.errors.len();
        let mut bad = parsed.errors;
        if mode == Mode::AllOrNothing && !bad.is_empty() {
            return Err(PushError::Lines(bad));
        }
        // Held until the counters are committed, so two pushes of the same
        // instance (two nodes of one cluster) cannot interleave them.
        let mut memory = state.lock();
        let mut mapped = map::map(instance, &parsed.lines, &memory);
        // Points the store would refuse are named by line here, with the
        // store's own words.
        let mut keep = vec![true; mapped.points.len()];
        for (i, p) in mapped.points.iter().enumerate() {
            if let Err(reason) = p.validate() {
                keep[i] = false;
                mapped.errors.push(LineError {
                    line: mapped.point_lines[i],
                    reason: timestamp_hint(reason, precision),
                });
            }
        }
        if !mapped.errors.is_empty() {
            mapped.errors.sort_by_key(|e| e.line);
            mapped.errors.dedup_by_key(|e| e.line);
            if mode == Mode::AllOrNothing {
                return Err(PushError::Lines(mapped.errors));
            }
            let refused: std::collections::HashSet<u64> =
                mapped.errors.iter().map(|e| e.line).collect();
            let mut i = 0;
            mapped.points.retain(|_| {
                let ok = keep[i] && !refused.contains(&mapped.point_lines[i]);
                i += 1;
                ok
            });
            bad.append(&mut mapped.errors);
            bad.sort_by_key(|e| e.line);
        }
        // As the poller: per-node history of a shared storage joins its one
        // series before that series' first points are written.
        for (resource_type, old, new) in std::mem::take(&mut mapped.merges) {
            let n = self
                .sink
                .merge_resource(&resource_type, &old, &new)
                .map_err(|error| PushError::Store {
                    error,
                    lines: Vec::new(),
                })?;
            if n > 0 {
                tracing::info!(
                    "influx {instance}: shared storage {new} continues the history of {old}"
                );
            }
            if memory.merged.len() < MAX_RATE_ENTRIES {
                memory.merged.insert((old, new));
            }
        }
        // Metadata the store would refuse (a name with control characters)
        // is left out, never the points. It is written first: it describes
        // the resources as they are now, so it is right even if the points
        // are then refused.
        mapped.resources.retain(|r| r.validate().is_ok());
        if !mapped.resources.is_empty() {
            self.sink
                .write_resources(&mapped.resources)
                .map_err(|error| PushError::Store {
                    error,
                    lines: Vec::new(),
                })?;
        }
        let stored = if mapped.points.is_empty() {
            0
        } else {
            self.sink
                .write(&mapped.points)
                .map_err(|error| PushError::Store {
                    lines: store_lines(&error, &mapped.point_lines),
                    error,
                })?
        };
        let now = now_ms();
        let rates = &mut memory.rates;
        for (id, sample) in mapped.rates {
            match sample {
                Some(s) if rates.len() < MAX_RATE_ENTRIES || rates.get(&id).is_some() => {
                    rates.insert(id, s)
                }
                Some(_) => {}
                None => {
                    rates.remove(&id);
                }
            }
        }
        for (id, recorder) in mapped.recorders {
            let recorders = &mut memory.recorders;
            if recorders.len() < MAX_RATE_ENTRIES || recorders.contains_key(&id) {
                recorders.insert(id, recorder);
            }
        }
        memory.forget_before(now - RATE_TTL_MS);
        Ok(Report {
            lines: read,
            points: stored,
            ignored: mapped.ignored,
            bad_lines: bad,
            resources: mapped.resources,
        })
    }

    fn state(&self, instance: &str) -> Result<Arc<Mutex<Memory>>, PushError> {
        let mut map = self.instances.lock();
        if let Some(s) = map.get(instance) {
            return Ok(s.clone());
        }
        if map.len() >= MAX_INSTANCES {
            return Err(PushError::Instance(format!(
                "{MAX_INSTANCES} instances (db / bucket names) have pushed already; a new one ({instance:?}) needs a restart"
            )));
        }
        let s = Arc::new(Mutex::new(Memory::default()));
        map.insert(instance.to_string(), s.clone());
        Ok(s)
    }

    fn report(&self, instance: &str, outcome: &Result<Report, PushError>) {
        if !self.instances.lock().contains_key(instance) {
            // Refused before any state was made (too many instances): no
            // board entry either.
            return;
        }
        let now = now_ms();
        self.board.update(&board_key(instance), |s| {
            s.last_attempt = now;
            match outcome {
                Ok(r) => {
                    s.points_written = s.points_written.saturating_add(r.points as u64);
                    s.errors = s.errors.saturating_add(r.bad_lines.len() as u64);
                    if r.lines > r.bad_lines.len() || r.lines == 0 {
                        s.state = crate::collectors::CollectorState::Ok;
                        s.last_success = now;
                        s.consecutive_failures = 0;
                    }
                    match r.bad_lines.first() {
                        Some(first) => {
                            s.last_error =
                                format!("{} bad line(s) skipped; first: {first}", r.bad_lines.len())
                        }
                        None => s.last_error.clear(),
                    }
                }
                Err(e) => {
                    s.state = crate::collectors::CollectorState::Error;
                    s.last_error = e.to_string();
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    s.errors = s.errors.saturating_add(1);
                }
            }
        });
    }
}

/// The store's per-point errors, by line.
fn store_lines(error: &crate::Error, point_lines: &[u64]) -> Vec<LineError> {
    let mut lines: Vec<LineError> = error
        .point_errors()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some(LineError {
                line: *point_lines.get(p.index)?,
                reason: p.reason.clone(),
            })
        })
        .collect();
    lines.dedup_by_key(|e| e.line);
    lines
}

/// A timestamp the store refuses is most often one sent in another unit
/// than the request's precision.
fn timestamp_hint(reason: String, precision: Precision) -> String {
    if reason.starts_with("timestamp") {
        format!("{reason} (read with precision={precision}: is that the unit the client sends?)")
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Point;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Recorder {
        points: Mutex<Vec<Point>>,
        resources: Mutex<Vec<Resource>>,
        merges: Mutex<Vec<(String, String)>>,
        refuse: AtomicBool,
    }

    impl Sink for Recorder {
        fn write(&self, points: &[Point]) -> crate::Result<usize> {
            if self.refuse.load(Ordering::SeqCst) {
                return Err(crate::Error::overloaded(1, 1));
            }
            self.points.lock().extend_from_slice(points);
            Ok(points.len())
        }

        fn write_resources(&self, resources: &[Resource]) -> crate::Result<usize> {
            self.resources.lock().extend_from_slice(resources);
            Ok(resources.len())
        }

        fn merge_resource(&self, _: &str, from: &str, into: &str) -> crate::Result<usize> {
            if self.refuse.load(Ordering::SeqCst) {
                return Err(crate::Error::overloaded(1, 1));
            }
            self.merges.lock().push((from.into(), into.into()));
            Ok(1)
        }
    }

    fn setup() -> (Arc<Recorder>, StatusBoard, Receiver) {
        let sink = Arc::new(Recorder::default());
        let board = StatusBoard::default();
        let r = Receiver::new(sink.clone(), board.clone());
        (sink, board, r)
    }

    fn guest(t: i64, uptime: u64, netin: u64) -> String {
        format!(
            "system,object=qemu,vmid=101,nodename=n,host=vm cpu=0.5,status=\"running\",uptime={uptime},netin={netin} {t}\n"
        )
    }

    fn now_s() -> i64 {
        now_ms() / 1000
    }

    #[test]
    fn a_refused_batch_leaves_the_counters_as_they_were() {
        let (sink, board, r) = setup();
        let t = now_s() - 100;
        let push = |body: String| {
            r.push(
                "pve1",
                body.as_bytes(),
                Precision::Seconds,
                Mode::AllOrNothing,
            )
        };
        push(guest(t, 100, 0)).unwrap();
        sink.refuse.store(true, Ordering::SeqCst);
        let e = push(guest(t + 10, 110, 10_000)).unwrap_err();
        assert!(
            matches!(&e, PushError::Store { error, .. } if error.is_overloaded()),
            "{e}"
        );
        assert_eq!(
            board.snapshot()[0].state,
            crate::collectors::CollectorState::Error
        );
        sink.refuse.store(false, Ordering::SeqCst);
        // The rate spans from the last stored sample, not the refused one.
        let report = push(guest(t + 20, 120, 40_000)).unwrap();
        assert_eq!(report.points, 2);
        let netin: Vec<f64> = sink
            .points
            .lock()
            .iter()
            .filter(|p| p.metric == "netin")
            .map(|p| p.value)
            .collect();
        assert_eq!(netin, [2000.0]);
        let s = &board.snapshot()[0];
        assert_eq!(
            (s.name.as_str(), s.state),
            ("influx:pve1", crate::collectors::CollectorState::Ok)
        );
        assert_eq!(
            (s.errors, s.consecutive_failures, s.points_written),
            (1, 0, 3)
        );
        // Metadata went with every push.
        assert_eq!(sink.resources.lock()[0].meta.name.as_deref(), Some("vm"));
    }

    #[test]
    fn all_or_nothing_and_lenient() {
        let t = now_s() - 100;
        let body = format!("m v=1 {t}\nm v=oops {t}\nm w=2 {t}\n");
        let (sink, _, r) = setup();
        let e = r
            .push(
                "pve1",
                body.as_bytes(),
                Precision::Seconds,
                Mode::AllOrNothing,
            )
            .unwrap_err();
        let PushError::Lines(lines) = &e else {
            panic!("{e}")
        };
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, 2);
        assert!(sink.points.lock().is_empty());

        let report = r
            .push("pve1", body.as_bytes(), Precision::Seconds, Mode::Lenient)
            .unwrap();
        assert_eq!(
            (report.lines, report.points, report.bad_lines.len()),
            (3, 2, 1)
        );
        assert_eq!(sink.points.lock().len(), 2);
        // A point the store would refuse refuses its line only, in lenient
        // mode, and is named by line.
        let report = r
            .push(
                "pve1",
                format!("m v=1 {t}\nm v=2 -1\n").as_bytes(),
                Precision::Seconds,
                Mode::Lenient,
            )
            .unwrap();
        assert_eq!(report.points, 1);
        assert_eq!(report.bad_lines[0].line, 2);
        assert!(
            report.bad_lines[0].reason.contains("precision=s"),
            "{:?}",
            report.bad_lines
        );
    }

    #[test]
    fn instances_are_checked_and_bounded() {
        let (_, board, r) = setup();
        let body = format!("m v=1 {}", now_s());
        for bad in ["", "a b", "a:b", &"x".repeat(65)] {
            let e = r
                .push(bad, body.as_bytes(), Precision::Seconds, Mode::AllOrNothing)
                .unwrap_err();
            assert!(matches!(e, PushError::Instance(_)), "{bad:?}");
        }
        assert!(board.snapshot().is_empty(), "no entry for a refused name");
        for i in 0..MAX_INSTANCES {
            r.push(
                &format!("c{i}"),
                body.as_bytes(),
                Precision::Seconds,
                Mode::AllOrNothing,
            )
            .unwrap();
        }
        let e = r
            .push(
                "one-more",
                body.as_bytes(),
                Precision::Seconds,
                Mode::AllOrNothing,
            )
            .unwrap_err();
        assert!(e.to_string().contains("instances"), "{e}");
        assert_eq!(board.snapshot().len(), MAX_INSTANCES);
        // Known ones still work.
        r.push(
            "c0",
            body.as_bytes(),
            Precision::Seconds,
            Mode::AllOrNothing,
        )
        .unwrap();
    }

    #[test]
    fn a_shared_storages_per_node_history_is_merged_once_before_its_points() {
        let (sink, _, r) = setup();
        let t = now_s() - 100;
        let line = |node: &str, t: i64| {
            format!(
                "system,object=storages,nodename={node},host=ceph active=1,shared=1,used=1,total=4 {t}\n"
            )
        };
        let push = |body: String| {
            r.push(
                "pve1",
                body.as_bytes(),
                Precision::Seconds,
                Mode::AllOrNothing,
            )
        };
        // A store that cannot merge refuses the push: nothing is written.
        sink.refuse.store(true, Ordering::SeqCst);
        assert!(matches!(
            push(line("pve-a", t)),
            Err(PushError::Store { .. })
        ));
        assert!(sink.points.lock().is_empty() && sink.resources.lock().is_empty());
        sink.refuse.store(false, Ordering::SeqCst);
        push(line("pve-a", t)).unwrap();
        push(line("pve-a", t + 10)).unwrap();
        // pve-b's copy is merged too, though pve-a's lines record the storage.
        let report = push(line("pve-b", t + 12)).unwrap();
        assert_eq!(report.points, 0);
        let pair = |n: &str| (format!("pve1:{n}:ceph"), "pve1:ceph".to_string());
        assert_eq!(*sink.merges.lock(), [pair("pve-a"), pair("pve-b")]);
        let points: Vec<(String, i64)> = sink
            .points
            .lock()
            .iter()
            .map(|p| (p.resource_id.clone(), p.timestamp))
            .collect();
        assert_eq!(
            points,
            [
                ("pve1:ceph".to_string(), t * 1000),
                ("pve1:ceph".to_string(), (t + 10) * 1000)
            ]
        );
    }
}
