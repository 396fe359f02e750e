//! Accepting and keeping connections, within limits: a client must send its
//! request header promptly, a kept-alive connection is closed after a while
//! without requests, a request must finish within a deadline, and no more
//! connections are open than the process's file descriptors allow.
//!
//! Without these, sockets that send nothing (or half a header) stay open
//! for ever; at the descriptor limit `accept` fails and every request,
//! `/healthz` included, hangs. Here, when the cap is reached, the oldest
//! connection that is not in the middle of a request is closed to make room
//! (as nginx does with its idle keep-alive connections), so a new client
//! always gets in; with every connection busy, new ones wait in the
//! kernel's queue until one finishes.

use crate::config::ServerConfig;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// The `server` settings that govern connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(server: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            request_timeout: server.request_timeout,
            max_connections: server.max_connections,
        }
    }
}

/// Descriptors kept for everything but client connections: the database
/// and its WAL for the writer and every reader, collectors' sockets, the
/// runtime's own. A quarter of the limit, and never fewer than 128.
fn descriptor_reserve(limit: u64) -> u64 {
    (limit / 4).max(128)
}

/// The connection cap in effect: `max_connections`, lowered to what the
/// open-file limit leaves after the reserve. The soft limit is first raised
/// to the hard one, as most servers do.
fn effective_cap(configured: usize) -> usize {
    let Some(limit) = open_file_limit() else {
        return configured;
    };
    let room =
        usize::try_from(limit.saturating_sub(descriptor_reserve(limit))).unwrap_or(usize::MAX);
    if room >= configured {
        return configured;
    }
    let cap = room.max(8);
    tracing::warn!(
        "server.max_connections lowered from {configured} to {cap}: the open-file limit is {limit} (raise it with `ulimit -n` or LimitNOFILE=)"
    );
    cap
}

#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    if current.current != current.maximum {
        let raised = Rlimit {
            current: current.maximum,
            maximum: current.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_err() {
            tracing::debug!("cannot raise the open-file soft limit to the hard limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

/// What a connection is doing, which decides how long it may stay so.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for the first byte of a request; `served` once it answered one.
    Idle { since: Instant, served: bool },
    /// Part of a request header has arrived.
    Reading { since: Instant },
    /// Answering `requests` requests (the answer's body included).
    Busy { since: Instant, requests: usize },
}

struct Slot {
    id: u64,
    phase: Mutex<Phase>,
    /// Wakes the connection's task: its phase changed, or it must close.
    wake: Notify,
    evicted: AtomicBool,
    /// The registry's: a connection went idle.
    went_idle: Arc<Notify>,
}

impl Slot {
    fn deadline(&self, limits: &Limits) -> Instant {
        match *self.phase.lock() {
            Phase::Idle {
                since,
                served: false,
            } => since + limits.header_read_timeout,
            Phase::Idle {
                since,
                served: true,
            } => since + limits.idle_timeout,
            Phase::Reading { since } => since + limits.header_read_timeout,
            Phase::Busy { since, .. } => since + limits.request_timeout,
        }
    }

    /// Bytes arrived: an idle connection is now reading a header.
    fn read_some(&self) {
        let mut phase = self.phase.lock();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Reading {
                since: Instant::now(),
            };
            drop(phase);
            self.wake.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut phase = self.phase.lock();
        *phase = match *phase {
            Phase::Busy { since, requests } => Phase::Busy {
                since,
                requests: requests + 1,
            },
            _ => Phase::Busy {
                since: Instant::now(),
                requests: 1,
            },
        };
        drop(phase);
        self.wake.notify_one();
        InFlight(self.clone())
    }

    fn is_evictable(&self) -> Option<(bool, Instant)> {
        match *self.phase.lock() {
            Phase::Idle { since, .. } => Some((false, since)),
            Phase::Reading { since } => Some((true, since)),
            Phase::Busy { .. } => None,
        }
    }
}

/// A request in progress on a connection, until its answer has been sent.
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let slot = &self.0;
        let mut phase = slot.phase.lock();
        let idle = match *phase {
            Phase::Busy { since, requests } if requests > 1 => {
                *phase = Phase::Busy {
                    since,
                    requests: requests - 1,
                };
                false
            }
            _ => {
                *phase = Phase::Idle {
                    since: Instant::now(),
                    served: true,
                };
                true
            }
        };
        drop(phase);
        slot.wake.notify_one();
        if idle {
            slot.went_idle.notify_waiters();
        }
    }
}

