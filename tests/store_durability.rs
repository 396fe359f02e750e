//! The store across restarts, crashes, bad files, overload and concurrent
//! readers: what an operator relies on when the host misbehaves.

use pulse_metrics::{MetricsConfig, Point, SeriesFilter, SeriesKey, Store, Tier, TimeRange};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 2024-03-10T00:00:00Z.
const T0: i64 = 1_710_028_800;

fn config(path: &Path) -> MetricsConfig {
    MetricsConfig {
        database_path: path.to_path_buf(),
        ..MetricsConfig::default()
    }
}

fn key(i: usize) -> SeriesKey {
    SeriesKey::new(
        ["node", "vm", "container"][i % 3],
        format!("pve1:node1:{}", 100 + i / 3),
        ["cpu", "memory", "disk"][i % 3],
    )
}

/// One poll: `n` series at second `ts`, values derived from (i, ts).
fn poll(n: usize, ts: i64) -> Vec<Point> {
    (0..n)
        .map(|i| Point::new(&key(i), (i as f64) + (ts % 997) as f64 / 10.0, ts * 1000))
        .collect()
}

type Dump = BTreeMap<(Tier, String, i64), (f64, f64, f64, u64)>;

fn dump(store: &Store) -> Dump {
    let mut out = BTreeMap::new();
    for tier in Tier::ALL {
        store
            .export(tier, |k, p| {
                out.insert(
                    (tier, k.to_string(), p.timestamp),
                    (p.value, p.min, p.max, p.count),
                );
                Ok(())
            })
            .unwrap();
    }
    out
}

#[test]
fn restart_keeps_every_tier_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.db");
    let store = Store::open(config(&path)).unwrap();
    // 3h10m of 5 s polls: sealed hours, an open hour, unrolled raw points.
    let mut ts = T0 - 3 * 3600;
    while ts < T0 + 600 {
        store.write_batch(&poll(12, ts)).unwrap();
        if ts % 300 == 0 {
            store.rollup(ts * 1000).unwrap();
        }
        ts += 5;
    }
    store.prune(ts * 1000).unwrap();
    let before = dump(&store);
    let stats_before = store.stats().unwrap();
    assert!(before.keys().any(|k| k.0 == Tier::Hourly));
    store.close().unwrap();

    let store = Store::open(config(&path)).unwrap();
    assert_eq!(
        dump(&store),
        before,
        "everything back after a clean restart"
    );
    let stats = store.stats().unwrap();
    assert_eq!(
        (
            stats.raw_count,
            stats.minute_count,
            stats.hourly_count,
            stats.series_count
        ),
        (
            stats_before.raw_count,
            stats_before.minute_count,
            stats_before.hourly_count,
            stats_before.series_count
        )
    );
    // Lifetime counters survive too (`pulse-metrics stats` is a new process).
    assert_eq!(stats.total_writes, stats_before.total_writes);
    assert_eq!(stats.last_flush, stats_before.last_flush);
    assert!(stats.total_writes > 0);
    // Dropping without close() flushes too.
    store.write_batch(&poll(12, ts)).unwrap();
    drop(store);
    let store = Store::open(config(&path)).unwrap();
    assert_eq!(dump(&store).len(), before.len() + 12);
    // A rollup after the restart finishes the open hour as if nothing happened.
    store.rollup((T0 + 3600) * 1000).unwrap();
    let sealed = store.stats().unwrap();
    assert!(sealed.hourly_count > stats.hourly_count);
    store.close().unwrap();
}

/// The child side of the crash tests, not a test of its own: started by
/// them (with `--ignored`), it writes polls of `PULSE_CRASH_CHILD_SERIES`
/// series forever, printing the poll number once `flush()` has returned.
#[test]
#[ignore = "the child process of the kill -9 tests, which start it"]
fn crash_child() {
    let db = std::env::var("PULSE_CRASH_CHILD_DB").expect("started by a kill -9 test");
    let store = Store::open(config(Path::new(&db))).unwrap();
    let env = |name: &str| -> i64 { std::env::var(name).unwrap().parse().unwrap() };
    let start = env("PULSE_CRASH_CHILD_START");
    let series = env("PULSE_CRASH_CHILD_SERIES") as usize;
    let mut i = start;
    loop {
        let ts = T0 + i * 5;
        store.write_batch(&poll(series, ts)).unwrap();
        if i % 7 == 0 {
            store.flush().unwrap();
            println!("acked {i}");
        }
        if i % 60 == 0 {
            store.rollup(ts * 1000).unwrap();
        }
        if i % 720 == 0 {
            store.prune(ts * 1000).unwrap();
        }
        i += 1;
    }
}

