//! `ingest`: whole-input validation with bounded memory.
//!
//! Without `--skip-invalid` nothing may be stored if any line is bad, yet the
//! input may be larger than memory. So the input is read twice: a first pass
//! checks every line (keeping only counts and the first few reasons), a second
//! pass writes in batches. Stdin cannot be read twice, so the first pass
//! copies it to a spool file beside the database.

use super::{CliResult, Failure, IngestArgs, print_json};
use pulse_metrics::Store;
use pulse_metrics::ingest::{
    BATCH, InputFormat, LineError, PointReader, RAW_HELD_BEFORE_ROLLUP, RawBound, Tee, write_all,
};
use pulse_metrics::model::now_ms;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::Path;

/// Bad lines listed on stderr before the rest are only counted.
const SHOWN_ERRORS: u64 = 20;

/// Points written between two flushes: keeps the store's queue (and so
/// memory) bounded and far from its capacity, so nothing is ever refused.
const FLUSH_EVERY: usize = 100_000;

const READ_BUFFER: usize = 1 << 16;

#[derive(Default)]
struct Counts {
    valid: u64,
    invalid: u64,
}

impl Counts {
    fn bad_line(&mut self, e: &LineError) {
        self.invalid += 1;
        if self.invalid <= SHOWN_ERRORS {
            say!("{e}");
        }
    }

    fn finish_report(&self) {
        if self.invalid > SHOWN_ERRORS {
            say!(
                "... and {} more invalid line(s)",
                self.invalid - SHOWN_ERRORS
            );
        }
    }
}

#[derive(serde::Serialize)]
struct Summary {
    accepted: u64,
    invalid: u64,
    /// Points older than every tier's retention as of `--now`: folded
    /// nowhere, kept by nothing.
    discarded: u64,
    /// Resources whose metadata (name, node, ...) the input gave.
    #[serde(skip_serializing_if = "is_zero")]
    resources: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) fn run(store: &Store, database: &Path, args: &IngestArgs) -> CliResult {
    let now = args.now.unwrap_or_else(now_ms);
    let mut bound = RawBound::new(RAW_HELD_BEFORE_ROLLUP);
    let input = Input::of(args);
    if input.stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        say!(
            "reading points from the terminal; end with Ctrl-D (see `pulse-metrics ingest --help`)"
        );
    }
    if args.skip_invalid {
        return store_skipping(store, now, &mut bound, &input, args);
    }
    // Two passes: nothing is stored unless every line is valid.
    let mut counts = Counts::default();
    let second_pass = check_all(database, &input, args, &mut counts)?;
    let name = &input.name;
    counts.finish_report();
    if counts.invalid > 0 {
        say!(
            "error: {} invalid line(s) in {name}; nothing stored (--skip-invalid stores the valid lines)",
            counts.invalid
        );
        print_json(&Summary {
            accepted: 0,
            invalid: counts.invalid,
            discarded: 0,
            resources: 0,
        })?;
        return Err(Failure::Exit(2));
    }
    let mut again = Counts::default();
    let mut load = Load::new(store, now, &mut bound);
    let accepted = load.store_points(
        BufReader::with_capacity(READ_BUFFER, second_pass),
        input.format,
        &mut again,
    )?;
    if again.invalid > 0 {
        // Only if the file changed between the passes.
        return Err(Failure::Runtime(format!(
            "{name} changed while it was being read: {} line(s) became invalid; {accepted} point(s) were stored",
            again.invalid
        )));
    }
    let discarded = load.finish(accepted)?;
    say!("stored {accepted} point(s) from {name}");
    report_discarded(discarded);
    print_json(&Summary {
        accepted,
        invalid: 0,
        discarded,
        resources: load.described,
    })
}

/// Where the points come from.
struct Input {
    /// Standard input (no file, or `-`).
    stdin: bool,
    format: InputFormat,
    /// How messages name it.
    name: String,
}

impl Input {
    fn of(args: &IngestArgs) -> Input {
        let stdin = match &args.file {
            None => true,
            Some(p) => p.as_os_str() == "-",
        };
        let format = args.format.unwrap_or_else(|| match &args.file {
            Some(p) if !stdin => InputFormat::for_path(p),
            _ => InputFormat::JsonLines,
        });
        let name = match (&args.file, stdin) {
            (Some(p), false) => p.display().to_string(),
            _ => "stdin".to_string(),
        };
        Input {
            stdin,
            format,
            name,
        }
    }
}

/// Opens the input file (not stdin), refusing a directory.
fn open_file(args: &IngestArgs) -> CliResult<File> {
    let path = args.file.as_deref().unwrap_or(Path::new("-"));
    let file = File::open(path)
        .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Failure::Input(format!(
            "{} is a directory, not a file of points",
            path.display()
        )));
    }
    Ok(file)
}

/// `--skip-invalid`: one pass, bad lines reported and skipped as they come.
fn store_skipping(
    store: &Store,
    now: i64,
    bound: &mut RawBound,
    input: &Input,
    args: &IngestArgs,
) -> CliResult {
    let mut counts = Counts::default();
    let mut load = Load::new(store, now, bound);
    let accepted = if input.stdin {
        let reader = BufReader::with_capacity(READ_BUFFER, std::io::stdin().lock());
        load.store_points(reader, input.format, &mut counts)?
    } else {
        let reader = BufReader::with_capacity(READ_BUFFER, open_file(args)?);
        load.store_points(reader, input.format, &mut counts)?
    };
    let discarded = load.finish(accepted)?;
    counts.finish_report();
    let name = &input.name;
    if counts.invalid > 0 {
        say!(
            "skipped {} invalid line(s) of {name}; stored {accepted} point(s)",
            counts.invalid
        );
    } else {
        say!("stored {accepted} point(s) from {name}");
    }
    report_discarded(discarded);
    print_json(&Summary {
        accepted,
        invalid: counts.invalid,
        discarded,
        resources: load.described,
    })
}

