//! The command line: arguments, configuration overrides, exit codes.
//!
//! Exit codes: 0 success, 2 bad usage or bad input (clap's own errors, bad
//! files, invalid configuration), 1 runtime failure (including a database
//! file the store refuses to open). People read stderr; stdout carries data.

/// A line for people on stderr, like `eprintln!`, except that a stderr
/// nobody reads any more (a closed pipe) does not panic the command
/// halfway: the line is lost and the exit code says so (see `main`).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::say_line(format_args!($($arg)*))
    };
}

mod ingest;
mod repair;

use clap::{Args, Parser, Subcommand};
use pulse_metrics::answer::{HistoryRequest, history};
use pulse_metrics::config::{Config, SettingsFile};
use pulse_metrics::export::ExportFormat;
use pulse_metrics::ingest::InputFormat;
use pulse_metrics::model::{now_ms, parse_timestamp};
use pulse_metrics::{Store, Tier};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

const MAIN_EXAMPLES: &str = "\
Examples:
  pulse-metrics --config /etc/pulse-metrics.yaml serve
  pulse-metrics ingest points.jsonl
  pulse-metrics query --type vm --id pve1:101 --metric cpu --range 24h
  pulse-metrics --db /var/lib/pulse-metrics/metrics.db stats
  pulse-metrics check

Configuration: --config PATH, else $PULSE_METRICS_CONFIG, else built-in defaults
(database $PULSE_DATA_DIR/metrics.db, PULSE_DATA_DIR defaulting to ./data).
Exit codes: 0 success, 2 bad usage or bad input, 1 runtime failure.";

#[derive(Parser, Debug)]
#[command(
    name = "pulse-metrics",
    version,
    about = "Days of CPU/memory/disk history for Proxmox/Pulse dashboards, in one small SQLite file",
    after_help = MAIN_EXAMPLES
)]
struct Cli {
    /// Configuration file, YAML (.yaml/.yml) or JSON (.json) [default: $PULSE_METRICS_CONFIG]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Database file; overrides metrics.database_path
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: store, background jobs, collectors, HTTP API and web UI (the default)
    #[command(after_help = "\
Example:
  pulse-metrics --config /etc/pulse-metrics.yaml serve --listen 127.0.0.1:7656

SIGINT/SIGTERM flush everything and exit 0.")]
    Serve(ServeArgs),

    /// Store points from a JSON Lines or CSV file (or stdin)
    #[command(after_help = "\
Examples:
  pulse-metrics ingest points.jsonl
  pulse-metrics ingest --skip-invalid points.csv
  some-exporter | pulse-metrics ingest --format csv -

JSON Lines: one object per line:
  {\"resourceType\":\"vm\",\"resourceId\":\"pve1:101\",\"metric\":\"cpu\",\"value\":12.5,\"timestamp\":1700000000000}
CSV: header resourceType,resourceId,metric,value,timestamp.
Timestamps are Unix milliseconds or RFC 3339. The whole input is checked first: any bad
line (each is listed) means exit 2 and nothing stored, unless --skip-invalid.
Ends by folding what it wrote into the minute/hourly/daily tiers as of --now, so all of it
is queryable at once; points older than every tier's retention are discarded and counted.
Prints {\"accepted\":N,\"invalid\":M,\"discarded\":D}.")]
    Ingest(IngestArgs),

    /// Run one rollup + retention + space-reclaim pass and print what it did
    #[command(after_help = "\
Examples:
  pulse-metrics maintain
  pulse-metrics maintain --now 2024-05-01T12:00:00Z")]
    Maintain(MaintainArgs),

    /// Print the history of a resource's series as JSON (read-only: works beside the service)
    #[command(after_help = "\
Examples:
  pulse-metrics query --type vm --id pve1:101 --metric cpu --range 24h
  pulse-metrics query --type node --id pve1:node1 --start 2024-05-01T00:00:00Z --end 2024-05-02T00:00:00Z --max-points 200
  pulse-metrics query --type vm --id pve1:101 --range 7d --format csv

Without --metric every metric of the resource is answered, under \"metrics\".
Give either --range, or --start and --end.
Read-only: takes no lock and writes nothing, so it works while the service runs;
a missing database is exit 2, never created.")]
    Query(QueryArgs),

