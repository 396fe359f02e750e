//! The programs the bench runs: started, watched for readiness, stopped
//! as an init system stops them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A child process and the last lines it printed (for when it fails).
pub struct Running {
    child: Child,
    tail: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub fn new(mut child: Child, name: &'static str) -> Running {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let out = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for s in [out, err].into_iter().flatten() {
            let tail = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    let mut t = tail.lock().unwrap();
                    if t.len() >= 40 {
                        t.remove(0);
                    }
                    t.push(format!("{name}: {line}"));
                }
            });
        }
        Running { child, tail }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tail(&self) -> String {
        self.tail.lock().unwrap().join("\n")
    }

    pub async fn wait_ready(&mut self, client: &reqwest::Client, url: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{url}: exited with {status}:\n{}", self.tail());
            }
            assert!(Instant::now() < until, "{url} not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, as an init system stops it (both shut down in order); then
    /// SIGKILL after 30 s. Whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}
