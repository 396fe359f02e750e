//! The web UI, embedded in the binary. Owned by the UI issue.

/// Routes serving the UI at `/` (static files; the API lives under `/api`).
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html("<!doctype html><title>pulse-metrics</title><p>pulse-metrics: the web UI is not built yet.</p>") }),
    )
}