    /// Print storage statistics as JSON (read-only: works beside the service)
    #[command(after_help = "\
Example:
  pulse-metrics --db ./data/metrics.db stats

Read-only: takes no lock and writes nothing, so it works while the service runs;
a missing database is exit 2, never created.")]
    Stats,

    /// Migrate a Pulse (Go) metrics.db into this store, every tier kept
    #[command(after_help = "\
Examples:
  pulse-metrics import-pulse /etc/pulse/metrics.db
  pulse-metrics import-pulse --instance pve1 /etc/pulse/metrics.db

Pulse's ids are stored under the collectors' (guests {instance}:{vmid}, nodes {instance}:{node},
storage {instance}:{node}:{storage} or {instance}:{storage} when shared), so its history and
the Proxmox collector's are one series per resource. --instance names the Proxmox instance
(its `name` in the configuration) that collects these resources now; without it the instance
in Pulse's ids is kept. Ids that cannot be split one way only are kept as they are and listed.
The source is only read, never written. Running the import again stores nothing twice.
Ends by folding what it imported into the tiers as of --now (default: the clock), as ingest does.
Pulse keeps no count for rolled-up rows: they are stored with count 1 (noted in the output).
Prints a JSON report; progress goes to stderr.")]
    ImportPulse(ImportArgs),

    /// Print every stored point of a tier as JSON Lines or CSV (read-only: works beside the service)
    #[command(after_help = "\
Examples:
  pulse-metrics export > raw.jsonl
  pulse-metrics export --tier hourly --format csv > hourly.csv

A raw export can be ingested again: `pulse-metrics --db other.db ingest raw.jsonl`.
Read-only: takes no lock and writes nothing, so it works while the service runs;
a missing database is exit 2, never created.")]
    Export(ExportArgs),

    /// Verify a database: SQLite's integrity check and ours, naming each damaged part
    #[command(after_help = "\
Example:
  pulse-metrics --db /var/lib/pulse-metrics/metrics.db check

Checks every record of the raw journal and every minute/hourly/daily chunk (they must
decode, match their checksum and name existing series) and SQLite's own structure.
Prints a JSON report; each damaged part is also listed on stderr with where it is and
its series. Exit 0 when all is well, 1 when something is damaged.
Read-only: takes no lock and writes nothing, so it works while the service runs.")]
    Check,

    /// Copy everything readable of a damaged database into a new file, and say what was lost
    #[command(after_help = "\
Example:
  pulse-metrics --db /var/lib/pulse-metrics/metrics.db salvage /var/lib/pulse-metrics/salvaged.db

Copies every series, chunk and raw journal record that `check` passes, as stored, into
OUT (which must not exist), then opens OUT as the service would. Damaged parts are left
behind and listed (JSON on stdout, one line each on stderr). The source is only read.
Then stop the service, move OUT (and OUT-raw/) into place, and start it again.")]
    Salvage(SalvageArgs),
}

#[derive(Args, Debug)]
struct SalvageArgs {
    /// The new database to write (must not exist)
    #[arg(value_name = "OUT")]
    out: PathBuf,
}

#[derive(Args, Debug, Default)]
struct ServeArgs {
    /// Address to listen on; overrides server.listen
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct IngestArgs {
    /// Input file; `-` or nothing reads stdin. `.csv` files are CSV, anything else JSON Lines
    #[arg(value_name = "FILE|-")]
    file: Option<PathBuf>,

    /// Input format, overriding the file name
    #[arg(long, value_name = "jsonl|csv", value_parser = parse_input_format)]
    format: Option<InputFormat>,

    /// Store the valid lines and report the invalid ones instead of storing nothing
    #[arg(long)]
    skip_invalid: bool,

    /// Fold what was written into the tiers as of this time (Unix ms or RFC 3339) [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<i64>,
}

#[derive(Args, Debug)]
struct MaintainArgs {
    /// Run as of this time (Unix ms or RFC 3339) [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<i64>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("window").required(true).args(["range", "start"])))]
struct QueryArgs {
    /// Resource type (node, vm, container, storage, ...)
    #[arg(long = "type", value_name = "T")]
    resource_type: String,

    /// Resource id (e.g. pve1:101)
    #[arg(long = "id", value_name = "I")]
    resource_id: String,

