//! A frame of `prefork top` as data: one row per live worker with its state
//! by the idle rule, and the sort and filter the viewer asked for. Pure:
//! what reads the board and `/proc` is [`super::reader`], what draws it
//! [`super::view`] and [`super::plain`].

use std::cmp::Ordering;
use std::path::PathBuf;
use std::time::Duration;

use crate::idle::IdleRule;
use crate::scoreboard::Status;

use super::snapshot::MasterInfo;

/// What a worker is doing, as the view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// No status written yet.
    Starting,
    Idle,
    Busy,
    /// Its status is older than the master's stuck timeout.
    Stuck,
    /// Its record cannot be read.
    Unreadable,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::Busy => "busy",
            State::Stuck => "stuck",
            State::Unreadable => "unreadable",
        }
    }
}

/// The state of a worker whose status is `status`, written `age` ago.
pub fn classify(
    status: &Status,
    age: Duration,
    stuck_timeout: Option<Duration>,
    rule: &IdleRule,
) -> State {
    match status {
        Status::NotYet => State::Starting,
        Status::Unreadable(_) => State::Unreadable,
        Status::Written(_) if stuck_timeout.is_some_and(|t| age > t) => State::Stuck,
        Status::Written(bytes) if rule.is_idle(bytes) => State::Idle,
        Status::Written(_) => State::Busy,
    }
}

/// One live worker.
#[derive(Debug, Clone)]
pub struct Row {
    /// The worker's id on the board (its pid, for prefork's and Perl's).
    pub id: String,
    /// Its slot, where a master runs the board.
    pub slot: Option<usize>,
    pub state: State,
    pub status: Status,
    /// The status as one printable line (see [`crate::render::status_cell`]).
    pub line: String,
    /// Since its last update.
    pub age: Duration,
    /// Share of one CPU since the last frame, in %.
    pub cpu: Option<f64>,
    pub rss: Option<u64>,
    pub restarts: Option<u64>,
}

impl Row {
    /// The id as a number, for ordering pids as numbers.
    fn numeric_id(&self) -> u64 {
        self.id.parse().unwrap_or(u64::MAX)
    }
}

/// How many workers are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub starting: usize,
    pub idle: usize,
    pub busy: usize,
    pub stuck: usize,
    pub unreadable: usize,
}

impl Counts {
    pub fn of(rows: &[Row]) -> Counts {
        let mut counts = Counts::default();
        for row in rows {
            *match row.state {
                State::Starting => &mut counts.starting,
                State::Idle => &mut counts.idle,
                State::Busy => &mut counts.busy,
                State::Stuck => &mut counts.stuck,
                State::Unreadable => &mut counts.unreadable,
            } += 1;
        }
        counts
    }

    /// `3 idle, 1 busy` and the other states when there are any.
    pub fn summary(&self) -> String {
        let mut out = format!("{} idle, {} busy", self.idle, self.busy);
        for (n, what) in [
            (self.starting, "starting"),
            (self.stuck, "stuck"),
            (self.unreadable, "unreadable"),
        ] {
            if n > 0 {
                out.push_str(&format!(", {n} {what}"));
            }
        }
        out
    }
}

/// One reading of the board.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub dir: PathBuf,
    /// Why the board cannot be read now (its directory is gone, ...).
    pub error: Option<String>,
    /// The master's snapshot, where a master runs the board.
    pub master: Option<MasterInfo>,
    /// In the board's order; see [`visible`].
    pub rows: Vec<Row>,
    pub counts: Counts,
}

/// The orders the view offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// The longest since its last update first.
    Age,
    /// The busiest CPU first.
    Cpu,
    /// The largest resident memory first.
    Rss,
    /// By slot, then by pid (workers without a slot last).
    #[default]
    Slot,
}

impl SortKey {
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Age => "age",
            SortKey::Cpu => "cpu",
            SortKey::Rss => "rss",
            SortKey::Slot => "slot",
        }
    }
}

/// Compares two rows for `key`; ties go by slot, then by id.
pub fn compare(a: &Row, b: &Row, key: SortKey) -> Ordering {
    let by_slot = || {
        let slot = |r: &Row| r.slot.unwrap_or(usize::MAX);
        slot(a)
            .cmp(&slot(b))
            .then_with(|| a.numeric_id().cmp(&b.numeric_id()))
            .then_with(|| a.id.cmp(&b.id))
    };
    let descending = |x: Option<f64>, y: Option<f64>| {
        let v = |o: Option<f64>| o.unwrap_or(-1.0);
        v(y).total_cmp(&v(x))
    };
    match key {
        SortKey::Slot => Ordering::Equal,
        SortKey::Age => b.age.cmp(&a.age),
        SortKey::Cpu => descending(a.cpu, b.cpu),
        SortKey::Rss => descending(a.rss.map(|r| r as f64), b.rss.map(|r| r as f64)),
    }
    .then_with(by_slot)
}

