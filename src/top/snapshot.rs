//! What `prefork top` takes from the master's snapshot (`prefork.master`),
//! read tolerantly: every field may be missing or of another type (an older
//! or newer master), and is then unknown, never an error.

use std::collections::HashMap;
use std::time::Duration;

/// A slot of the master's, for the row of the worker in it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotInfo {
    pub slot: usize,
    pub restarts: Option<u64>,
    /// `"starting"`, `"running"`, ...
    pub state: String,
}

/// The spare-scaling bounds, when the master scales its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub struct Scaling {
    pub min_workers: Option<u64>,
    pub max_workers: Option<u64>,
    pub min_spare: Option<u64>,
    pub max_spare: Option<u64>,
}

/// The master's side of the header, and its slots by pid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MasterInfo {
    pub pid: Option<u64>,
    pub phase: Option<String>,
    /// Since the master started.
    pub uptime: Option<Duration>,
    pub live: Option<u64>,
    /// The number of slots the master keeps (`workers`).
    pub target: Option<u64>,
    /// The restarts of all slots, in use or not.
    pub restarts: u64,
    pub listen: Vec<String>,
    pub scaling: Option<Scaling>,
    /// The master's idle rule (`idle_status`), when it has a pattern.
    pub idle_status: Option<String>,
    /// A worker whose status is older than this is stuck.
    pub stuck_timeout: Option<Duration>,
    /// Slots in use, by worker pid (as the board's ids are written).
    pub slots: HashMap<String, SlotInfo>,
}

/// The snapshot's fields that `top` shows, as the master writes them: read
/// straight from the JSON (a thousand slots' tree is not built and
/// dropped each frame). A snapshot that does not fit (another master
/// version's) is read through [`MasterInfo::from_snapshot`] instead.
#[derive(serde::Deserialize)]
struct Typed<'a> {
    master_pid: Option<u64>,
    #[serde(borrow)]
    phase: Option<std::borrow::Cow<'a, str>>,
    started: Option<f64>,
    live: Option<u64>,
    workers: Option<u64>,
    #[serde(default)]
    listen: Vec<String>,
    scaling: Option<Scaling>,
    idle_status: Option<String>,
    stuck_timeout: Option<f64>,
    #[serde(default, borrow)]
    slots: Vec<TypedSlot<'a>>,
}

#[derive(serde::Deserialize)]
struct TypedSlot<'a> {
    slot: u64,
    pid: Option<u64>,
    #[serde(borrow)]
    state: std::borrow::Cow<'a, str>,
    restarts: Option<u64>,
}

impl MasterInfo {
    /// Reads the snapshot's JSON text; `now` is the Unix time in seconds.
    pub fn from_json(json: &[u8], now: f64) -> Option<MasterInfo> {
        let Ok(t) = serde_json::from_slice::<Typed>(json) else {
            let value: serde_json::Value = serde_json::from_slice(json).ok()?;
            return Some(MasterInfo::from_snapshot(&value, now));
        };
        let slots = t
            .slots
            .iter()
            .filter(|s| !matches!(&*s.state, "empty" | "parked"))
            .filter_map(|s| {
                let info = SlotInfo {
                    slot: s.slot as usize,
                    restarts: s.restarts,
                    state: s.state.to_string(),
                };
                Some((s.pid?.to_string(), info))
            })
            .collect();
        Some(MasterInfo {
            pid: t.master_pid,
            phase: t.phase.map(|p| p.into_owned()),
            uptime: t.started.map(|s| secs((now - s).max(0.0))),
            live: t.live,
            target: t.workers,
            restarts: t.slots.iter().filter_map(|s| s.restarts).sum(),
            listen: t.listen,
            scaling: t.scaling,
            idle_status: t.idle_status,
            stuck_timeout: t
                .stuck_timeout
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(secs),
            slots,
        })
    }