/// Every open connection, oldest first.
#[derive(Default)]
struct Registry {
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
    /// A connection closed or went idle: room may be made.
    changed: Arc<Notify>,
}

impl Registry {
    fn add(&self, id: u64) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            id,
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
                served: false,
            }),
            wake: Notify::new(),
            evicted: AtomicBool::new(false),
            went_idle: self.changed.clone(),
        });
        self.slots.lock().insert(id, slot.clone());
        slot
    }

    fn remove(&self, id: u64) {
        self.slots.lock().remove(&id);
        self.changed.notify_waiters();
    }

    fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Asks the connection that waited longest without a request (idle
    /// before half-read) to close, sparing `keep`. False when all are busy.
    fn evict_one(&self, keep: u64) -> bool {
        let victim = self
            .slots
            .lock()
            .values()
            .filter(|s| s.id != keep && !s.evicted.load(Ordering::Relaxed))
            .filter_map(|s| s.is_evictable().map(|k| (k, s.clone())))
            .min_by_key(|(k, _)| *k)
            .map(|(_, s)| s);
        match victim {
            Some(slot) => {
                slot.evicted.store(true, Ordering::Relaxed);
                slot.wake.notify_one();
                true
            }
            None => false,
        }
    }
}

/// The socket, telling its slot when request bytes arrive.
struct Watched {
    io: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.slot.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `shutdown` turns true; then stops
/// accepting, lets every connection finish its request, and returns once
/// all are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let cap = effective_cap(limits.max_connections);
    let registry = Arc::new(Registry::default());
    let mut next_id: u64 = 0;
    let mut warned_full: Option<Instant> = None;
    'accept: loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) {
                    // Out of descriptors despite the cap (something else
                    // holds them): free one and try again shortly.
                    if warned_full.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!("accept failed: {e}; closing idle connections");
                        warned_full = Some(Instant::now());
                    }
                    registry.evict_one(u64::MAX);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let slot = registry.add(next_id);
        tokio::spawn(connection(
            stream,
            slot,
            router.clone(),
            limits,
            shutdown.clone(),
            registry.clone(),
        ));
        // Make room before accepting the next one.
        loop {
            let changed = registry.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if registry.len() <= cap {
                break;
            }
            if warned_full.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(
                    "{cap} connections open (server.max_connections): closing the longest idle ones to make room"
                );
                warned_full = Some(Instant::now());
            }
            registry.evict_one(next_id);
            tokio::select! {
                _ = changed => {}
                _ = shutdown.wait_for(|stop| *stop) => break 'accept,
            }
        }
    }
    drop(listener);
    // Every connection saw the signal and closes once its request is done.
    loop {
        let changed = registry.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if registry.len() == 0 {
            return;
        }
        changed.await;
    }
}

async fn connection(
    stream: TcpStream,
    slot: Arc<Slot>,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    registry: Arc<Registry>,
) {
    let io = TokioIo::new(Watched {
        io: stream,
        slot: slot.clone(),
    });
    let requests = slot.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let in_flight = requests.begin();
        let router = router.clone();
        async move {
            let resp: Response<Body> = router.oneshot(req).await.unwrap_or_else(|e| match e {});
            // The request counts as in progress until its body is sent.
            Ok::<_, Infallible>(resp.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = slot.deadline(&limits);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!("connection ended: {e}");
                }
                break;
            }
            _ = slot.wake.notified() => {
                if slot.evicted.load(Ordering::Relaxed) {
                    tracing::debug!("closing an idle connection to make room for a new one");
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if slot.deadline(&limits) <= Instant::now() {
                    let phase = *slot.phase.lock();
                    match phase {
                        Phase::Busy { .. } => tracing::warn!(
                            "a request took longer than server.request_timeout ({:?}); its connection is closed",
                            limits.request_timeout
                        ),
                        _ => tracing::debug!("closing a connection that sent no request in time"),
                    }
                    break;
                }
            }
            _ = shutdown.wait_for(|stop| *stop), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    registry.remove(slot.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_leaves_room_for_the_store() {
        assert_eq!(descriptor_reserve(256), 128);
        assert_eq!(descriptor_reserve(1024), 256);
        assert_eq!(descriptor_reserve(65_536), 16_384);
    }
}
