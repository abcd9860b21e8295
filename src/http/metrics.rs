//! `/metrics`: the pool in Prometheus's text exposition format, 0.0.4.
//!
//! Written by the `prometheus-client` crate (its `prometheus_text`
//! encoder), not by hand: it owns the format's details (the escaping of
//! help and label values, `_total` on counters, cumulative histogram
//! buckets, Go's spelling of `le` bounds), which is where hand-written
//! exporters go wrong. The pool's figures are not the crate's atomics: a
//! [`Collector`] built from the view at each request hands them to the
//! encoder as constants. That costs one copy of the figures (not of the
//! statuses) per scrape, well under the 2 ms budget for 1000 slots (see
//! `benches/status_http.rs`).
//!
//! Every label value is a slot number or one of a fixed set of words:
//! never a pid, nor a status, which would grow the series without bound.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::view::{Bounds, Histogram, PoolView};

/// Prometheus's text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The slot states, each always exposed (0 when none is in it).
const STATES: [&str; 3] = ["empty", "starting", "running"];
/// The reasons a worker ends, and the outcomes of a reload: each always
/// exposed, so that a rate over them starts from 0, not from nothing.
const REASONS: [&str; 6] = [
    "exit_ok",
    "exit_error",
    "signal",
    "stuck",
    "not_ready",
    "spawn_failed",
];
const OUTCOMES: [&str; 3] = ["ok", "failed", "aborted"];

