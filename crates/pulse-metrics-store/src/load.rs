//! Opening an existing store: the series directory, the retention floors,
//! and the replay of the raw journal into memory, in named steps.
//!
//! A journalled point is needed if it is inside raw retention, or if it has
//! not been folded into the tier that would hold it (its batch `seq` is
//! newer than that chunk's `seq`). Everything else is skipped, which is how
//! a segment kept for its newer points does not fold its older ones twice.

use crate::error::{Error, Result, SqlContext};
use crate::journal::{self, Journal, Record, Segment};
use crate::model::SeriesKey;
use crate::raw::RawPoint;
use crate::rollup::{self, Fold};
use crate::schema::meta_get;
use crate::state::{ChunkTier, DAY, Floors, HOUR, SeriesEntry, State, floor_to};
use crate::{legacy, retention, tiers};
use rusqlite::Connection;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Where the raw points come from.
pub enum RawSource<'a> {
    /// An in-memory store: nothing to replay.
    None,
    /// The journal in this directory; `repair` cuts a torn tail off (writers
    /// only).
    Journal { dir: &'a Path, repair: bool },
    /// A file of schema version 1 or 2 (with a `raw_log` table) read
    /// without converting it (read-only).
    Legacy,
}

pub struct Loaded {
    pub state: State,
    pub fold: Fold,
    pub next_seq: u64,
    /// The journal's segments as replayed (empty for other sources).
    pub segments: Vec<Segment>,
}

impl Loaded {
    /// The journal a writer continues.
    pub fn journal(&mut self, dir: &Path) -> Journal {
        Journal::new(dir.to_path_buf(), std::mem::take(&mut self.segments))
    }
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::damaged(what)
}

#[tracing::instrument(skip_all, level = "debug")]
pub fn load(conn: &Connection, source: RawSource<'_>) -> Result<Loaded> {
    let floors = retention::restore_floors(conn)?;
    let mut fold = Fold {
        rolled_to: meta_get(conn, rollup::key::ROLLED_TO, 0)?,
        // The rollup that saved `rolled_to` had seen every batch before
        // the `next_seq` it saved with it.
        rolled_seq: (meta_get(conn, rollup::key::NEXT_SEQ, 1)?.max(1) - 1) as u64,
        folded_seq: meta_get(conn, rollup::key::FOLDED_SEQ, 0)?.max(0) as u64,
        ..Fold::default()
    };
    // What was committed before this open is as durable as it gets.
    fold.durable_seq = fold.folded_seq;
    fold.durable_raw_floor = floors.raw;
    let mut state = State {
        floors,
        ..State::default()
    };
    let route = read_series(conn, &mut state)?;
    count_buckets(conn, &mut state)?;
    let mut replay = Replay {
        conn,
        floors,
        folded_seq: fold.folded_seq,
        next_seq: meta_get(conn, rollup::key::NEXT_SEQ, 1)?.max(1) as u64,
        chunk_seqs: HashMap::new(),
        merge_targets: route
            .iter()
            .enumerate()
            .filter(|(sid, t)| *sid as u32 != **t)
            .map(|(_, t)| *t)
            .collect(),
        applied: HashMap::new(),
        route,
        state: &mut state,
        fold: &mut fold,
    };
    let segments = match source {
        RawSource::None => Vec::new(),
        RawSource::Journal { dir, repair } => {
            journal::replay_by_series(dir, repair, |p| replay.piece(p))?
        }
        RawSource::Legacy => {
            replay.records(legacy::records(conn)?)?;
            Vec::new()
        }
    };
    let next_seq = replay.next_seq;
    fold.reopen_hours(&mut state);
    fold.daily_pending = pending_days(conn, fold.rolled_to)?;
    Ok(Loaded {
        state,
        fold,
        next_seq,
        segments,
    })
}

/// The series directory; ids are dense from 0. Returns, per series, the
/// series its points belong to (itself, or the one it was merged into).
fn read_series(conn: &Connection, state: &mut State) -> Result<Vec<u32>> {
    let mut merged_into: Vec<Option<u32>> = Vec::new();
    let mut stmt = conn
        .prepare(
            "SELECT id, resource_type, resource_id, metric, merged_into FROM series ORDER BY id",
        )
        .ctx("read series")?;
    let mut rows = stmt.query([]).ctx("read series")?;
    while let Some(row) = rows.next().ctx("read series")? {
        let id: i64 = row.get(0).ctx("read series")?;
        if id != state.series.len() as i64 {
            return Err(corrupt(format!(
                "table series: ids are not dense (id {id} where {} was expected)",
                state.series.len()
            )));
        }
        let key = SeriesKey::new(
            row.get::<_, String>(1).ctx("read series")?,
            row.get::<_, String>(2).ctx("read series")?,
            row.get::<_, String>(3).ctx("read series")?,
        );
        let merged: Option<i64> = row.get(4).ctx("read series")?;
        merged_into.push(merged.map(|m| m as u32));
        state.series.push(SeriesEntry {
            key,
            raw: Default::default(),
        });
    }
    // Points of a merged series are the target's (see merge.rs).
    let route = crate::merge::routes(&merged_into)?;
    for (sid, s) in state.series.iter().enumerate() {
        state.ids.insert(s.key.clone(), route[sid]);
    }
    Ok(route)
}

fn count_buckets(conn: &Connection, state: &mut State) -> Result<()> {
    state.disk_buckets = tiers::restore_counts(conn)?;
    Ok(())
}

