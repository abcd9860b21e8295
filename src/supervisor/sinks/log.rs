//! The log: `log`'s records, formatted by env_logger, go into the standard
//! error [`Sink`] instead of a blocking write. The sink is process-wide
//! because `log` is; the master's loop is its only writer and flusher (one
//! thread), so its lock is never contended.

use std::io::{self, IsTerminal, Write};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::{Sink, LOG_CAPACITY};
use crate::supervisor::events::Event;

static LOG: Mutex<Option<Sink>> = Mutex::new(None);

/// `--log-format json`: one JSON object per line. Switched once the
/// configuration is read (and again by a reload), after logging began.
static JSON: AtomicBool = AtomicBool::new(false);

/// The target of the records that carry an event as JSON fields.
const EVENT_TARGET: &str = "prefork::event";

pub fn set_json_logs(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Whether the log is in JSON (relayed worker output follows it).
pub fn json_logs() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// `at` as the JSON log's `time` says it, in UTC to the millisecond, as
/// env_logger writes it: `2026-01-02T03:04:05.678Z`.
pub fn rfc3339_millis(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Logs `event`: its sentence, or in JSON its name, its fields and its
/// sentence. Both come from the one typed event.
pub fn log_event(event: &Event) {
    let level = event.level();
    if !log::log_enabled!(level) {
        return;
    }
    if JSON.load(Ordering::Relaxed) {
        let mut fields = serde_json::to_string(event).expect("JSON of plain values");
        fields.pop(); // its closing brace: the sentence joins the object
        let message = serde_json::to_string(&event.to_string()).expect("JSON of a string");
        log::log!(target: EVENT_TARGET, level, "{},\"message\":{message}", &fields[1..]);
    } else {
        log::log!(level, "{event}");
    }
}

/// Runs `f` on the log's sink, once [`init_logging`] has made it.
pub fn log_sink<T>(f: impl FnOnce(&mut Sink) -> T) -> Option<T> {
    let mut guard = LOG.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_mut().map(f)
}

struct ToSink;

impl Write for ToSink {
    /// env_logger writes one whole record per call.
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        log_sink(|sink| sink.push(record));
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Logs at `info` unless `RUST_LOG` says otherwise, to standard error,
/// without ever blocking on it.
pub fn init_logging() {
    *LOG.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(Sink::open(2, "standard error", LOG_CAPACITY));
    // Colours as env_logger would choose them for a terminal; it cannot
    // tell through a pipe target.
    let colour = std::env::var_os("NO_COLOR").is_none() && io::stderr().is_terminal();
    let style = if colour {
        env_logger::WriteStyle::Always
    } else {
        env_logger::WriteStyle::Never
    };
    // journald stamps every line itself.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            let level = record.level();
            if JSON.load(Ordering::Relaxed) {
                let time = buf.timestamp_millis();
                let name = level.as_str().to_ascii_lowercase();
                if record.target() == EVENT_TARGET {
                    // The event's fields, already JSON (see log_event).
                    return writeln!(buf, "{{\"time\":\"{time}\",\"level\":\"{name}\",{}}}", record.args());
                }
                let message = serde_json::to_string(&record.args().to_string())
                    .expect("JSON of a string");
                return writeln!(
                    buf,
                    "{{\"time\":\"{time}\",\"level\":\"{name}\",\"event\":\"log\",\"message\":{message}}}"
                );
            }
            // env_logger's own format, without the target.
            let style = buf.default_level_style(level);
            if journald {
                writeln!(buf, "[{style}{level:<5}{style:#}] {}", record.args())
            } else {
                let time = buf.timestamp();
                writeln!(buf, "[{time} {style}{level:<5}{style:#}] {}", record.args())
            }
        })
        .write_style(style)
        .target(env_logger::Target::Pipe(Box::new(ToSink)))
        .init();
}

/// At exit: gives a slow reader up to `patience` to take the last lines;
/// a reader that takes nothing does not hold the exit longer.
pub fn flush_log_at_exit(patience: Duration) {
    let deadline = Instant::now() + patience;
    while let Some(Some(fd)) = log_sink(|sink| {
        sink.flush();
        sink.wants_write().then(|| sink.fd())
    }) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // SAFETY: the sink's descriptor is open while the sink lives, and
        // the sink lives as long as the process.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, 1000) as i32)
            .unwrap_or(PollTimeout::MAX);
        let _ = nix::poll::poll(&mut [PollFd::new(fd, PollFlags::POLLOUT)], ms);
    }
}
