//! The polls: at every 5 s of the wall clock the fleet's next values,
//! POSTed to the service and served on the page Prometheus scrapes.

use crate::fleet::Fleet;
use crate::prometheus;
use crate::running::now_ms;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLL_MS: i64 = crate::POLL_MS;

/// The page Prometheus scrapes: the latest poll, and how the scrapes went.
#[derive(Default)]
pub struct Page {
    pub text: Mutex<(u64, String)>,
    pub scrapes: AtomicU64,
    /// Scrapes that got the same poll as the one before (no new value).
    pub repeats: AtomicU64,
    pub last_served: AtomicU64,
}

pub async fn serve_page(page: Arc<Page>, listener: tokio::net::TcpListener) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let page = page.clone();
            async move {
                let (generation, text) = page.text.lock().unwrap().clone();
                page.scrapes.fetch_add(1, Ordering::Relaxed);
                if page.last_served.swap(generation, Ordering::Relaxed) == generation {
                    page.repeats.fetch_add(1, Ordering::Relaxed);
                }
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    text,
                )
            }
        }),
    );
    axum::serve(listener, app).await.expect("serve the page");
}

#[derive(Default)]
pub struct Feed {
    pub polls: AtomicU64,
    pub failures: AtomicU64,
    pub slowest_ms: AtomicU64,
}

/// At every 5 s of the wall clock until `done`: the fleet's next poll,
/// POSTed to the service and put on Prometheus's page.
pub async fn feed(
    mut fleet: Fleet,
    url: String,
    page: Arc<Page>,
    feed: Arc<Feed>,
    done: Arc<AtomicBool>,
) {
    let client = reqwest::Client::new();
    let mut generation = 0;
    while !done.load(Ordering::Relaxed) {
        let now = now_ms();
        let next = (now / POLL_MS + 1) * POLL_MS;
        tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
        let points = fleet.poll(next / 1000);
        generation += 1;
        *page.text.lock().unwrap() = (generation, prometheus::exposition(&points));
        let body = serde_json::to_vec(&serde_json::json!({ "points": points })).unwrap();
        let started = Instant::now();
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        feed.slowest_ms
            .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match r {
            Ok(r) if r.status().is_success() => {
                feed.polls.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                feed.failures.fetch_add(1, Ordering::Relaxed);
                let status = r.status();
                eprintln!(
                    "write refused: {status} {}",
                    r.text().await.unwrap_or_default()
                );
            }
            Err(e) => {
                feed.failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("write failed: {e}");
            }
        }
    }
}