/// Rounds of: a child writing polls of `series` series, killed with
/// SIGKILL after each wait; then every point of every acknowledged poll
/// (still within raw retention) must be in the raw tier, with its value.
fn kill_9_rounds(series: usize, waits_ms: &[u64]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.db");
    let mut next = 0i64;
    for (round, &wait_ms) in waits_ms.iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PULSE_CRASH_CHILD_DB", &path)
            .env("PULSE_CRASH_CHILD_START", next.to_string())
            .env("PULSE_CRASH_CHILD_SERIES", series.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("acked ") {
                    let _ = tx.send(n.trim().parse::<i64>().unwrap());
                }
            }
        });
        let started = Instant::now();
        let mut acked = None;
        while started.elapsed() < Duration::from_millis(wait_ms) || acked.is_none() {
            if let Ok(n) = rx.recv_timeout(Duration::from_millis(20)) {
                acked = Some(n);
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child never acknowledged"
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acks that raced the kill still count: the child had flushed them.
        while let Ok(n) = rx.try_recv() {
            acked = Some(n);
        }
        let acked = acked.unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        drop(conn);
        let store = Store::open(config(&path)).unwrap();
        let mut raw: std::collections::HashMap<(String, i64), f64> = Default::default();
        store
            .export(Tier::Raw, |k, p| {
                raw.insert((k.to_string(), p.timestamp), p.value);
                Ok(())
            })
            .unwrap();
        let mut retained_from = T0 + next * 5;
        if let Some(first) = raw.keys().map(|k| k.1 / 1000).min() {
            retained_from = retained_from.max(first);
        }
        let mut checked = 0usize;
        for i in next..=acked {
            let ts = T0 + i * 5;
            if ts < retained_from {
                continue;
            }
            for p in poll(series, ts) {
                let got = raw.get(&(p.series().to_string(), p.timestamp));
                assert_eq!(
                    got,
                    Some(&p.value),
                    "round {round}: poll {i} (acked up to {acked}) lost {}",
                    p.series()
                );
                checked += 1;
            }
        }
        assert!(
            checked > 0,
            "round {round}: nothing acknowledged was checked"
        );
        store.close().unwrap();
        next = acked + 1;
    }
}

#[test]
fn kill_9_loses_no_acknowledged_point() {
    kill_9_rounds(255, &[150, 400, 900, 60]);
}

/// The same at the scale of 10,000 resources x 4 metrics, shortened.
#[test]
fn kill_9_at_40_000_series_loses_no_acknowledged_point() {
    kill_9_rounds(40_000, &[300, 1500]);
}

#[test]
fn readers_are_answered_during_heavy_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("metrics.db"))).unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..3000 {
                let ts = T0 + i * 5;
                loop {
                    match store.write_batch(&poll(255, ts)) {
                        Ok(_) => break,
                        Err(e) if e.is_overloaded() => std::thread::sleep(Duration::from_millis(5)),
                        Err(e) => panic!("{e}"),
                    }
                }
                if i % 60 == 0 {
                    store.rollup(ts * 1000).unwrap();
                }
            }
            store.flush().unwrap();
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut answers = 0;
                let mut last_series = 0;
                while answers < 200 {
                    let now = (T0 + 3000 * 5) * 1000;
                    let range = TimeRange::last(
                        Duration::from_secs(if r == 0 { 3600 } else { 86_400 }),
                        now,
                    );
                    let many = store
                        .query_many(&SeriesFilter::default(), range, Some(120))
                        .unwrap();
                    assert!(many.series.len() >= last_series, "series never disappear");
                    last_series = many.series.len();
                    for (_, pts) in &many.series {
                        assert!(pts.len() <= 120);
                        assert!(pts.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
                    }
                    answers += 1;
                }
                answers
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        assert_eq!(r.join().unwrap(), 200);
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.total_writes, 3000 * 255);
    // Rollups drop raw points past the 2 h retention once folded.
    assert!(
        stats.raw_count >= 1440 * 255 && stats.raw_count < 3000 * 255,
        "{}",
        stats.raw_count
    );
    store.close().unwrap();
}