    /// Metric (cpu, memory, disk, ...); without it, every metric of the resource
    #[arg(long, value_name = "M")]
    metric: Option<String>,

    /// How far back from --now: any duration (1h, 12h, 48h, 7d, 30d)
    #[arg(long, value_name = "R", conflicts_with_all = ["start", "end"])]
    range: Option<String>,

    /// Start of the range (Unix ms or RFC 3339); needs --end
    #[arg(long, value_name = "TIME", requires = "end")]
    start: Option<String>,

    /// End of the range (Unix ms or RFC 3339); needs --start
    #[arg(long, value_name = "TIME", requires = "start")]
    end: Option<String>,

    /// The current time for tier selection and --range (Unix ms or RFC 3339) [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<i64>,

    /// Merge points into at most N evenly spaced buckets per series
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_points: Option<u64>,

    /// Output format
    #[arg(long, value_name = "json|csv", default_value = "json", value_parser = ["json", "csv"])]
    format: String,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// The Pulse metrics.db to read
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// The Proxmox instance (its `name` in the configuration) the file's resources belong to
    #[arg(long, value_name = "NAME")]
    instance: Option<String>,

    /// Fold what was imported into the tiers as of this time (Unix ms or RFC 3339) [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<i64>,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Tier to export: raw, minute, hourly or daily
    #[arg(long, value_name = "T", default_value = "raw", value_parser = parse_tier)]
    tier: Tier,

    /// Output format
    #[arg(long, value_name = "jsonl|csv", default_value = "jsonl", value_parser = parse_export_format)]
    format: ExportFormat,
}

fn parse_time(s: &str) -> Result<i64, String> {
    parse_timestamp(s)
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    s.parse()
}

fn parse_input_format(s: &str) -> Result<InputFormat, String> {
    s.parse()
}

fn parse_export_format(s: &str) -> Result<ExportFormat, String> {
    s.parse()
}

/// A failure, with the exit code it maps to.
pub(crate) enum Failure {
    /// Bad usage or bad input: exit 2.
    Input(String),
    /// Anything else: exit 1.
    Runtime(String),
    /// Already reported on stderr; just exit with this code.
    Exit(u8),
}

impl From<pulse_metrics::Error> for Failure {
    fn from(e: pulse_metrics::Error) -> Failure {
        if broken_pipe(&e) {
            // The reader went away (`| head`): not an error worth a word.
            return Failure::Exit(0);
        }
        if e.is_invalid_input() || e.config_key().is_some() || e.is_missing() {
            Failure::Input(e.to_string())
        } else {
            Failure::Runtime(e.to_string())
        }
    }
}

fn broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = err.source();
    }
    false
}

pub(crate) type CliResult<T = ()> = Result<T, Failure>;

/// Set when a line for stderr could not be written.
static STDERR_LOST: AtomicBool = AtomicBool::new(false);

pub(crate) fn say_line(args: std::fmt::Arguments) {
    if writeln!(std::io::stderr(), "{args}").is_err() {
        STDERR_LOST.store(true, Ordering::Relaxed);
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, None | Some(Command::Serve(_))));
    let code = match run(cli) {
        Ok(()) => 0,
        Err(Failure::Input(m)) => {
            say!("error: {m}");
            2
        }
        Err(Failure::Runtime(m)) => {
            say!("error: {m}");
            1
        }
        Err(Failure::Exit(code)) => code,
    };
    // Messages the operator never saw (bad lines, what was discarded) make
    // a run that otherwise succeeded a failure: nothing goes unreported.
    if code == 0 && STDERR_LOST.load(Ordering::Relaxed) {
        return ExitCode::from(1);
    }
    ExitCode::from(code)
}

