//! The service's bytes over the window, told apart: the steady appends,
//! and the database writes (an hour closing, a checkpoint).

use crate::window::Look;
use crate::{HOUR_MS, ROLLUP};
use std::time::Duration;

/// A stretch of looks in which the database files changed: a rollup that
/// closed an hour, a checkpoint, new series.
pub struct DbWrite {
    pub wall: i64,
    pub secs: f64,
    /// Beyond what the steady appends wrote meanwhile.
    pub write_bytes: f64,
    pub wchar: f64,
    /// Within a rollup interval (and a minute) after an hour closed.
    pub hour_close: bool,
}

/// The service's bytes over the window, split into the seconds without a
/// database write (journal appends, rollups that closed nothing) and the
/// database writes.
pub struct Split {
    pub steady_secs: f64,
    pub steady_write_bytes: f64,
    pub steady_wchar: f64,
    pub db_writes: Vec<DbWrite>,
}

impl Split {
    pub fn of(looks: &[Look]) -> Split {
        let mut s = Split {
            steady_secs: 0.0,
            steady_write_bytes: 0.0,
            steady_wchar: 0.0,
            db_writes: Vec::new(),
        };
        let mut open: Option<DbWrite> = None;
        for pair in looks.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let dt = b.t - a.t;
            let wb = (b.service.write_bytes - a.service.write_bytes) as f64;
            let wc = (b.service.wchar - a.service.wchar) as f64;
            if b.db_changed {
                let e = open.get_or_insert(DbWrite {
                    wall: a.wall,
                    secs: 0.0,
                    write_bytes: 0.0,
                    wchar: 0.0,
                    hour_close: a.wall.rem_euclid(HOUR_MS)
                        <= (ROLLUP + Duration::from_secs(60)).as_millis() as i64,
                });
                e.secs += dt;
                e.write_bytes += wb;
                e.wchar += wc;
            } else {
                s.db_writes.extend(open.take());
                s.steady_secs += dt;
                s.steady_write_bytes += wb;
                s.steady_wchar += wc;
            }
        }
        s.db_writes.extend(open.take());
        let (wb, wc) = (s.steady_write_bytes_rate(), s.steady_wchar_rate());
        for e in &mut s.db_writes {
            e.write_bytes = (e.write_bytes - wb * e.secs).max(0.0);
            e.wchar = (e.wchar - wc * e.secs).max(0.0);
        }
        s
    }

    pub fn steady_write_bytes_rate(&self) -> f64 {
        self.steady_write_bytes / self.steady_secs.max(1e-9)
    }

    pub fn steady_wchar_rate(&self) -> f64 {
        self.steady_wchar / self.steady_secs.max(1e-9)
    }

    /// Bytes of one hour's closing, the average of those in the window.
    pub fn hour_close(&self) -> Option<f64> {
        let closes: Vec<f64> = self
            .db_writes
            .iter()
            .filter(|e| e.hour_close)
            .map(|e| e.write_bytes)
            .collect();
        (!closes.is_empty()).then(|| closes.iter().sum::<f64>() / closes.len() as f64)
    }

    /// Database writes other than hour closings, per second of window.
    pub fn other_rate(&self, secs: f64) -> f64 {
        self.db_writes
            .iter()
            .filter(|e| !e.hour_close)
            .map(|e| e.write_bytes)
            .sum::<f64>()
            .max(0.0)
            / secs
    }
}
