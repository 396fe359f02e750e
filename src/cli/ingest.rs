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
}

pub(crate) fn run(store: &Store, database: &Path, args: &IngestArgs) -> CliResult {
    let stdin = match &args.file {
        None => true,
        Some(p) => p.as_os_str() == "-",
    };
    let format = args.format.unwrap_or_else(|| match &args.file {
        Some(p) if !stdin => InputFormat::for_path(p),
        _ => InputFormat::JsonLines,
    });
    let name = if stdin {
        "stdin".to_string()
    } else {
        args.file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    if stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        say!(
            "reading points from the terminal; end with Ctrl-D (see `pulse-metrics ingest --help`)"
        );
    }
    let open = || -> CliResult<File> {
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
    };

    if args.skip_invalid {
        // One pass: bad lines are reported and skipped as they come.
        let mut counts = Counts::default();
        let accepted = if stdin {
            let input = BufReader::with_capacity(READ_BUFFER, std::io::stdin().lock());
            store_points(store, input, format, &mut counts)?
        } else {
            let input = BufReader::with_capacity(READ_BUFFER, open()?);
            store_points(store, input, format, &mut counts)?
        };
        counts.finish_report();
        if counts.invalid > 0 {
            say!(
                "skipped {} invalid line(s) of {name}; stored {accepted} point(s)",
                counts.invalid
            );
        } else {
            say!("stored {accepted} point(s) from {name}");
        }
        return print_json(&Summary {
            accepted,
            invalid: counts.invalid,
        });
    }

    let mut counts = Counts::default();
    let second_pass: File = if stdin {
        let spool = spool_file(database)?;
        let mut tee = Tee::new(std::io::stdin().lock(), std::io::BufWriter::new(&spool));
        check(
            BufReader::with_capacity(READ_BUFFER, &mut tee),
            format,
            &mut counts,
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
        spool
    } else {
        check(
            BufReader::with_capacity(READ_BUFFER, open()?),
            format,
            &mut counts,
        )?;
        open()?
    };
    counts.finish_report();
    if counts.invalid > 0 {
        say!(
            "error: {} invalid line(s) in {name}; nothing stored (--skip-invalid stores the valid lines)",
            counts.invalid
        );
        print_json(&Summary {
            accepted: 0,
            invalid: counts.invalid,
        })?;
        return Err(Failure::Exit(2));
    }
    let mut again = Counts::default();
    let accepted = store_points(
        store,
        BufReader::with_capacity(READ_BUFFER, second_pass),
        format,
        &mut again,
    )?;
    if again.invalid > 0 {
        // Only if the file changed between the passes.
        return Err(Failure::Runtime(format!(
            "{name} changed while it was being read: {} line(s) became invalid; {accepted} point(s) were stored",
            again.invalid
        )));
    }
    say!("stored {accepted} point(s) from {name}");
    print_json(&Summary {
        accepted,
        invalid: 0,
    })
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

/// Reads points and writes the valid ones in batches; returns how many.
fn store_points(
    store: &Store,
    input: impl BufRead,
    format: InputFormat,
    counts: &mut Counts,
) -> CliResult<u64> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut accepted = 0u64;
    let mut since_flush = 0usize;
    let mut bound = RawBound::new(RAW_HELD_BEFORE_ROLLUP);
    for item in PointReader::new(input, format) {
        match item? {
            Ok(p) => {
                counts.valid += 1;
                batch.push(p);
                if batch.len() >= BATCH {
                    accepted += write_all(store, &batch)? as u64;
                    since_flush += batch.len();
                    batch.clear();
                    if since_flush >= FLUSH_EVERY {
                        store.flush()?;
                        since_flush = 0;
                        if bound.check(store, now_ms())? && bound.rollups == 1 {
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
    Ok(accepted)
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