#[test]
fn bad_batches_store_nothing_and_name_every_bad_point() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("metrics.db"))).unwrap();
    let mut batch = poll(5, T0);
    batch[1].value = f64::NAN;
    batch[3].resource_id = String::new();
    batch[4].timestamp = -1;
    let err = store.write_batch(&batch).unwrap_err();
    assert!(err.is_invalid_input());
    let bad: Vec<usize> = err
        .point_errors()
        .unwrap()
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(bad, [1, 3, 4]);
    assert!(err.point_errors().unwrap()[0].reason.contains("value"));
    assert!(err.point_errors().unwrap()[1].reason.contains("resourceId"));
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().raw_count, 0);
    assert_eq!(store.stats().unwrap().total_writes, 0);
    store.close().unwrap();
}

#[test]
fn a_full_queue_refuses_and_counts_instead_of_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("metrics.db"))).unwrap();
    let too_many: Vec<Point> = (0..pulse_metrics::store::QUEUE_CAPACITY + 1)
        .map(|i| Point::new(&key(i % 10), 1.0, (T0 + i as i64) * 1000))
        .collect();
    let err = store.write_batch(&too_many).unwrap_err();
    assert!(err.is_overloaded(), "{err}");
    let stats = store.stats().unwrap();
    assert_eq!(stats.dropped_writes, too_many.len() as u64);
    assert_eq!(stats.raw_count, 0);
    store.write_batch(&too_many[..1000]).unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().unwrap().raw_count, 1000);
    store.close().unwrap();
}

#[test]
fn foreign_corrupt_and_newer_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let assert_refused = |path: &Path, needle: &str| {
        let before = std::fs::read(path).unwrap();
        let err = Store::open(config(path)).err().expect("refused");
        assert!(err.is_refused_file(), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
        assert_eq!(std::fs::read(path).unwrap(), before, "file changed");
    };

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are not metrics\n".repeat(100)).unwrap();
    assert_refused(&text, "not an SQLite database");

    let foreign = dir.path().join("pulse.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE metrics (id INTEGER PRIMARY KEY, value REAL); INSERT INTO metrics VALUES (1, 2.0);")
        .unwrap();
    drop(conn);
    assert_refused(&foreign, "import-pulse");

    let newer = dir.path().join("newer.db");
    Store::open(config(&newer)).unwrap().close().unwrap();
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert_refused(&newer, "newer");

    let corrupt = dir.path().join("corrupt.db");
    let store = Store::open(config(&corrupt)).unwrap();
    for i in 0..200 {
        store.write_batch(&poll(255, T0 + i * 5)).unwrap();
    }
    store.rollup((T0 + 3 * 3600) * 1000).unwrap();
    store.close().unwrap();
    let mut bytes = std::fs::read(&corrupt).unwrap();
    assert!(bytes.len() > 5 * 4096);
    for b in &mut bytes[2 * 4096..4 * 4096] {
        *b = 0x5a;
    }
    std::fs::write(&corrupt, &bytes).unwrap();
    assert_refused(&corrupt, "corrupt");
}

#[cfg(unix)]
#[test]
fn the_database_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/metrics.db");
    let store = Store::open(config(&path)).unwrap();
    store.write_batch(&poll(3, T0)).unwrap();
    store.flush().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    store.close().unwrap();
}

#[test]
fn retention_never_prunes_what_is_not_rolled_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("metrics.db"))).unwrap();
    // Day-old raw points, never rolled up; prune as of now.
    for i in 0..120 {
        store.write_batch(&poll(3, T0 + i * 30)).unwrap();
    }
    let now = (T0 + 86_400) * 1000;
    store.prune(now).unwrap();
    assert_eq!(
        store.stats().unwrap().raw_count,
        360,
        "raw kept until folded"
    );
    store.maintain(now).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(stats.raw_count, 0, "folded, then pruned");
    assert_eq!(stats.minute_count, 60 * 3);
    assert_eq!(stats.hourly_count, 3);
    let day = store
        .query(
            &key(0),
            TimeRange::last(Duration::from_secs(2 * 86_400), now),
            None,
        )
        .unwrap();
    assert_eq!(day.tier, Tier::Hourly);
    assert_eq!(day.points.iter().map(|p| p.count).sum::<u64>(), 120);
    store.close().unwrap();
}

