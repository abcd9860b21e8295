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

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine;

use crate::idle::IdleRule;
use crate::render::{self, BoardRow, Columns, MasterSummary, Row};
use crate::scoreboard::{LiveWorker, Scoreboard, Status};
use crate::supervisor::core::{Activity, Bounds};
use crate::supervisor::master_file;

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
    let master = master_file::read(dir).map(Master::from);
    let text = if query.json {
        let mut json = serde_json::to_string_pretty(&to_json(&workers, master.as_ref(), now))
            .expect("JSON of plain values");
        json.push('\n');
        json
    } else {
        let mut header = format!(
            "scoreboard {}: {} live worker(s)",
            dir.display(),
            workers.len()
        );
        if let Some(master) = &master {
            header.push_str(&format!("; {}", master.summary));
        }
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
        match &master {
            Some(master) => {
                let rows: Vec<Row> = workers.iter().map(|w| master.row(w, now)).collect();
                render::table(&header, &rows, Columns::Supervisor)
            }
            None => {
                let rows: Vec<BoardRow> = workers.iter().map(|w| to_row(w, now)).collect();
                render::board_table(&header, &rows)
            }
        }
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

/// What the board's master says of its slots (its `prefork.master` file),
/// by pid: what the SIGUSR1 dump shows, read without a signal.
struct Master {
    summary: String,
    pid: u64,
    /// Where its workers' sockets listen.
    listen: Vec<String>,
    slots: HashMap<String, serde_json::Value>,
    /// Its idle rule.
    idle: IdleRule,
}

impl From<serde_json::Value> for Master {
    fn from(snapshot: serde_json::Value) -> Master {
        let number = |key: &str| snapshot.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        let started = snapshot.get("started").and_then(|v| v.as_f64());
        let uptime = started.map_or(0.0, |t| (unix_now() - t).max(0.0));
        let phase = snapshot
            .get("phase")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        let slots: HashMap<String, serde_json::Value> = snapshot
            .get("slots")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
            .filter_map(|slot| Some((slot.get("pid")?.as_u64()?.to_string(), slot.clone())))
            .collect();
        let restarts: u64 = slots
            .values()
            .filter_map(|s| s.get("restarts")?.as_u64())
            .sum();
        let listen: Vec<String> = snapshot
            .get("listen")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .filter_map(|a| Some(a.as_str()?.to_string()))
            .collect();
        let bounds = snapshot.get("scaling").filter(|s| s.is_object()).map(|s| {
            let bound = |key: &str| s.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
            Bounds {
                min_workers: bound("min_workers"),
                max_workers: bound("max_workers"),
                min_spare: bound("min_spare"),
                max_spare: bound("max_spare"),
            }
        });
        // The master's own rule, so that both count alike; a pattern this
        // build cannot compile (a newer master's) falls back to the default.
        let idle = snapshot
            .get("idle_status")
            .and_then(|v| v.as_str())
            .and_then(|p| IdleRule::pattern(p).ok())
            .unwrap_or_default();
        Master {
            summary: MasterSummary {
                pid: number("master_pid"),
                phase,
                live: number("live") as usize,
                target: number("workers") as usize,
                activity: Activity {
                    idle: number("idle") as usize,
                    busy: number("busy") as usize,
                    starting: number("starting") as usize,
                },
                bounds,
                restarts,
                uptime: Duration::try_from_secs_f64(uptime).unwrap_or_default(),
                listen: &listen,
            }
            .line(),
            pid: number("master_pid"),
            listen,
            slots,
            idle,
        }
    }
}

impl Master {
    fn slot(&self, worker: &LiveWorker) -> Option<&serde_json::Value> {
        self.slots.get(&worker.id)
    }

    fn row(&self, worker: &LiveWorker, now: SystemTime) -> Row {
        let slot = self.slot(worker);
        let field = |key: &str| slot.and_then(|s| s.get(key));
        Row {
            slot: field("slot").and_then(|v| v.as_u64()).map(|v| v as usize),
            id: worker.id.clone(),
            uptime: field("since")
                .and_then(|v| v.as_f64())
                // A time no master writes (far past, not finite) is no uptime,
                // not a panic.
                .and_then(|t| Duration::try_from_secs_f64((unix_now() - t).max(0.0)).ok()),
            since_update: Some(now.duration_since(worker.updated).unwrap_or_default()),
            restarts: field("restarts").and_then(|v| v.as_u64()),
            last_exit: field("last_exit")
                .and_then(|v| v.as_str())
                .map(String::from),
            status: worker.status.clone(),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn to_json(workers: &[LiveWorker], master: Option<&Master>, now: SystemTime) -> serde_json::Value {
    let default = IdleRule::Default;
    let rule = master.map_or(&default, |m| &m.idle);
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
            "idle": w.status.written().is_some_and(|s| rule.is_idle(s)),
        });
        if let Ok(pid) = w.id.parse::<u32>() {
            entry["pid"] = pid.into();
        }
        if let Some(master) = master {
            entry["master_pid"] = master.pid.into();
            entry["listen"] = master.listen.clone().into();
            if let Some(slot) = master.slot(w) {
                for key in ["slot", "state", "restarts", "last_exit"] {
                    entry[key] = slot.get(key).cloned().unwrap_or_default();
                }
                if let Some(since) = slot.get("since").and_then(|v| v.as_f64()) {
                    entry["uptime_secs"] = (unix_now() - since).max(0.0).into();
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A master file is on a board anyone may have written: times no master
    /// writes are shown as unknown, never a panic.
    #[test]
    fn times_out_of_range_in_a_master_file_are_no_uptime() {
        let master = Master::from(serde_json::json!({
            "master_pid": 7,
            "started": -1e308,
            "slots": [{"slot": 0, "pid": 12, "since": -1e308, "restarts": 1}],
        }));
        assert!(
            master.summary.contains("master pid=7"),
            "{}",
            master.summary
        );
        let worker = LiveWorker {
            id: "12".into(),
            updated: SystemTime::now(),
            status: Status::NotYet,
        };
        let row = master.row(&worker, SystemTime::now());
        assert_eq!(row.slot, Some(0));
        assert_eq!(row.uptime, None);
        assert_eq!(row.restarts, Some(1));
    }
}