/// Logs go to stderr (stdout carries data): `info` for the service, only
/// warnings for one-shot commands; `RUST_LOG` overrides either.
fn init_logging(service: bool) {
    let default = if service { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> CliResult {
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    let (mut config, config_path) = read_config(cli.config.as_ref())?;
    let in_file = |e: pulse_metrics::Error| -> Failure {
        match (&config_path, e.config_key()) {
            (Some(p), Some(_)) => Failure::Input(format!("{}: {e}", p.display())),
            _ => e.into(),
        }
    };
    // The file, settings.json (changes made in the web UI) over it, then
    // the flags over both; checked as one, as a settings change is.
    if let Some(db) = &cli.db {
        config.metrics.database_path = db.clone();
    }
    if let Command::Serve(args) = &command
        && let Some(listen) = &args.listen
    {
        config.server.listen = listen.clone();
    }
    let mut settings = SettingsFile::new(
        pulse_metrics::config::settings::default_path(),
        config_path.clone(),
        config,
    );
    if let Some(db) = &cli.db {
        settings = settings.flag(
            "database_path",
            serde_json::Value::String(db.display().to_string()),
        );
        // For the offline commands --db also means "use this file", even
        // when the configuration keeps the store in memory.
        if !matches!(command, Command::Serve(_)) {
            settings.base.metrics.enabled = true;
            settings = settings.flag("enabled", serde_json::Value::Bool(true));
        }
    }
    let saved = settings.load()?;
    // Readers create nothing and take no lock: they work beside the service.
    let read_only = matches!(
        command,
        Command::Query(_)
            | Command::Stats
            | Command::Export(_)
            | Command::Check
            | Command::Salvage(_)
    );
    let built = if read_only {
        settings.reading_config(&saved)
    } else {
        settings.startup_config(&saved)
    };
    let config = built.map_err(|e| {
        if settings.blames(&e, &saved) {
            Failure::from(settings.explain(e, &saved))
        } else {
            in_file(e)
        }
    })?;
    if let Command::Serve(_) = &command {
        return serve(config, settings);
    }
    // Offline commands work on the database file. `--db` names one
    // explicitly; otherwise a store configured in memory has nothing on disk.
    if !config.metrics.enabled {
        return Err(Failure::Input(
            "metrics.enabled is false: the store lives in memory only, so there is no database for this command; pass --db PATH or set metrics.enabled: true".into(),
        ));
    }
    let db = &config.metrics.database_path;
    match &command {
        Command::Check => return repair::check(db),
        Command::Salvage(args) => return repair::salvage(db, &args.out),
        _ => {}
    }
    // A query's own mistakes are named before the file is looked at.
    let request = match &command {
        Command::Query(args) => Some(query_request(args)?),
        _ => None,
    };
    let store = if read_only {
        Store::open_read_only(config.metrics.clone())?
    } else {
        Store::open(config.metrics.clone())?
    };
    let result = match command {
        Command::Serve(_) | Command::Check | Command::Salvage(_) => {
            unreachable!("handled above")
        }
        Command::Ingest(args) => ingest::run(&store, &config.metrics.database_path, &args),
        Command::Maintain(args) => {
            let report = store.maintain(args.now.unwrap_or_else(now_ms))?;
            print_json(&report)
        }
        Command::Query(args) => query(&store, request.as_ref().expect("built above"), &args),
        Command::Stats => print_json(&store.stats()?),
        Command::ImportPulse(args) => import_pulse(&store, &args),
        Command::Export(args) => export(&store, &args),
    };
    // Make everything durable and the WAL small, even after a failure
    // (nothing to do for a read-only store).
    let closed = store.close();
    result?;
    closed?;
    Ok(())
}

/// Reads the configuration file without validating it, so `--db` and
/// `--listen` can be applied first.
fn read_config(flag: Option<&PathBuf>) -> CliResult<(Config, Option<PathBuf>)> {
    let path = Config::locate(flag.map(PathBuf::as_path));
    let config = match &path {
        Some(p) => Config::from_file(p).map_err(|e| match e.config_key() {
            // Errors about the file itself already name it.
            Some(k) if k == p.display().to_string() => Failure::from(e),
            _ => Failure::Input(format!("{}: {e}", p.display())),
        })?,
        None => Config::default(),
    };
    Ok((config, path))
}

fn serve(config: Config, settings: SettingsFile) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(pulse_metrics::server::serve(
            pulse_metrics::server::ServeOptions { config, settings },
        ))
        .map_err(|e| Failure::Runtime(format!("{e:#}")))
}

fn query_request(args: &QueryArgs) -> CliResult<HistoryRequest> {
    Ok(HistoryRequest::from_params(
        &args.resource_type,
        &args.resource_id,
        args.metric.as_deref(),
        args.range.as_deref(),
        args.start.as_deref(),
        args.end.as_deref(),
        args.now.unwrap_or_else(now_ms),
        args.max_points.map(|n| n.to_string()).as_deref(),
    )?)
}

fn query(store: &Store, request: &HistoryRequest, args: &QueryArgs) -> CliResult {
    let answer = history(store, request)?;
    if args.format == "json" {
        return print_json(&answer);
    }
    let stdout = std::io::stdout();
    let mut csv = csv::Writer::from_writer(stdout.lock());
    let io = |e: csv::Error| Failure::from_io(std::io::Error::from(e));
    csv.write_record([
        "resourceType",
        "resourceId",
        "metric",
        "timestamp",
        "value",
        "min",
        "max",
        "count",
    ])
    .map_err(io)?;
    let series: Vec<(&str, &Vec<pulse_metrics::HistoryPoint>)> =
        match (&answer.points, &answer.metrics) {
            (Some(points), _) => vec![(answer.metric.as_deref().unwrap_or(""), points)],
            (None, Some(map)) => map.iter().map(|(m, p)| (m.as_str(), p)).collect(),
            (None, None) => Vec::new(),
        };
    for (metric, points) in series {
        for p in points {
            csv.write_record([
                answer.resource_type.as_str(),
                answer.resource_id.as_str(),
                metric,
                &p.timestamp.to_string(),
                &float(p.value),
                &float(p.min),
                &float(p.max),
                &p.count.to_string(),
            ])
            .map_err(io)?;
        }
    }
    csv.flush().map_err(Failure::from_io)?;
    Ok(())
}

fn export(store: &Store, args: &ExportArgs) -> CliResult {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let n = pulse_metrics::export::export(store, args.tier, args.format, &mut out)?;
    say!("exported {n} {} point(s)", args.tier);
    Ok(())
}

fn import_pulse(store: &Store, args: &ImportArgs) -> CliResult {
    let started = std::time::Instant::now();
    let mut last = std::time::Instant::now();
    let mut announced = false;
    let instance = args.instance.as_deref();
    let report = pulse_metrics::pulse_import::import_pulse_as(store, &args.file, instance, |p| {
        // Only large files get progress lines: small ones finish at once.
        if p.rows_total < 100_000 {
            return;
        }
        let finished = p.rows_done == p.rows_total;
        if !announced {
            announced = true;
            say!(
                "import-pulse: reading {} rows from {}",
                p.rows_total,
                args.file.display()
            );
        } else if finished || last.elapsed() >= std::time::Duration::from_secs(1) {
            last = std::time::Instant::now();
            say!(
                "import-pulse: {}/{} rows ({}%)",
                p.rows_done,
                p.rows_total,
                p.rows_done * 100 / p.rows_total.max(1)
            );
        }
    })?;
    // Durable before we claim success, and folded into the tiers (as the
    // service would within minutes) so every range shows it at once.
    store.flush()?;
    pulse_metrics::ingest::RawBound::new(0).fold(store, args.now.unwrap_or_else(now_ms))?;
    for example in &report.skipped_examples {
        say!("skipped {example}");
    }
    if report.skipped > report.skipped_examples.len() as u64 {
        say!(
            "... and {} more skipped row(s)",
            report.skipped - report.skipped_examples.len() as u64
        );
    }
    for note in &report.notes {
        say!("note: {note}");
    }
    for kept in &report.ids_kept {
        say!(
            "kept {} id {:?} as it is: {}",
            kept.resource_type,
            kept.resource_id,
            kept.reason
        );
    }
    say!(
        "imported {} raw point(s), {} minute, {} hourly and {} daily bucket(s) from {} in {:.1}s",
        report.raw_points,
        report.minute_buckets,
        report.hourly_buckets,
        report.daily_buckets,
        args.file.display(),
        started.elapsed().as_secs_f64()
    );
    print_json(&report)
}

impl Failure {
    fn from_io(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::Exit(0)
        } else {
            Failure::Runtime(format!("write output: {e}"))
        }
    }
}

/// Prints one JSON document on stdout, on one line.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> CliResult {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serde_json::to_writer(&mut out, value)
        .map_err(|e| Failure::from_io(std::io::Error::from(e)))?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(Failure::from_io)
}

/// The shortest text that parses back to the same `f64`.
fn float(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
}
