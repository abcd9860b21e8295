//! `prefork status`: the board of a running prefork (or of any program using
//! Parallel::Scoreboard) read from outside, without signals: as a table, as
//! JSON, or as a health check.
//!
//! A live worker is a file whose lock is held, whatever the file holds: one
//! whose record cannot be read is listed with why, and counts for
//! `--min-workers` (a probe must not restart a healthy pod over a damaged
//! status). The directory is read under the scoreboard's one ownership rule
//! (see [`Scoreboard::read_only`]): another user's board is read but never
//! written, so dead workers' files are left to its owner.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine;

use crate::render::{self, BoardRow};
use crate::scoreboard::{LiveWorker, Scoreboard, Status};

/// What the caller asked of the board.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub json: bool,
    /// Fewer live workers than this is a failed health check.
    pub min_workers: Option<usize>,
}

/// Prints the board of `dir`; returns whether the health check (if any)
/// passed.
pub fn run(dir: &Path, query: Query) -> Result<bool> {
    let board = Scoreboard::builder(dir)
        .monitor()
        .build()
        .with_context(|| format!("cannot read the scoreboard {}", dir.display()))?;
    let mut workers = board
        .live_workers()
        .with_context(|| format!("cannot read the scoreboard {}", dir.display()))?;
    workers.sort_by(|a, b| sort_key(&a.id).cmp(&sort_key(&b.id)));
    let now = SystemTime::now();
    let text = if query.json {
        let mut json =
            serde_json::to_string_pretty(&to_json(&workers, now)).expect("JSON of plain values");
        json.push('\n');
        json
    } else {
        let rows: Vec<BoardRow> = workers.iter().map(|w| to_row(w, now)).collect();
        let mut header = format!(
            "scoreboard {}: {} live worker(s)",
            dir.display(),
            workers.len()
        );
        let unreadable = workers.iter().filter(|w| w.status.unreadable().is_some());
        match unreadable.count() {
            0 => {}
            n => header.push_str(&format!(", {n} with an unreadable status")),
        }
        if let Some(why) = board.read_only() {
            header.push_str(&format!(
                " (read-only: {why}; dead workers' files are left in place)"
            ));
        }
        render::board_table(&header, &rows)
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to standard output")?;
    let healthy = query.min_workers.is_none_or(|min| workers.len() >= min);
    if !healthy {
        eprintln!(
            "prefork: {} live worker(s) on {}, fewer than --min-workers {}",
            workers.len(),
            dir.display(),
            query.min_workers.unwrap_or_default()
        );
    }
    Ok(healthy)
}

/// Numeric ids in numeric order, then the others by name.
fn sort_key(id: &str) -> (u64, &str) {
    (id.parse().unwrap_or(u64::MAX), id)
}

fn to_row(worker: &LiveWorker, now: SystemTime) -> BoardRow {
    BoardRow {
        id: worker.id.clone(),
        since_update: now.duration_since(worker.updated).unwrap_or_default(),
        status: worker.status.clone(),
    }
}

fn to_json(workers: &[LiveWorker], now: SystemTime) -> serde_json::Value {
    let entries = workers.iter().map(|w| {
        let updated = w
            .updated
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let age = now
            .duration_since(w.updated)
            .unwrap_or_default()
            .as_secs_f64();
        let mut entry = serde_json::json!({
            "id": w.id,
            "updated": updated,
            "age_secs": age,
            "status": w.status.written().map(String::from_utf8_lossy),
        });
        if let Ok(pid) = w.id.parse::<u32>() {
            entry["pid"] = pid.into();
        }
        if let Status::Unreadable(why) = &w.status {
            entry["unreadable"] = why.to_string().into();
        }
        if let Some(status) = w
            .status
            .written()
            .filter(|s| std::str::from_utf8(s).is_err())
        {
            entry["status_base64"] = base64::engine::general_purpose::STANDARD
                .encode(status)
                .into();
        }
        entry
    });
    serde_json::Value::Array(entries.collect())
}