/// The exposition of `view`.
pub fn render(view: &PoolView) -> String {
    let mut registry = Registry::with_prefix("prefork");
    registry.register_collector(Box::new(Figures::of(view)));
    let mut text = String::with_capacity(256 + 48 * view.slots.len());
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

/// The figures of one scrape, copied from the view (the collector must own
/// what it encodes).
#[derive(Debug)]
struct Figures {
    states: [(&'static str, i64); 3],
    target: i64,
    min_workers: i64,
    uptime: f64,
    spawned: u64,
    exits: Vec<(&'static str, u64)>,
    stuck_kills: u64,
    spawn_failures: u64,
    reloads: Vec<(&'static str, u64)>,
    output_dropped: u64,
    respawn_latency: Histogram,
    board_check: Histogram,
    /// (slot, seconds since its worker's last status update).
    ages: Vec<(u64, f64)>,
    activity: [(&'static str, i64); 3],
    bounds: Option<Bounds>,
    grown: u64,
    shrunk: u64,
}

impl Figures {
    fn of(view: &PoolView) -> Figures {
        let mut states = STATES.map(|s| (s, 0));
        for slot in &view.slots {
            if let Some(count) = states.iter_mut().find(|(s, _)| *s == slot.state) {
                count.1 += 1;
            }
        }
        Figures {
            states,
            target: view.target as i64,
            min_workers: view.min_workers as i64,
            uptime: view.uptime.as_secs_f64(),
            spawned: view.counts.spawned,
            exits: every(&REASONS, &view.counts.exits),
            stuck_kills: view.counts.stuck_kills,
            spawn_failures: view.counts.spawn_failures,
            reloads: every(&OUTCOMES, &view.counts.reloads),
            output_dropped: view.counts.output_dropped,
            respawn_latency: view.respawn_latency.clone(),
            board_check: view.board_check.clone(),
            ages: view
                .slots
                .iter()
                .filter_map(|s| Some((s.slot as u64, s.since_update?.as_secs_f64())))
                .collect(),
            activity: [
                ("idle", view.activity.idle as i64),
                ("busy", view.activity.busy as i64),
                ("starting", view.activity.starting as i64),
            ],
            bounds: view.bounds,
            grown: view.counts.grown,
            shrunk: view.counts.shrunk,
        }
    }
}

/// `known` labels with their counts in `counted` (0 when absent), then any
/// other label `counted` has.
fn every(known: &[&'static str], counted: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    let count = |label: &str| {
        counted
            .iter()
            .filter(|(l, _)| *l == label)
            .map(|(_, n)| n)
            .sum()
    };
    let mut all: Vec<(&'static str, u64)> = known.iter().map(|&l| (l, count(l))).collect();
    all.extend(counted.iter().filter(|(l, _)| !known.contains(l)));
    all
}

type Result = std::result::Result<(), std::fmt::Error>;

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A counter with one label, one sample per (value, count).
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&'static str, u64)],
) -> Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        ConstCounter::new(*count).encode(metric.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    // Per bucket, not cumulative (the encoder sums them); robust to a
    // view whose counts do not match its bounds.
    let at = |i: usize| h.counts.get(i).copied().unwrap_or(0);
    let mut buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .enumerate()
        .map(|(i, &bound)| (bound, at(i)))
        .collect();
    buckets.push((f64::INFINITY, at(h.bounds.len())));
    let count = buckets.iter().map(|(_, n)| n).sum();
    metric.encode_histogram::<NoLabelSet>(h.sum, count, &buckets, None)
}

impl Collector for Figures {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result {
        let enc = &mut enc;
        let mut workers = enc.encode_descriptor(
            "workers",
            "Slots of the pool by state: empty (no worker: between a death and the next \
             spawn, or backing off), starting (not ready yet), running.",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in self.states {
            ConstGauge::new(count).encode(workers.encode_family(&[("state", state)])?)?;
        }
        gauge(
            enc,
            "workers_target",
            "Workers the pool keeps now (a self-sizing pool's current size).",
            self.target,
        )?;
        gauge(
            enc,
            "workers_min",
            "Live workers below which /healthz fails (min_workers); a self-sizing pool's floor.",
            self.min_workers,
        )?;
        let mut activity = enc.encode_descriptor(
            "worker_activity",
            "The pool's workers by what their status says (the idle rule): idle, busy \
             (anything else, or no status), starting (not ready yet, or waiting to be started).",
            None,
            MetricType::Gauge,
        )?;
        for (what, count) in self.activity {
            ConstGauge::new(count).encode(activity.encode_family(&[("activity", what)])?)?;
        }
        if let Some(b) = self.bounds {
            gauge(
                enc,
                "workers_max",
                "The most workers a self-sizing pool may grow to (max_workers).",
                b.max_workers as i64,
            )?;
            gauge(
                enc,
                "spare_min",
                "A self-sizing pool grows while fewer workers are idle or starting (min_spare).",
                b.min_spare as i64,
            )?;
            gauge(
                enc,
                "spare_max",
                "A self-sizing pool shrinks while more workers are idle or starting (max_spare).",
                b.max_spare as i64,
            )?;
        }
        counter(
            enc,
            "scaled_up_workers",
            "Workers a self-sizing pool added because too few were idle.",
            self.grown,
        )?;
        counter(
            enc,
            "scaled_down_workers",
            "Workers a self-sizing pool retired because too many were idle.",
            self.shrunk,
        )?;
        counter(
            enc,
            "spawns",
            "Workers started, first starts and restarts.",
            self.spawned,
        )?;
        counters(
            enc,
            "worker_exits",
            "Workers ended, by reason: exit_ok (exit code 0), exit_error (another exit code), \
             signal (killed by a signal the master did not send), stuck (killed as stuck), \
             not_ready (killed for not becoming ready in time), spawn_failed (fork, set-up or \
             exec failed).",
            "reason",
            &self.exits,
        )?;
        counter(
            enc,
            "stuck_kills",
            "Workers killed because their status went stale (stuck).",
            self.stuck_kills,
        )?;
        counter(
            enc,
            "spawn_failures",
            "Worker starts that failed: fork, set-up or exec.",
            self.spawn_failures,
        )?;
        counters(
            enc,
            "reloads",
            "Reloads (SIGHUP) by outcome: ok (rolled out), failed (the new configuration was \
             refused), aborted (the rollout was given up).",
            "outcome",
            &self.reloads,
        )?;
        counter(
            enc,
            "output_dropped_lines",
            "Lines of the master's own output (log, SIGUSR1 board) dropped because nobody \
             read them fast enough.",
            self.output_dropped,
        )?;
        histogram(
            enc,
            "respawn_latency_seconds",
            "Seconds from a worker's death to its replacement's exec.",
            &self.respawn_latency,
        )?;
        histogram(
            enc,
            "board_check_seconds",
            "Seconds one check of the scoreboard took.",
            &self.board_check,
        )?;
        let mut ages = enc.encode_descriptor(
            "slot_status_age_seconds",
            "Seconds since the slot's worker last wrote its status (slots whose worker has \
             written one).",
            None,
            MetricType::Gauge,
        )?;
        for (slot, age) in &self.ages {
            ConstGauge::new(*age).encode(ages.encode_family(&[("slot", *slot)])?)?;
        }
        gauge(
            enc,
            "uptime_seconds",
            "Seconds since the master started.",
            self.uptime,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::view::{Counts, SlotView};
    use std::time::Duration;

    #[test]
    fn every_family_once_with_bounded_labels() {
        let mut latency = Histogram::new(&[0.001, 0.01]);
        latency.observe(0.0005);
        latency.observe(0.5);
        let view = PoolView {
            target: 2,
            slots: vec![
                SlotView {
                    slot: 0,
                    pid: Some(4242),
                    state: "running",
                    since_update: Some(Duration::from_millis(1500)),
                    status: Some(b"GET /secret\n".to_vec()),
                    ..SlotView::default()
                },
                SlotView {
                    slot: 1,
                    state: "empty",
                    ..SlotView::default()
                },
            ],
            counts: Counts {
                exits: vec![("exit_ok", 3), ("signal", 1)],
                reloads: vec![("ok", 1)],
                ..Counts::default()
            },
            respawn_latency: latency,
            ..PoolView::default()
        };
        let text = render(&view);
        for line in [
            "prefork_workers{state=\"running\"} 1",
            "prefork_workers{state=\"empty\"} 1",
            "prefork_workers{state=\"starting\"} 0",
            "prefork_workers_target 2",
            "prefork_worker_exits_total{reason=\"exit_ok\"} 3",
            "prefork_reloads_total{outcome=\"ok\"} 1",
            "prefork_reloads_total{outcome=\"aborted\"} 0",
            "prefork_worker_exits_total{reason=\"not_ready\"} 0",
            "prefork_respawn_latency_seconds_bucket{le=\"0.001\"} 1",
            "prefork_respawn_latency_seconds_bucket{le=\"0.01\"} 1",
            "prefork_respawn_latency_seconds_bucket{le=\"+Inf\"} 2",
            "prefork_respawn_latency_seconds_count 2",
            "prefork_slot_status_age_seconds{slot=\"0\"} 1.5",
            "# TYPE prefork_stuck_kills_total counter",
            "# TYPE prefork_board_check_seconds histogram",
            "# TYPE prefork_output_dropped_lines_total counter",
            "# TYPE prefork_uptime_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("4242") && !text.contains("secret"), "{text}");
        assert!(!text.contains("slot=\"1\""), "{text}");
    }
}
