//! What another process has done so far, from `/proc/PID`: bytes written,
//! CPU time and memory. Each figure covers every thread of the process,
//! the exited ones included.

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 a second on
/// every Linux architecture (whatever the kernel's own HZ).
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Bytes handed to write-like syscalls, files, pipes and sockets alike.
    pub wchar: u64,
    /// Bytes of page-cache pages the process dirtied (each page counted
    /// once per time it goes from clean to dirty) or wrote directly: what
    /// the disk will be asked to write on its behalf.
    pub write_bytes: u64,
    /// Dirty bytes that never reached the disk (a file truncated or
    /// deleted before writeback).
    pub cancelled_write_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl ProcSample {
    /// The process's figures now; `None` once it has exited.
    pub fn read(pid: u32) -> Option<ProcSample> {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let io_field = |name: &str| field(&io, name).unwrap_or(0);
        let kib = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
                * 1024
        };
        // utime and stime are the 12th and 13th fields after the command
        // name, which is in parentheses and may itself hold spaces.
        let after = stat.rsplit_once(')')?.1;
        let mut fields = after.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(ProcSample {
            wchar: io_field("wchar:"),
            write_bytes: io_field("write_bytes:"),
            cancelled_write_bytes: io_field("cancelled_write_bytes:"),
            cpu_secs: (utime + stime) as f64 / USER_HZ,
            rss_bytes: kib("VmRSS:"),
            peak_rss_bytes: kib("VmHWM:"),
        })
    }
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}
