//! Rendering the board for people: the SIGUSR1 dump and `prefork status`
//! share this, so a status looks the same wherever it is read.

use std::fmt::Write;
use std::time::Duration;

use crate::scoreboard::Status;
use crate::supervisor::core::{Activity, Bounds};

/// One line of the board. Fields the reader does not know are `None` and
/// print as `-`.
#[derive(Debug, Clone)]
pub struct Row {
    pub slot: Option<usize>,
    pub id: String,
    pub uptime: Option<Duration>,
    /// Time since the worker last wrote its status; `None`: never written.
    pub since_update: Option<Duration>,
    pub restarts: Option<u64>,
    /// How the slot's previous worker ended.
    pub last_exit: Option<String>,
    pub status: Status,
}

/// One line of a board read from outside (`prefork status`): what any
/// reader of a board knows.
#[derive(Debug, Clone)]
pub struct BoardRow {
    pub id: String,
    /// Time since the worker last wrote its file (or created it).
    pub since_update: Duration,
    pub status: Status,
}

/// Which columns a table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// The master's view (SIGUSR1): slots, uptimes, restarts, exits.
    Supervisor,
    /// What any reader of a board knows: ids, update times, statuses.
    Board,
}

/// A header line, then one aligned line per row.
pub fn table(header: &str, rows: &[Row], columns: Columns) -> String {
    let dash = || "-".to_string();
    let cells = rows.iter().map(|row| {
        [
            row.slot.map_or_else(dash, |s| s.to_string()),
            row.id.clone(),
            row.uptime.map_or_else(dash, secs),
            row.since_update
                .map_or_else(dash, |d| format!("{} ago", secs(d))),
            row.restarts.map_or_else(dash, |r| r.to_string()),
            row.last_exit.clone().unwrap_or_else(dash),
            status_cell(&row.status),
        ]
    });
    lines(header, cells, columns)
}

/// The `prefork status` table: a header line, then one aligned line per
/// live worker, whatever its file holds.
pub fn board_table(header: &str, rows: &[BoardRow]) -> String {
    let dash = || "-".to_string();
    let cells = rows.iter().map(|row| {
        [
            dash(),
            row.id.clone(),
            dash(),
            format!("{} ago", secs(row.since_update)),
            dash(),
            dash(),
            status_cell(&row.status),
        ]
    });
    lines(header, cells, Columns::Board)
}

/// What the STATUS column says of a status as a reader found it: the status
/// escaped, `(no status yet)`, or `(unreadable: why)`.
pub fn status_cell(status: &Status) -> String {
    match status {
        Status::Written(bytes) => escape(bytes),
        Status::NotYet => not_yet(),
        Status::Unreadable(why) => format!("(unreadable: {why})"),
    }
}

fn not_yet() -> String {
    "(no status yet)".to_string()
}

fn lines(header: &str, rows: impl Iterator<Item = [String; 7]>, columns: Columns) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let line = |out: &mut String, cells: [String; 7]| {
        let [slot, id, uptime, update, restarts, exit, status] = cells;
        let _ = match columns {
            Columns::Supervisor => {
                writeln!(
                    out,
                    "{slot:>5} {id:>8} {uptime:>9} {update:>11} {restarts:>8} {exit:<12} {status}"
                )
            }
            Columns::Board => writeln!(out, "{id:>8} {update:>11} {status}"),
        };
    };
    let id_title = if columns == Columns::Supervisor {
        "PID"
    } else {
        "ID"
    };
    let titles = [
        "SLOT",
        id_title,
        "UPTIME",
        "LAST-UPDATE",
        "RESTARTS",
        "LAST-EXIT",
        "STATUS",
    ]
    .map(String::from);
    line(&mut out, titles);
    for cells in rows {
        line(&mut out, cells);
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The status as one printable line: printable ASCII and valid UTF-8 text
/// as is; control characters, backslashes and invalid bytes escaped.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// What a master says of itself in one line, worded the same by `prefork
/// status` (from the master file) and `/status` (from the pool).
pub struct MasterSummary<'a> {
    pub pid: u64,
    pub phase: &'a str,
    pub live: usize,
    pub target: usize,
    pub activity: Activity,
    pub bounds: Option<Bounds>,
    pub restarts: u64,
    pub uptime: Duration,
    pub listen: &'a [String],
}

impl MasterSummary<'_> {
    pub fn line(&self) -> String {
        let a = self.activity;
        let mut text = format!(
            "master pid={} {}, workers={}/{}, {} idle {} busy {} starting",
            self.pid, self.phase, self.live, self.target, a.idle, a.busy, a.starting
        );
        if let Some(b) = self.bounds {
            let _ = write!(
                text,
                " (sizes itself: workers {}..{}, spare {}..{})",
                b.min_workers, b.max_workers, b.min_spare, b.max_spare
            );
        }
        let _ = write!(
            text,
            ", restarts={}, up {:.0}s",
            self.restarts,
            self.uptime.as_secs_f64()
        );
        if !self.listen.is_empty() {
            let _ = write!(text, ", listening on {}", self.listen.join(" "));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_interpret() {
        assert_eq!(escape(b"GET /foo"), "GET /foo");
        assert_eq!(escape(b"a\nb\tc\\"), "a\\nb\\tc\\\\");
        assert_eq!(escape(b"\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape(b"\xff\x00ok"), "\\xff\\u{0}ok");
        assert_eq!(escape("caf\u{e9}".as_bytes()), "caf\u{e9}");
    }

    #[test]
    fn a_worker_without_status_still_gets_its_line() {
        let rows = [Row {
            slot: Some(0),
            id: "42".into(),
            uptime: None,
            since_update: None,
            restarts: None,
            last_exit: None,
            status: Status::NotYet,
        }];
        let text = table("board", &rows, Columns::Supervisor);
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.contains("42") && text.contains("(no status yet)"),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_status_says_why() {
        let rows = [BoardRow {
            id: "7".into(),
            since_update: Duration::from_secs(2),
            status: Status::Unreadable(crate::scoreboard::Unreadable::ChecksumMismatch),
        }];
        let text = board_table("board", &rows);
        assert!(
            text.contains("(unreadable: checksum mismatch in 10 reads)"),
            "{text}"
        );
    }
}