#[test]
fn the_pass_that_seals_an_hour_prunes_expired_minutes_first() {
    // The seal deletes what retention no longer keeps in its own commit
    // (the pages freed are the ones its new chunks take: written once), so
    // the hourly retention pass finds nothing left to delete in the tiers.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("metrics.db"));
    cfg.retention.minute = Duration::from_secs(2 * 3600);
    let store = Store::open(cfg).unwrap();
    let start = T0 - 5 * 3600;
    let mut ts = start;
    let mut expired_by_seals = 0;
    while ts < T0 + 10 * 60 {
        store.write_batch(&poll(6, ts)).unwrap();
        ts += 5;
        if ts % 300 == 0 {
            let r = store.rollup(ts * 1000).unwrap();
            let [minute, hourly, daily] = r.expired_buckets;
            assert_eq!((hourly, daily), (0, 0));
            if ts % 3600 != 0 {
                assert_eq!(minute, 0, "only an hour's close moves the minute floor");
            } else if ts - start > 3 * 3600 {
                // An hour of 6 series leaves at each close from the third.
                assert_eq!(minute, 6 * 60, "at {ts}");
                assert_eq!(r.floors[1], (ts - 2 * 3600) * 1000);
            }
            expired_by_seals += minute;
        }
    }
    assert_eq!(expired_by_seals, 6 * 60 * 3);
    let pruned = store.prune(ts * 1000).unwrap();
    assert_eq!(
        (
            pruned.minute_buckets,
            pruned.hourly_buckets,
            pruned.daily_buckets
        ),
        (0, 0, 0)
    );
    assert_eq!(pruned.floors[1], (T0 - 2 * 3600) * 1000);
    let mut oldest_minute = i64::MAX;
    store
        .export(Tier::Minute, |_, p| {
            oldest_minute = oldest_minute.min(p.timestamp);
            Ok(())
        })
        .unwrap();
    assert_eq!(oldest_minute, (T0 - 2 * 3600) * 1000);
    // Two sealed hours and the open hour's ten closed minutes.
    assert_eq!(store.stats().unwrap().minute_count, 6 * (60 * 2 + 10));

    // A maintenance run reports what it removed, whichever pass did it.
    let later = T0 + 3600 + 5 * 60;
    for t in (ts..later).step_by(5) {
        store.write_batch(&poll(6, t)).unwrap();
    }
    let m = store.maintain(later * 1000).unwrap();
    assert_eq!(m.rollup.expired_buckets[0], 6 * 60);
    assert_eq!(m.prune.minute_buckets, 6 * 60);
    assert_eq!(store.stats().unwrap().minute_count, 6 * (60 * 2 + 5));
    store.close().unwrap();
}

#[test]
fn memory_only_mode_answers_and_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.db");
    let store = Store::open(MetricsConfig {
        enabled: false,
        ..config(&path)
    })
    .unwrap();
    for i in 0..100 {
        store.write_batch(&poll(6, T0 + i * 5)).unwrap();
    }
    store.flush().unwrap();
    store.rollup((T0 + 600) * 1000).unwrap();
    let h = store
        .query(
            &key(0),
            TimeRange::last(Duration::from_secs(3600), (T0 + 600) * 1000),
            None,
        )
        .unwrap();
    assert_eq!(h.points.len(), 100);
    let stats = store.stats().unwrap();
    assert!(!stats.enabled);
    assert_eq!(stats.minute_count, 6 * 9, "minutes 0..=8 closed by T0+600");
    store.close().unwrap();
    assert!(!path.exists(), "nothing written to disk");
    let again = Store::open(MetricsConfig {
        enabled: false,
        ..config(&path)
    })
    .unwrap();
    assert_eq!(
        again.stats().unwrap().raw_count,
        0,
        "memory only: gone after restart"
    );
}

#[test]
fn a_lone_point_is_flushed_within_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = MetricsConfig {
        flush_interval: Duration::from_millis(200),
        ..config(&dir.path().join("metrics.db"))
    };
    let store = Store::open(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the writer is idle
    store.write_batch(&poll(3, T0)).unwrap(); // fewer than write_buffer
    let started = Instant::now();
    while store.stats().unwrap().raw_count < 3 {
        assert!(started.elapsed() < Duration::from_secs(5), "never flushed");
        std::thread::sleep(Duration::from_millis(20));
    }
    store.close().unwrap();
}