/// Whether `row` passes the filter: its status line contains `filter`,
/// ignoring ASCII case. An empty filter passes everything.
pub fn matches(row: &Row, filter: &str) -> bool {
    // Compared in place: no lowered copy of the filter and of each line at
    // every draw. A match of UTF-8 bytes in UTF-8 bytes is a match of text.
    let needle = filter.as_bytes();
    needle.is_empty()
        || row
            .line
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The indexes of the rows to show, filtered and in `key`'s order.
pub fn visible(rows: &[Row], key: SortKey, filter: &str) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..rows.len())
        .filter(|&i| matches(&rows[i], filter))
        .collect();
    shown.sort_by(|&a, &b| compare(&rows[a], &rows[b], key));
    shown
}

/// `1.5 MiB`-style memory, compact for a column.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n}B"),
        _ if value < 10.0 => format!("{value:.1}{}", UNITS[unit]),
        _ => format!("{value:.0}{}", UNITS[unit]),
    }
}

/// `42s`, `3m07s`, `2h05m`, `3d04h`: an age or uptime for a column.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scoreboard::Unreadable;

    pub fn row(id: &str, slot: Option<usize>, status: &[u8]) -> Row {
        Row {
            id: id.into(),
            slot,
            state: classify(
                &Status::Written(status.to_vec()),
                Duration::ZERO,
                None,
                &IdleRule::Default,
            ),
            status: Status::Written(status.to_vec()),
            line: crate::render::escape(status),
            age: Duration::ZERO,
            cpu: None,
            rss: None,
            restarts: None,
        }
    }

    #[test]
    fn states_by_the_idle_rule_the_stuck_timeout_and_the_record() {
        let rule = IdleRule::Default;
        let s = |b: &[u8]| Status::Written(b.to_vec());
        let t = Some(Duration::from_secs(30));
        let sec = Duration::from_secs;
        assert_eq!(
            classify(&Status::NotYet, sec(99), t, &rule),
            State::Starting
        );
        let bad = Status::Unreadable(Unreadable::ChecksumMismatch);
        assert_eq!(classify(&bad, sec(0), t, &rule), State::Unreadable);
        assert_eq!(classify(&s(b"_"), sec(1), t, &rule), State::Idle);
        assert_eq!(classify(&s(b"GET /"), sec(1), t, &rule), State::Busy);
        assert_eq!(classify(&s(b"GET /"), sec(31), t, &rule), State::Stuck);
        assert_eq!(classify(&s(b"GET /"), sec(31), None, &rule), State::Busy);
        let pattern = IdleRule::pattern("^ready$").unwrap();
        assert_eq!(classify(&s(b"ready"), sec(1), t, &pattern), State::Idle);
        assert_eq!(classify(&s(b"_"), sec(1), t, &pattern), State::Busy);
    }

    #[test]
    fn sorts_by_each_key_with_ties_by_slot_then_pid() {
        let mut rows = vec![
            row("30", None, b"perl"),
            row("12", Some(1), b"b"),
            row("11", Some(0), b"a"),
            row("9", None, b"perl too"),
        ];
        rows[0].cpu = Some(50.0);
        rows[1].cpu = Some(1.0);
        rows[0].rss = Some(10);
        rows[2].rss = Some(1000);
        rows[3].age = Duration::from_secs(100);
        rows[1].age = Duration::from_secs(5);
        let ids = |key| -> Vec<&str> {
            visible(&rows, key, "")
                .into_iter()
                .map(|i| rows[i].id.as_str())
                .collect()
        };
        assert_eq!(ids(SortKey::Slot), ["11", "12", "9", "30"]);
        assert_eq!(ids(SortKey::Cpu), ["30", "12", "11", "9"]);
        assert_eq!(ids(SortKey::Rss), ["11", "30", "12", "9"]);
        assert_eq!(ids(SortKey::Age), ["9", "12", "11", "30"]);
    }

    #[test]
    fn the_filter_matches_the_status_line_ignoring_case() {
        let rows = vec![
            row("1", Some(0), b"GET /index"),
            row("2", Some(1), b"POST /upload"),
            row("3", Some(2), b"bin\xffary"),
        ];
        let shown = |f| visible(&rows, SortKey::Slot, f);
        assert_eq!(shown(""), [0, 1, 2]);
        assert_eq!(shown("post"), [1]);
        assert_eq!(shown("/"), [0, 1]);
        assert_eq!(shown("\\xff"), [2], "the escaped line is what is matched");
        assert!(shown("nothing").is_empty());
    }

    #[test]
    fn counts_and_compact_units() {
        let rows = vec![
            row("1", None, b"_"),
            row("2", None, b"GET"),
            row("3", None, b"_"),
        ];
        let counts = Counts::of(&rows);
        assert_eq!(counts.summary(), "2 idle, 1 busy");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(300 << 20), "300M");
        assert_eq!(duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(duration(Duration::from_secs(2 * 86400 + 3600)), "2d01h");
    }
}
