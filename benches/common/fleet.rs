//! The simulated fleet and its values, shared by the benches (each
//! includes this file with `#[path]`), so that `workload` and `service`
//! feed the same series the same values.

use pulse_metrics::{Point, SeriesKey};

/// xorshift64* plus Box-Muller: deterministic and dependency-free.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// How the simulated values move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Random walks of full-precision doubles: CPU steps by ~2 % a poll,
    /// memory by ~0.2 %, disk by ~0.01 %, netin by ~10 kB/s. Every value
    /// differs in every bit from the last: the worst case for compression.
    Random,
    /// Shaped as the collector derives them from what Proxmox reports:
    /// `cpu` a fraction printed with 15 significant digits (Perl's JSON)
    /// times 100; `memory` used bytes (whole 4 KiB pages) over a
    /// power-of-two `maxmem` times 100; `disk` used bytes that change every
    /// ~10 minutes over the disk size times 100; `netin` a byte counter's
    /// change over the 5 s poll.
    Proxmox,
}

/// The series and how their values move.
pub struct Fleet {
    pub keys: Vec<SeriesKey>,
    values: Vec<f64>,
    /// Proxmox shape: each series' scale (maxmem, disk size) and its
    /// integer state (bytes used, counter).
    scale: Vec<f64>,
    count: Vec<u64>,
    model: Values,
    rng: Rng,
}

pub const METRICS: [&str; 4] = ["cpu", "memory", "disk", "netin"];

impl Fleet {
    pub fn new(resources: usize, metrics: usize, model: Values) -> Fleet {
        // 5 : 50 : 20 : 10 nodes, VMs, containers and storage, as the
        // typical install.
        let nodes = (resources * 5 / 85).max(1);
        let storage = resources * 10 / 85;
        let containers = resources * 20 / 85;
        let vms = resources - nodes - storage - containers;
        let mut keys = Vec::new();
        for (kind, n) in [
            ("node", nodes),
            ("vm", vms),
            ("container", containers),
            ("storage", storage),
        ] {
            for i in 0..n {
                let id = match kind {
                    "node" => format!("pve1:node{}", i + 1),
                    "storage" => format!("pve1:node{}:local-{}", i % nodes + 1, i),
                    "vm" => format!("pve1:{}", 100 + i),
                    _ => format!("pve1:{}", 100 + vms + i),
                };
                for metric in &METRICS[..metrics] {
                    keys.push(SeriesKey::new(kind, id.clone(), *metric));
                }
            }
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let values: Vec<f64> = keys.iter().map(|_| 10.0 + 70.0 * rng.unit()).collect();
        let gib = 1u64 << 30;
        let scale: Vec<f64> = keys
            .iter()
            .map(|k| match k.metric.as_str() {
                "memory" => (gib << (rng.next() % 5)) as f64,
                "disk" => (gib * (8 + rng.next() % 120)) as f64,
                _ => 1.0,
            })
            .collect();
        let count = keys
            .iter()
            .zip(&values)
            .zip(&scale)
            .map(|((k, v), s)| match k.metric.as_str() {
                "memory" => ((v / 100.0 * s) as u64) / 4096 * 4096,
                "disk" => (v / 100.0 * s) as u64,
                _ => 0,
            })
            .collect();
        Fleet {
            keys,
            values,
            scale,
            count,
            model,
            rng,
        }
    }

    pub fn poll(&mut self, ts: i64) -> Vec<Point> {
        (0..self.keys.len())
            .map(|i| {
                let v = match self.model {
                    Values::Random => self.random(i),
                    Values::Proxmox => self.proxmox(i),
                };
                Point::new(&self.keys[i], v, ts * 1000)
            })
            .collect()
    }

    fn random(&mut self, i: usize) -> f64 {
        let step = match self.keys[i].metric.as_str() {
            "cpu" => 2.0,
            "memory" => 0.2,
            "netin" => 10_000.0,
            _ => 0.01,
        };
        let cap = if self.keys[i].metric == "netin" {
            1e9
        } else {
            100.0
        };
        let v = (self.values[i] + step * self.rng.normal()).clamp(0.0, cap);
        self.values[i] = v;
        v
    }

    fn proxmox(&mut self, i: usize) -> f64 {
        match self.keys[i].metric.as_str() {
            "cpu" => {
                let f = (self.values[i] / 100.0 + 0.02 * self.rng.normal()).clamp(0.0, 1.0);
                // Perl's JSON prints 15 significant digits.
                let printed: f64 = format!("{f:.14e}").parse().unwrap();
                self.values[i] = printed * 100.0;
                printed * 100.0
            }
            "memory" => {
                let pages = (self.rng.normal() * 64.0) as i64;
                let used = (self.count[i] as i64 + pages * 4096).clamp(0, self.scale[i] as i64);
                self.count[i] = used as u64;
                used as f64 / self.scale[i] * 100.0
            }
            "disk" => {
                // About one write in 120 polls (10 minutes).
                if self.rng.next().is_multiple_of(120) {
                    self.count[i] += 4096 * (self.rng.next() % 2048);
                }
                self.count[i] as f64 / self.scale[i] * 100.0
            }
            _ => {
                let bytes = (self.rng.unit() * 2e6) as u64;
                self.count[i] += bytes;
                bytes as f64 / 5.0
            }
        }
    }
}
