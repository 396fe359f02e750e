//! Line protocol over UDP (`ingest.influx.udp`), Proxmox's default metric
//! server transport: one datagram holds one or more whole lines (Proxmox
//! fills each up to its MTU setting). Nobody can be answered, so each good
//! line is stored and each bad one counted on the status board and logged.

use super::App;
use crate::config::InfluxConfig;
use crate::influx::{Mode, Precision, PushError, Receiver};
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Bad input is logged at most this often (with a count of what was not).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Binds `ingest.influx.udp` when it is set and receives on it until `stop`
/// turns true; the bound address is kept for [`App::udp_addr`] and printed.
/// A port that cannot be bound is an error: the service does not start.
pub async fn start(
    app: &App,
    config: &InfluxConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if config.udp.is_empty() {
        return Ok(None);
    }
    let socket = UdpSocket::bind(&config.udp)
        .await
        .with_context(|| format!("cannot listen on udp {} (ingest.influx.udp)", config.udp))?;
    let addr = socket.local_addr().context("udp socket has no address")?;
    let _ = app.state.udp_addr.set(addr);
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "line protocol over UDP on {addr} has no authentication: anyone who can reach it can write metrics; limit it with a firewall, or use HTTP with server.api_token"
        );
    }
    let key = crate::influx::board_key(&config.udp_instance);
    app.state
        .board
        .update(&key, |s| s.state = "listening".into());
    eprintln!("listening for line protocol on udp://{addr}");
    Ok(Some(spawn(
        socket,
        app.state.influx.clone(),
        config.udp_instance.clone(),
        stop,
    )))
}

/// Receives datagrams on `socket` for `instance` until `shutdown` turns true.
fn spawn(
    socket: UdpSocket,
    receiver: Arc<Receiver>,
    instance: String,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut log = Throttle::default();
        loop {
            let (n, from) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(got) => got,
                    Err(e) => {
                        // ICMP errors of earlier sends and the like: the
                        // socket itself goes on working.
                        tracing::debug!("udp line protocol: receive failed: {e}");
                        continue;
                    }
                },
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let datagram = buf[..n].to_vec();
            let receiver = receiver.clone();
            let inst = instance.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                receiver.push(&inst, &datagram, Precision::Nanoseconds, Mode::Lenient)
            })
            .await;
            match outcome {
                Ok(Ok(report)) => {
                    if let Some(first) = report.bad_lines.first() {
                        log.warn(format_args!(
                            "udp line protocol from {from}: {} bad line(s) skipped; first: {first}",
                            report.bad_lines.len()
                        ));
                    }
                }
                Ok(Err(e)) => log.warn(format_args!(
                    "udp line protocol from {from}: nothing stored: {}",
                    describe(&e)
                )),
                Err(e) => tracing::error!("udp line protocol: write task failed: {e}"),
            }
        }
        tracing::debug!("udp line protocol: stopped");
    })
}

fn describe(e: &PushError) -> String {
    match e {
        PushError::Store { error, .. } if error.is_overloaded() => {
            format!("{e} (the datagram's points are lost: UDP cannot be asked to resend)")
        }
        _ => e.to_string(),
    }
}

/// At most one log line per `LOG_EVERY`, saying how many were held back.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    fn warn(&mut self, message: std::fmt::Arguments<'_>) {
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.held += 1;
            return;
        }
        if self.held > 0 {
            tracing::warn!("{message} ({} similar messages not logged)", self.held);
        } else {
            tracing::warn!("{message}");
        }
        self.last = Some(Instant::now());
        self.held = 0;
    }
}
