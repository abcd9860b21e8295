//! A frame as plain text: what `prefork top --once` prints, or `prefork
//! top` when its output is not a terminal. No escape codes, no colour. The
//! header's lines and the cells of a row are the live view's too.

use std::fmt::Write;

use super::model::{self, Frame, Row, SortKey};

/// The column titles; the status is last and takes the rest of the line.
pub const TITLES: [&str; 8] = [
    "SLOT", "PID", "STATE", "AGE", "CPU%", "RSS", "RESTARTS", "STATUS",
];
/// The widths of the columns before the status, right-aligned but STATE.
pub const WIDTHS: [usize; 7] = [4, 8, 10, 7, 6, 6, 8];

/// The header: the board and its counts, then (where a master runs it) the
/// master's line.
pub fn header(frame: &Frame) -> Vec<String> {
    let mut lines = vec![format!(
        "scoreboard {}: {} live worker(s): {}",
        frame.dir.display(),
        frame.rows.len(),
        frame.counts.summary()
    )];
    if let Some(m) = &frame.master {
        let unknown = || "?".to_string();
        let mut line = format!(
            "master pid={} {}, up {}, workers {}/{}, restarts {}",
            m.pid.map_or_else(unknown, |p| p.to_string()),
            m.phase.as_deref().unwrap_or("?"),
            m.uptime.map_or_else(unknown, model::duration),
            m.live.map_or_else(unknown, |n| n.to_string()),
            m.target.map_or_else(unknown, |n| n.to_string()),
            m.restarts,
        );
        if let Some(s) = &m.scaling {
            let n = |v: Option<u64>| v.map_or_else(unknown, |n| n.to_string());
            let _ = write!(
                line,
                ", scaling {}..{} workers, {}..{} spare",
                n(s.min_workers),
                n(s.max_workers),
                n(s.min_spare),
                n(s.max_spare)
            );
        }
        if !m.listen.is_empty() {
            let _ = write!(line, ", listening on {}", m.listen.join(" "));
        }
        lines.push(line);
    }
    lines
}

/// The cells of a row, as the table shows them.
pub fn cells(row: &Row) -> [String; 8] {
    let dash = || "-".to_string();
    [
        row.slot.map_or_else(dash, |s| s.to_string()),
        row.id.clone(),
        row.state.as_str().to_string(),
        model::duration(row.age),
        row.cpu.map_or_else(dash, |c| format!("{c:.1}")),
        row.rss.map_or_else(dash, model::bytes),
        row.restarts.map_or_else(dash, |r| r.to_string()),
        row.line.clone(),
    ]
}

/// The frame as text, rows in `sort`'s order; every line cut to `width`
/// characters when one is given.
pub fn render(frame: &Frame, sort: SortKey, width: Option<usize>) -> String {
    let mut lines = header(frame);
    match &frame.error {
        Some(error) => lines.push(error.clone()),
        None => {
            lines.push(line(&TITLES.map(String::from)));
            for i in model::visible(&frame.rows, sort, "") {
                lines.push(line(&cells(&frame.rows[i])));
            }
        }
    }
    let mut out = String::new();
    for l in lines {
        match width {
            Some(w) => out.extend(l.chars().take(w)),
            None => out.push_str(&l),
        }
        out.push('\n');
    }
    out
}

fn line(cells: &[String; 8]) -> String {
    let mut out = String::new();
    for (i, (cell, width)) in cells.iter().zip(WIDTHS).enumerate() {
        let _ = match i {
            2 => write!(out, "{cell:<width$} "),
            _ => write!(out, "{cell:>width$} "),
        };
    }
    out.push_str(&cells[7]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::row;
    use crate::top::model::Counts;
    use crate::top::snapshot::MasterInfo;
    use std::time::Duration;

    fn frame() -> Frame {
        let mut rows = vec![
            row("4243", Some(1), b"GET /a\x1b[31m\nlong status"),
            row("4242", Some(0), b"_"),
            row("77", None, b"perl busy"),
        ];
        rows[0].cpu = Some(12.34);
        rows[0].rss = Some(3 << 20);
        rows[0].restarts = Some(2);
        let counts = Counts::of(&rows);
        Frame {
            dir: "/run/board".into(),
            error: None,
            master: Some(MasterInfo {
                pid: Some(4000),
                phase: Some("running".into()),
                uptime: Some(Duration::from_secs(187)),
                live: Some(2),
                target: Some(2),
                listen: vec!["127.0.0.1:8080".into()],
                ..MasterInfo::default()
            }),
            rows,
            counts,
        }
    }

    #[test]
    fn a_plain_frame_has_the_header_the_titles_and_a_line_per_worker() {
        let text = render(&frame(), SortKey::Slot, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            lines[0],
            "scoreboard /run/board: 3 live worker(s): 1 idle, 2 busy"
        );
        assert_eq!(
            lines[1],
            "master pid=4000 running, up 3m07s, workers 2/2, restarts 0, listening on 127.0.0.1:8080"
        );
        assert!(lines[2].starts_with("SLOT      PID STATE"), "{text}");
        assert!(lines[3].contains("4242 idle"), "{text}");
        assert!(
            lines[4].ends_with("GET /a\\u{1b}[31m\\nlong status"),
            "{text}"
        );
        assert!(lines[4].contains("12.3   3.0M        2"), "{text}");
        assert!(lines[5].starts_with("   -       77 busy"), "{text}");
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn lines_are_cut_to_the_width_and_an_error_replaces_the_table() {
        let text = render(&frame(), SortKey::Slot, Some(30));
        assert!(text.lines().all(|l| l.chars().count() <= 30), "{text}");
        let mut gone = frame();
        gone.error = Some("scoreboard /run/board is gone: No such file".into());
        gone.master = None;
        gone.rows.clear();
        gone.counts = Counts::default();
        let text = render(&gone, SortKey::Slot, None);
        assert_eq!(
            text,
            "scoreboard /run/board: 0 live worker(s): 0 idle, 0 busy\n\
             scoreboard /run/board is gone: No such file\n"
        );
    }
}