/// The first of two passes: checks every line, counting the invalid ones;
/// returns the input again for the second pass (stdin is copied to a spool
/// file beside the database as it is read).
fn check_all(
    database: &Path,
    input: &Input,
    args: &IngestArgs,
    counts: &mut Counts,
) -> CliResult<File> {
    if !input.stdin {
        check(
            BufReader::with_capacity(READ_BUFFER, open_file(args)?),
            input.format,
            counts,
        )?;
        return open_file(args);
    }
    let spool = spool_file(database)?;
    let mut tee = Tee::new(std::io::stdin().lock(), std::io::BufWriter::new(&spool));
    check(
        BufReader::with_capacity(READ_BUFFER, &mut tee),
        input.format,
        counts,
    )?;
    // The reader may stop before the end (a fatal error returns above);
    // on success it has read everything, so the copy is complete.
    let mut copy = tee.into_copy();
    copy.flush()
        .map_err(|e| Failure::Runtime(format!("write the spool file: {e}")))?;
    drop(copy);
    let mut spool = spool;
    spool
        .rewind()
        .map_err(|e| Failure::Runtime(format!("rewind the spool file: {e}")))?;
    Ok(spool)
}

fn report_discarded(discarded: u64) {
    if discarded > 0 {
        say!(
            "discarded {discarded} point(s) older than every tier's retention (as of --now): nothing keeps them"
        );
    }
}

/// First pass: counts valid and invalid lines, reporting the first few.
fn check(input: impl BufRead, format: InputFormat, counts: &mut Counts) -> CliResult {
    for item in PointReader::new(input, format) {
        match item? {
            Ok(_) => counts.valid += 1,
            Err(e) => counts.bad_line(&e),
        }
    }
    Ok(())
}

/// The second pass: where points go and the time they are folded as of.
struct Load<'a> {
    store: &'a Store,
    now: i64,
    bound: &'a mut RawBound,
    /// Points stored per UTC day: what is older than every retention is
    /// told by the day the daily tier's retention keeps from.
    days: BTreeMap<i64, u64>,
    /// Resources whose metadata was stored.
    described: u64,
}

const DAY_MS: i64 = 86_400_000;

impl<'a> Load<'a> {
    fn new(store: &'a Store, now: i64, bound: &'a mut RawBound) -> Load<'a> {
        Load {
            store,
            now,
            bound,
            days: BTreeMap::new(),
            described: 0,
        }
    }

    /// Reads points and writes the valid ones in batches; returns how many.
    fn store_points(
        &mut self,
        input: impl BufRead,
        format: InputFormat,
        counts: &mut Counts,
    ) -> CliResult<u64> {
        let store = self.store;
        let mut batch = Vec::with_capacity(BATCH);
        let mut accepted = 0u64;
        let mut since_flush = 0usize;
        let mut reader = PointReader::new(input, format);
        for item in reader.by_ref() {
            match item? {
                Ok(p) => {
                    counts.valid += 1;
                    *self.days.entry(p.timestamp.div_euclid(DAY_MS)).or_default() += 1;
                    batch.push(p);
                    if batch.len() >= BATCH {
                        accepted += write_all(store, &batch)? as u64;
                        since_flush += batch.len();
                        batch.clear();
                        if since_flush >= FLUSH_EVERY {
                            store.flush()?;
                            since_flush = 0;
                            if self.bound.check(store, self.now)? && self.bound.rollups == 1 {
                                say!(
                                    "note: rolling up as the input is read, as the service would, to keep \
                                     memory bounded: points older than the raw retention go to the \
                                     minute/hourly/daily tiers"
                                );
                            }
                        }
                    }
                }
                Err(e) => counts.bad_line(&e),
            }
        }
        accepted += write_all(store, &batch)? as u64;
        store.flush()?;
        let resources = reader.resources();
        store.write_resources(&resources)?;
        self.described += resources.len() as u64;
        Ok(accepted)
    }

    /// Folds everything written into the tiers as of `now`, so all of it is
    /// queryable when the command returns; returns how many of the points
    /// stored are older than every tier's retention (below the daily tier's
    /// floor, day-aligned), which no tier keeps.
    fn finish(&mut self, accepted: u64) -> CliResult<u64> {
        if accepted == 0 {
            return Ok(0);
        }
        let pruned = self.bound.fold(self.store, self.now)?;
        let first_kept_day = pruned.floors[3].div_euclid(DAY_MS);
        Ok(self.days.range(..first_kept_day).map(|(_, n)| n).sum())
    }
}

/// An anonymous file beside the database (not in /tmp, which may be a small
/// RAM disk): created, then unlinked at once so it never outlives us.
fn spool_file(database: &Path) -> CliResult<File> {
    let dir = match database.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let path = dir.join(format!(
        ".pulse-metrics-ingest-{}.spool",
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            Failure::Runtime(format!(
                "cannot create the spool file {}: {e}",
                path.display()
            ))
        })?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}