/// Days whose hourly buckets may still have to be rolled into a daily one:
/// every hourly chunk from the day of the last rollup on.
fn pending_days(conn: &Connection, rolled_to: i64) -> Result<BTreeSet<(i64, u32)>> {
    let mut out = BTreeSet::new();
    let first = ChunkTier::HOURLY.chunk_of(floor_to(rolled_to, DAY));
    let mut stmt = conn
        .prepare("SELECT key FROM hourly WHERE key >= ?1")
        .ctx("read hourly keys")?;
    let mut rows = stmt.query([first << 24]).ctx("read hourly keys")?;
    while let Some(row) = rows.next().ctx("read hourly keys")? {
        let (chunk, sid) = ChunkTier::split_key(row.get(0).ctx("read hourly keys")?);
        out.insert((ChunkTier::HOURLY.chunk_start(chunk), sid));
    }
    Ok(out)
}

/// Routes replayed batches into the raw tier and the fold.
struct Replay<'a> {
    conn: &'a Connection,
    floors: Floors,
    folded_seq: u64,
    next_seq: u64,
    /// `seq` of the chunks looked up so far, by (table, key).
    chunk_seqs: HashMap<(&'static str, i64), Option<u64>>,
    /// Per series id, the series its points belong to (merges).
    route: Vec<u32>,
    /// Series other series were merged into, and for their seconds the
    /// batch of the point applied (see `point`).
    merge_targets: std::collections::HashSet<u32>,
    applied: HashMap<(u32, i64), u64>,
    state: &'a mut State,
    fold: &'a mut Fold,
}

impl Replay<'_> {
    /// Applies what a series-by-series replay hands over (see
    /// `journal::replay_by_series`): each series' raw chunk is appended to
    /// while it is hot, where applying batch after batch would touch a
    /// different series at every point (at 40,000 series, a cache miss or
    /// four per point).
    fn piece(&mut self, piece: journal::Piece<'_>) -> Result<()> {
        match piece {
            journal::Piece::Segment(meta) => {
                if let Some(now) = meta.rolled_to {
                    self.fold.rolled_to = self.fold.rolled_to.max(now);
                }
                if let Some(seq) = meta.rolled_seq {
                    self.fold.rolled_seq = self.fold.rolled_seq.max(seq);
                }
                if let Some(last) = meta.last_seq {
                    self.next_seq = self.next_seq.max(last + 1);
                }
            }
            journal::Piece::Points(points) => {
                let series = self.state.series.len();
                for &(seq, ts, value, sid) in points {
                    if sid as usize >= series {
                        return Err(corrupt(format!(
                            "raw journal batch {seq}: a point of series {sid}, which the series table does not have"
                        )));
                    }
                    self.point(seq, self.route[sid as usize], RawPoint::at(ts, value))?;
                }
            }
        }
        Ok(())
    }

    /// Applies whole batches (the version 1 log read in place), in order.
    fn records(&mut self, records: Vec<Record>) -> Result<()> {
        let series = self.state.series.len();
        for r in &records {
            if let Some(now) = r.rolled_to {
                self.fold.rolled_to = self.fold.rolled_to.max(now);
                self.fold.rolled_seq = self.fold.rolled_seq.max(r.seq);
                continue;
            }
            self.next_seq = self.next_seq.max(r.seq + 1);
            for p in &r.points {
                if p.sid as usize >= series {
                    return Err(corrupt(format!(
                        "raw journal batch {}: a point of series {}, which the series table does not have",
                        r.seq, p.sid
                    )));
                }
                self.point(
                    r.seq,
                    self.route[p.sid as usize],
                    RawPoint::at(p.ts, p.value),
                )?;
            }
        }
        Ok(())
    }

    fn point(&mut self, seq: u64, sid: u32, point: RawPoint) -> Result<()> {
        let sealed = seq <= self.folded_seq || self.sealed(seq, sid, point.ts)?;
        if point.ts >= self.floors.raw {
            // A merge target gets the points of the series merged into it
            // from another run of the replay: of two in one second the
            // later write wins, whatever order they come in.
            if self.merge_targets.contains(&sid) {
                let newest = self.applied.entry((sid, point.ts)).or_insert(0);
                if *newest > seq {
                    return Ok(());
                }
                *newest = seq;
            }
            self.state.series[sid as usize].raw.upsert(point);
            if !sealed {
                self.fold.note(seq, sid, point, self.floors.raw);
            }
        } else if !sealed && self.fold.note(seq, sid, point, self.floors.raw) {
            self.state.late_points += 1;
        }
        Ok(())
    }

    /// Whether the chunk this point would be folded into (per the floors)
    /// already holds batch `seq`.
    fn sealed(&mut self, seq: u64, sid: u32, ts: i64) -> Result<bool> {
        let f = self.floors;
        let hour = floor_to(ts, HOUR);
        let day = floor_to(ts, DAY);
        let (tier, chunk) = if ts >= f.raw || hour >= f.minute {
            (ChunkTier::MINUTE, ChunkTier::MINUTE.chunk_of(ts))
        } else if day >= f.hourly {
            (ChunkTier::HOURLY, ChunkTier::HOURLY.chunk_of(day))
        } else if day >= f.daily {
            (ChunkTier::DAILY, ChunkTier::DAILY.chunk_of(day))
        } else {
            // Older than every tier: nothing would keep it.
            return Ok(true);
        };
        let key = (tier.table, tier.key(chunk, sid));
        let stored = match self.chunk_seqs.get(&key) {
            Some(s) => *s,
            None => {
                let s = tiers::seq(self.conn, tier, chunk, sid)?;
                self.chunk_seqs.insert(key, s);
                s
            }
        };
        Ok(stored.is_some_and(|s| s >= seq))
    }
}