#[test]
fn coarser_tiers_fill_in_without_overlapping_finer_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("metrics.db"))).unwrap();
    // Hourly history from an import, then collection starting mid-hour.
    let k = key(0);
    let hourly: Vec<_> = (1..=5)
        .map(|h| {
            let ts = (T0 - h * 3600) * 1000;
            (
                k.clone(),
                pulse_metrics::HistoryPoint {
                    timestamp: ts,
                    value: 50.0,
                    min: 40.0,
                    max: 60.0,
                    count: 60,
                },
            )
        })
        .collect();
    store.import_buckets(Tier::Hourly, &hourly).unwrap();
    for i in 0..60 {
        store
            .write_batch(&[Point::new(&k, 1.0, (T0 - 1800 + i * 60) * 1000)])
            .unwrap();
    }
    let now = (T0 + 1800) * 1000;
    store.rollup(now).unwrap();
    let h = store
        .query(
            &k,
            TimeRange::last(Duration::from_secs(12 * 3600), now),
            None,
        )
        .unwrap();
    assert_eq!(h.tier, Tier::Minute);
    let first_minute = (T0 - 1800) * 1000;
    let coarse: Vec<_> = h
        .points
        .iter()
        .filter(|p| p.timestamp < first_minute)
        .collect();
    assert_eq!(
        coarse.len(),
        4,
        "the hourly buckets that end before minute data starts"
    );
    assert!(
        coarse
            .iter()
            .all(|p| p.timestamp + 3_600_000 <= first_minute)
    );
    assert_eq!(
        h.points.iter().map(|p| p.count).sum::<u64>(),
        4 * 60 + 60,
        "nothing counted twice"
    );
    store.close().unwrap();
}

#[test]
fn a_query_over_millennia_costs_what_the_data_costs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("metrics.db"))).unwrap();
    for i in 0..20 {
        store.write_batch(&poll(12, T0 + i * 60)).unwrap();
    }
    store.rollup((T0 + 7200) * 1000).unwrap();
    let everything = TimeRange {
        start: 0,
        end: pulse_metrics::model::MAX_TIMESTAMP_MS,
        now: (T0 + 7200) * 1000,
    };
    let started = Instant::now();
    let one = store.query(&key(0), everything, None).unwrap();
    let many = store
        .query_many(&SeriesFilter::default(), everything, Some(100))
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(one.tier, Tier::Daily);
    assert_eq!(
        one.points.iter().map(|p| p.count).sum::<u64>(),
        20,
        "every point, from the finest tier that has it"
    );
    assert_eq!(many.series.len(), 12);
    store.close().unwrap();
}

/// `oldestDataTimestamp` is where the data begins, not the start of the
/// coarse bucket that holds it: a service started at 12:58 has history
/// since 12:58 (the UI says "collecting history since ..."), down to the
/// minute once raw points are gone, and to the hour once minutes are too.
#[test]
fn oldest_data_is_the_first_point_not_its_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(&dir.path().join("m.db"))).unwrap();
    // T0 is midnight UTC; data from 12:58:30, every 5 s for 5 h.
    let first = T0 + 12 * 3600 + 58 * 60 + 30;
    let mut ts = first;
    while ts < first + 5 * 3600 {
        store.write_batch(&poll(3, ts)).unwrap();
        ts += 5;
    }
    store.flush().unwrap();
    let oldest = |store: &Store| store.stats().unwrap().oldest_data_timestamp / 1000;
    assert_eq!(oldest(&store), first, "raw points still held");
    // Rolled up and pruned as of 5 h later: raw before 15:58 is gone, the
    // 12:00 hour is sealed, and the minute tier still holds 12:58.
    let now = (first + 5 * 3600) * 1000;
    store.maintain(now).unwrap();
    assert_eq!(oldest(&store), first - 30, "the first minute bucket");
    // Two days later the minute tier has let 12:58 go: the hour is all
    // that is known.
    store.maintain(now + 2 * 86_400_000).unwrap();
    assert_eq!(oldest(&store), T0 + 12 * 3600, "the first hourly bucket");
    store.close().unwrap();
}

/// Restarts between rollups that seal nothing (they write no database row,
/// only a mark in the raw journal) keep every point and every open minute.
#[test]
fn restarts_between_rollups_keep_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.db");
    let mut ts = T0 + 60;
    let mut expected: Option<Dump> = None;
    for round in 0..4 {
        let store = Store::open(config(&path)).unwrap();
        if let Some(before) = &expected {
            assert_eq!(&dump(&store), before, "round {round}: changed by a restart");
            // A pass first thing after the restart, before any write.
            store.rollup(ts * 1000).unwrap();
        }
        for _ in 0..6 {
            store.write_batch(&poll(12, ts)).unwrap();
            ts += 5;
        }
        store.flush().unwrap();
        // Inside the same hour: minute buckets, nothing sealed.
        store.rollup(ts * 1000).unwrap();
        expected = Some(dump(&store));
        store.close().unwrap();
    }
    let store = Store::open(config(&path)).unwrap();
    let all = dump(&store);
    assert_eq!(Some(&all), expected.as_ref());
    let raw = all.keys().filter(|(t, _, _)| *t == Tier::Raw).count();
    assert_eq!(raw, 4 * 6 * 12);
    assert!(all.keys().any(|(t, _, _)| *t == Tier::Minute));
}
