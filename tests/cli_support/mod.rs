//! Running the real binary in a scratch directory.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_pulse-metrics");

/// A scratch directory the binary runs in (so `./data` lands inside it),
/// with a clean environment for the variables the binary reads.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        p
    }

    /// The default database (`$PULSE_DATA_DIR` unset, so `./data/metrics.db`).
    pub fn default_db(&self) -> PathBuf {
        self.path("data/metrics.db")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("PULSE_METRICS_CONFIG")
            .env_remove("PULSE_DATA_DIR")
            .env("NO_COLOR", "1");
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(self.command(args), None)
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Out {
        self.run_with(self.command(args), Some(input))
    }

    pub fn run_with(&self, mut c: Command, input: Option<&[u8]>) -> Out {
        c.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("start the binary");
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().unwrap();
            let bytes = bytes.to_vec();
            // Written from a thread so a large input cannot deadlock against stdout.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs with `--db <db>` first.
    pub fn on(&self, db: &Path, args: &[&str]) -> Out {
        let mut all = vec!["--db", db.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    pub fn on_stdin(&self, db: &Path, args: &[&str], input: &[u8]) -> Out {
        let mut all = vec!["--db", db.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run_stdin(&all, input)
    }
}

/// One JSON Lines point.
pub fn point(t: &str, id: &str, metric: &str, value: f64, ts: i64) -> String {
    serde_json::json!({
        "resourceType": t, "resourceId": id, "metric": metric, "value": value, "timestamp": ts
    })
    .to_string()
}

/// 2023-11-14T22:13:00Z, on a minute boundary.
pub const T0: i64 = 1_699_999_980_000;
