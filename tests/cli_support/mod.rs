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

    /// `on`, for a command that should end by itself (a refused `serve`):
    /// killed after `secs` seconds, which the caller sees as exit -1.
    pub fn on_within(&self, db: &Path, args: &[&str], secs: u64) -> Out {
        let mut all = vec!["--db", db.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(secs) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
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

/// `pulse-metrics ... serve` running as a child process.
pub struct Service {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`, as printed on the `listening on` line.
    pub addr: String,
    /// Every stderr line so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Service {
    /// Starts `command` (which must end in `serve --listen 127.0.0.1:0` or
    /// equivalent) and waits for its `listening on` line.
    pub fn start(mut command: Command) -> Service {
        use std::io::BufRead;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the service");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line[i + "listening on http://".len()..].trim().to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(addr) => Service { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no `listening on` line within 60 s; stderr:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("no exit within 30 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange over a fresh connection, exactly as written:
/// `request` is sent as is (it should say `Connection: close`), and the
/// answer is read to the end (or for at most 10 s).
pub fn raw_http(addr: &str, request: &[u8]) -> RawResponse {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request).expect("send the request");
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    RawResponse::parse(&bytes)
}

/// An HTTP answer as received.
pub struct RawResponse {
    /// The status of the first answer (`100` for `100 Continue`); 0 if none.
    pub status: u16,
    /// Header lines of the first answer, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl std::fmt::Debug for RawResponse {
    /// Long bodies are cut: a failed assertion should fit on a screen.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = self
            .body
            .char_indices()
            .nth(600)
            .map_or(self.body.len(), |(i, _)| i);
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &&self.body[..cut])
            .finish()
    }
}

impl RawResponse {
    pub fn parse(bytes: &[u8]) -> RawResponse {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        RawResponse {
            status,
            headers,
            body: body.to_string(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (a chunked body is not decoded: ask with HTTP/1.0
    /// or read small answers, which come with a Content-Length).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}
