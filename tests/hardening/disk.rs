//! Case 9: a full disk. At start it was reported as a corrupt database
//! (inviting the deletion of a good file); at shutdown accepted points
//! vanished while the log said they "stay queued"; the queue bound was
//! overshot; after a failed job `lastError` said "see lastError".
//!
//! Runs on a small tmpfs (mounting needs root, which CI has); where no
//! tmpfs can be mounted the tests say so and skip.

use super::{JSON, Sandbox, ago, get, request, values};
use crate::cli_support::{Service, point};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted in the sandbox, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(sb: &Sandbox, size: &str) -> Option<Tmpfs> {
        let dir = sb.path("tmpfs");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!(
                    "SKIP disk-full case: cannot mount a tmpfs here ({other:?}); it needs root (CI runs as root)"
                );
                None
            }
        }
    }

    /// Fills the file system to the last byte.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 16 * 1024];
        while f.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        while f.write_all(&small[..1]).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn serve_on(sb: &Sandbox, db: &Path) -> Service {
    let config = sb.write(
        "config.yaml",
        "collectors:\n  host:\n    enabled: false\nmetrics:\n  flush_interval: 1s\n",
    );
    Service::start(sb.command(&[
        "--config",
        config.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]))
}

/// A write body of `n` points of series `id`, one second apart from `t0`.
fn body(id: &str, n: usize, t0: i64) -> Vec<u8> {
    let points: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"resourceType": "vm", "resourceId": id, "metric": "cpu", "value": i as f64, "timestamp": t0 - (i as i64 % 3600) * 1000})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "points": points })).unwrap()
}

#[test]
fn starting_on_a_full_disk_says_disk_full_and_where_not_corrupt() {
    let sb = Sandbox::new();
    let Some(fs) = Tmpfs::mount(&sb, "2m") else {
        return;
    };
    let db = fs.dir.join("metrics.db");
    let input = sb.write("p.jsonl", point("vm", "a", "cpu", 1.5, ago(30)));
    sb.on(&db, &["ingest", input.to_str().unwrap()]).ok();
    let filler = fs.fill();

    for args in [vec!["maintain"], vec!["serve", "--listen", "127.0.0.1:0"]] {
        let out = sb.on_within(&db, &args, 30).fails(1);
        assert!(
            out.stderr.contains("disk full") && out.stderr.contains(&fs.dir.display().to_string()),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("corrupt"), "{args:?}: {}", out.stderr);
    }
    // Reading needs no room at all.
    let s = sb.on(&db, &["stats"]).ok().json();
    assert_eq!(s["rawCount"], 1);

    // With room again, nothing was lost.
    std::fs::remove_file(filler).unwrap();
    let q = sb
        .on(
            &db,
            &[
                "query", "--type", "vm", "--id", "a", "--metric", "cpu", "--range", "1h",
            ],
        )
        .ok()
        .json();
    assert_eq!(q["points"][0]["value"], 1.5);
    sb.on(&db, &["maintain"]).ok();
    drop(fs);
}

#[test]
fn a_full_disk_bounds_the_queue_names_the_cause_and_counts_what_shutdown_loses() {
    let sb = Sandbox::new();
    let Some(fs) = Tmpfs::mount(&sb, "3m") else {
        return;
    };
    let db = fs.dir.join("metrics.db");
    let svc = serve_on(&sb, &db);
    let t0 = ago(10);
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON],
        &body("before", 100, t0),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let filler = fs.fill();

    // Accepted while the disk is full, never durable.
    let mut accepted = 0u64;
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON],
        &body("full", 2000, t0),
    );
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("disk is full"), "{r:?}");
    accepted += 2000;
    let stats = get(&svc, "/api/metrics-store/stats").json();
    assert!(
        stats["lastError"]
            .as_str()
            .unwrap()
            .contains("disk is full"),
        "{stats}"
    );

    // A job that needs the flush fails with the flush's own cause.
    let r = request(&svc, "POST", "/api/metrics-store/maintenance", &[], b"");
    assert_eq!(r.status, 500, "{r:?}");
    let last = get(&svc, "/api/metrics-store/stats").json()["lastError"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        last.contains("maintenance failed") && last.contains("disk is full"),
        "{last}"
    );
    assert!(!last.contains("see lastError"), "{last}");

    // The queue takes exactly its capacity, however the retries interleave.
    let capacity = get(&svc, "/api/metrics-store/stats").json()["queueCapacity"]
        .as_u64()
        .unwrap();
    let big = body("bulk", 50_000, t0);
    let small = body("bulk", 1_000, t0);
    let mut most = 0u64;
    let mut first_refusal: Option<std::time::Instant> = None;
    // Fill it, then keep knocking for a few seconds: the writer retries
    // every second, taking the whole queue out for each attempt.
    while first_refusal.is_none_or(|t| t.elapsed() < std::time::Duration::from_millis(3500)) {
        let (b, n) = if accepted + 50_000 <= capacity {
            (&big, 50_000)
        } else {
            (&small, 1_000)
        };
        let r = request(&svc, "POST", "/api/metrics-store/write", &[JSON], b);
        match r.status {
            200 => accepted += n,
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
                first_refusal.get_or_insert_with(std::time::Instant::now);
            }
            _ => panic!("{r:?}"),
        }
        let pending = get(&svc, "/api/metrics-store/stats").json()["bufferSize"]
            .as_u64()
            .unwrap();
        most = most.max(pending);
    }
    assert!(
        most <= capacity,
        "{most} points queued against a bound of {capacity}"
    );
    let pending = get(&svc, "/api/metrics-store/stats").json()["bufferSize"]
        .as_u64()
        .unwrap();
    assert_eq!(
        pending, accepted,
        "queued points do not match the accepted ones"
    );
    assert!(
        pending <= capacity && capacity - pending < 1_000,
        "{pending} of {capacity}"
    );

    // SIGTERM with the disk still full: retried until the drain limit, then
    // exactly the pending points are reported lost, and the exit says so.
    let log = svc.log.clone();
    let code = svc.stop();
    let text = log.lock().unwrap().join("\n");
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!("{accepted} accepted points could not be flushed"))
            && text.contains("lost"),
        "{text}"
    );
    assert!(!text.contains("stay queued and are retried"), "{text}");

    // With room again: what was acknowledged before is there.
    std::fs::remove_file(filler).unwrap();
    let svc = serve_on(&sb, &db);
    assert_eq!(values(&svc, "before").len(), 100);
    assert_eq!(values(&svc, "full").len(), 0);

    // Room that comes back while the store closes is used: the final flush
    // is retried, not abandoned at its first failure.
    let filler = fs.fill();
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write",
        &[JSON],
        &body("late", 3000, t0),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let _ = Command::new("kill")
        .args(["-TERM", &svc.child.id().to_string()])
        .status();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    std::fs::remove_file(filler).unwrap();
    let log = svc.log.clone();
    let code = svc.stop();
    assert_eq!(code, 0, "{}", log.lock().unwrap().join("\n"));
    let svc = serve_on(&sb, &db);
    assert_eq!(values(&svc, "late").len(), 3000);
    assert_eq!(svc.stop(), 0);
    drop(fs);
}