    /// Reads the snapshot `value`; `now` is the Unix time in seconds.
    pub fn from_snapshot(value: &serde_json::Value, now: f64) -> MasterInfo {
        let u64_of = |key: &str| value.get(key).and_then(|v| v.as_u64());
        let all_slots = value.get("slots").and_then(|s| s.as_array());
        let all_slots = all_slots.map_or(&[][..], Vec::as_slice);
        let slots: HashMap<String, SlotInfo> = all_slots.iter().filter_map(slot_info).collect();
        MasterInfo {
            pid: u64_of("master_pid"),
            phase: value.get("phase").and_then(|v| v.as_str()).map(Into::into),
            uptime: value
                .get("started")
                .and_then(|v| v.as_f64())
                .map(|t| secs((now - t).max(0.0))),
            live: u64_of("live"),
            target: u64_of("workers"),
            restarts: all_slots
                .iter()
                .filter_map(|s| s.get("restarts")?.as_u64())
                .sum(),
            listen: value
                .get("listen")
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
                .filter_map(|a| Some(a.as_str()?.to_string()))
                .collect(),
            scaling: value.get("scaling").and_then(scaling),
            idle_status: value
                .get("idle_status")
                .and_then(|v| v.as_str())
                .map(Into::into),
            stuck_timeout: value
                .get("stuck_timeout")
                .and_then(|v| v.as_f64())
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(secs),
            slots,
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// A slot with a worker in it, keyed by the worker's pid; `None` for an
/// empty or parked slot (no worker), or one that does not parse.
fn slot_info(slot: &serde_json::Value) -> Option<(String, SlotInfo)> {
    let state = slot.get("state").and_then(|v| v.as_str()).unwrap_or("");
    if matches!(state, "empty" | "parked") {
        return None;
    }
    let pid = slot.get("pid")?.as_u64()?;
    let info = SlotInfo {
        slot: slot.get("slot")?.as_u64()? as usize,
        restarts: slot.get("restarts").and_then(|v| v.as_u64()),
        state: state.to_string(),
    };
    Some((pid.to_string(), info))
}

fn scaling(value: &serde_json::Value) -> Option<Scaling> {
    let object = value.as_object()?;
    let get = |key: &str| object.get(key).and_then(|v| v.as_u64());
    Some(Scaling {
        min_workers: get("min_workers"),
        max_workers: get("max_workers"),
        min_spare: get("min_spare"),
        max_spare: get("max_spare"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_the_master_publishes_and_tolerates_the_rest() {
        let value = json!({
            "master_pid": 100, "started": 1000.0, "updated": 1009.0, "phase": "running",
            "workers": 3, "live": 2, "listen": ["127.0.0.1:8080", 7],
            "idle_status": "^ready$", "stuck_timeout": 30.0,
            "scaling": {"min_workers": 1, "max_workers": 8, "min_spare": 1, "max_spare": "x"},
            "slots": [
                {"slot": 0, "pid": 201, "state": "running", "since": 1001.0, "restarts": 2, "last_exit": null},
                {"slot": 1, "pid": 202, "state": "starting", "restarts": 1},
                {"slot": 2, "pid": null, "state": "empty", "restarts": 4},
                {"slot": 3, "pid": 203, "state": "parked", "restarts": 8},
                {"slot": "bad", "pid": 204, "state": "running"}
            ]
        });
        let info = MasterInfo::from_snapshot(&value, 1010.0);
        assert_eq!(info.pid, Some(100));
        assert_eq!(info.uptime, Some(Duration::from_secs(10)));
        assert_eq!((info.live, info.target), (Some(2), Some(3)));
        assert_eq!(info.listen, ["127.0.0.1:8080"]);
        assert_eq!(info.idle_status.as_deref(), Some("^ready$"));
        assert_eq!(info.stuck_timeout, Some(Duration::from_secs(30)));
        let scaling = info.scaling.unwrap();
        assert_eq!((scaling.max_workers, scaling.max_spare), (Some(8), None));
        assert_eq!(info.slots.len(), 2, "{:?}", info.slots);
        assert_eq!(info.slots["201"].slot, 0);
        assert_eq!(info.slots["202"].state, "starting");
        assert_eq!(info.restarts, 15, "the restarts of every slot");
    }

    #[test]
    fn the_typed_reading_agrees_with_the_tolerant_one() {
        let value = json!({
            "master_pid": 100, "started": 1000.0, "updated": 1009.0, "phase": "running",
            "workers": 3, "live": 2, "listen": ["127.0.0.1:8080"], "counters": {"spawned": 4},
            "idle_status": "^ready$", "stuck_timeout": 30.0, "idle": 1, "busy": 1, "starting": 0,
            "scaling": {"min_workers": 1, "max_workers": 8, "min_spare": 1, "max_spare": 3},
            "slots": [
                {"slot": 0, "pid": 201, "state": "running", "since": 1001.0, "restarts": 2, "last_exit": null},
                {"slot": 1, "pid": 202, "state": "starting", "restarts": 1},
                {"slot": 2, "pid": null, "state": "empty", "restarts": 4}
            ]
        });
        let text = serde_json::to_vec(&value).unwrap();
        let typed = MasterInfo::from_json(&text, 1010.0).unwrap();
        assert_eq!(typed, MasterInfo::from_snapshot(&value, 1010.0));
        // What does not fit the types goes the tolerant way.
        let odd = br#"{"master_pid": 7, "listen": ["a", 7], "slots": [{"slot": "x"}]}"#;
        let info = MasterInfo::from_json(odd, 0.0).unwrap();
        assert_eq!(
            (info.pid, info.listen.as_slice()),
            (Some(7), &["a".to_string()][..])
        );
        assert_eq!(MasterInfo::from_json(b"not json", 0.0), None);
    }

    #[test]
    fn an_older_master_without_the_new_fields_is_read_as_well() {
        let info = MasterInfo::from_snapshot(
            &json!({"master_pid": 1, "idle_status": null, "stuck_timeout": null, "scaling": null}),
            0.0,
        );
        assert_eq!(info.pid, Some(1));
        assert_eq!(info.idle_status, None);
        assert_eq!(info.stuck_timeout, None);
        assert_eq!(info.scaling, None);
        assert_eq!(info.uptime, None);
        assert!(info.slots.is_empty());
        let info = MasterInfo::from_snapshot(&json!([1, 2]), 0.0);
        assert_eq!(info, MasterInfo::default());
    }
}
