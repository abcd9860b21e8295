//! The summary of a run: what was thrown, how fast the pool converged, the
//! master's footprint and the sampler's measures, as JSON and in a few lines
//! for people; and the test's failure with every violation.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::driver::Chaos;
use super::sampler::SamplerStats;

/// What the test itself knows of its run.
pub(super) struct Run {
    pub(super) seed: u64,
    pub(super) secs: u64,
    pub(super) rounds: u64,
    pub(super) thrown_for: Duration,
    pub(super) startup: Option<Duration>,
    pub(super) last_convergence: Option<Duration>,
}

/// The first, the last and the largest of a measure taken after each round.
pub(super) fn span<T: Copy + Ord + Default>(measured: &[T]) -> (T, T, T) {
    let (first, last) = (measured[0], *measured.last().expect("measured"));
    (
        first,
        last,
        measured.iter().copied().max().unwrap_or_default(),
    )
}

/// The whole run as JSON.
pub(super) fn summary(
    chaos: &Chaos,
    s: &SamplerStats,
    violations: &[(f64, String)],
    run: &Run,
) -> serde_json::Value {
    let (seed, secs, rounds) = (run.seed, run.secs, run.rounds);
    let (rss_start, rss_end, rss_max) = span(&chaos.rss);
    let (fds_start, fds_end, fds_max) = span(&chaos.fds);
    let stats_of = |mut v: Vec<Duration>| {
        v.sort();
        serde_json::json!({
            "rounds": v.len(),
            "p50_ms": ms(percentile(&v, 0.5)),
            "p99_ms": ms(percentile(&v, 0.99)),
            "max_ms": ms(v.last().copied().unwrap_or_default()),
        })
    };
    let all = stats_of(chaos.convergence.iter().map(|c| c.0).collect());
    let disturbed = stats_of(
        chaos
            .convergence
            .iter()
            .filter(|c| c.1)
            .map(|c| c.0)
            .collect(),
    );
    let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for (d, _, kinds) in &chaos.convergence {
        let unique: HashSet<&&str> = kinds.iter().collect();
        for kind in unique {
            by_kind.entry(kind).or_default().push(*d);
        }
    }
    let per_kind: BTreeMap<&str, serde_json::Value> = by_kind
        .into_iter()
        .map(|(kind, v)| (kind, stats_of(v)))
        .collect();
    serde_json::json!({
        "seed": seed,
        "requested_secs": secs,
        "thrown_secs": run.thrown_for.as_secs_f64(),
        "total_secs": chaos.findings.start.elapsed().as_secs_f64(),
        "rounds": rounds,
        "thrown": chaos.thrown,
        "violations": violations.iter().map(|(t, v)| serde_json::json!({"t_secs": t, "what": v})).collect::<Vec<_>>(),
        "convergence": {
            "all_rounds": all,
            "disturbed_rounds": disturbed,
            "startup_ms": run.startup.map(ms),
            "final_ms": run.last_convergence.map(ms),
            "by_kind": per_kind,
        },
        "master": {
            "rss_kib": {"start": rss_start, "end": rss_end, "max": rss_max, "per_round": chaos.rss},
            "fds": {"start": fds_start, "end": fds_end, "max": fds_max},
            "spawns": chaos.spawns.values().sum::<u64>(),
            "hups_answered": chaos.answers.hups,
            "rollouts_aborted": chaos.aborted,
            "dumps": chaos.dumps,
            "dumps_checked": chaos.answers.dumps_checked,
            "storms": chaos.answers.storms,
            "storm_signals": chaos.answers.storm_signals,
            "dumps_per_storm": chaos.answers.storm_dumps,
            "crash_loops_checked": chaos.answers.crash_loops.len(),
            "crash_loop_spawns_most": chaos.answers.crash_loops.iter().map(|c| c.1).max(),
            "crash_loops_ms_spawns_bound": chaos.answers.crash_loops,
            "status_calls": chaos.answers.status_calls,
            "status_longest_ms": ms(chaos.answers.status_longest),
            "log_bytes": chaos.master.stderr().len(),
        },
        "sampler": {
            "samples": s.samples,
            "longest_gap_ms": ms(s.longest_gap),
            "workers_seen": s.workers_seen,
            "zombies_seen": s.zombies_seen,
            "longest_zombie_ms": ms(s.longest_zombie),
            "longest_zombie_charged_ms": ms(s.longest_zombie_charged),
            "groups_drained": s.groups_drained,
            "longest_group_drain_ms": ms(s.longest_group_drain),
            "dead_files_seen": s.dead_files_seen,
            "longest_dead_file_ms": ms(s.longest_dead_file),
            "planted_removed": s.planted_removed,
            "longest_planted_removal_ms": ms(s.longest_planted_removal),
        },
    })
}

/// Prints the summary (in a few lines, then as JSON), writes it to
/// `PREFORK_CHAOS_REPORT` if set, and fails the test with every violation
/// and the master's last log lines.
pub(super) fn publish(
    summary: &serde_json::Value,
    violations: &[(f64, String)],
    run: &Run,
    chaos: &Chaos,
) {
    let (seed, secs) = (run.seed, run.secs);
    println!("{}", human_summary(summary));
    let pretty = serde_json::to_string_pretty(summary).expect("JSON of plain values");
    println!("chaos summary as JSON:\n{pretty}");
    if let Ok(path) = std::env::var("PREFORK_CHAOS_REPORT") {
        std::fs::write(&path, format!("{pretty}\n")).expect("write PREFORK_CHAOS_REPORT");
    }
    if !violations.is_empty() {
        let list: Vec<String> = violations
            .iter()
            .map(|(t, v)| format!("  seed={seed} t={t:.3}s: {v}"))
            .collect();
        let log = chaos.master.stderr();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{} violation(s) under fire (replay: PREFORK_CHAOS_SEED={seed} PREFORK_CHAOS_SECS={secs}):\n{}\n\
             --- the master's last log lines ---\n{}",
            violations.len(),
            list.join("\n"),
            tail.join("\n")
        );
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The summary in a few lines, for people.
fn human_summary(s: &serde_json::Value) -> String {
    let thrown: Vec<String> = s["thrown"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    let conv = |v: &serde_json::Value| {
        format!(
            "{} rounds, p50 {} ms, p99 {} ms, max {} ms",
            v["rounds"], v["p50_ms"], v["p99_ms"], v["max_ms"]
        )
    };
    let (c, m, z) = (&s["convergence"], &s["master"], &s["sampler"]);
    let violations: Vec<String> = s["violations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    format!(
                        "    t={:.3}s {}",
                        v["t_secs"].as_f64().unwrap_or(0.0),
                        v["what"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "chaos summary: seed={} thrown for {:.1} s in {} rounds ({:.1} s in all)\n\
         \x20 thrown: {}\n\
         \x20 convergence: all {}; disturbed {}; start {} ms, final {} ms\n\
         \x20 master: RSS {} -> {} KiB (max {}), descriptors {} -> {} (max {}); {} spawns, \
         {} SIGHUPs answered, {} dumps ({} storms), {} status calls (longest {} ms)\n\
         \x20 sampler: {} samples; zombies {} (longest {} ms, {} ms charged to the master), groups drained {} (longest {} ms), \
         dead files {} (longest {} ms), planted removed {} (longest {} ms)\n\
         \x20 violations: {}{}",
        s["seed"],
        s["thrown_secs"].as_f64().unwrap_or(0.0),
        s["rounds"],
        s["total_secs"].as_f64().unwrap_or(0.0),
        thrown.join(" "),
        conv(&c["all_rounds"]),
        conv(&c["disturbed_rounds"]),
        c["startup_ms"],
        c["final_ms"],
        m["rss_kib"]["start"],
        m["rss_kib"]["end"],
        m["rss_kib"]["max"],
        m["fds"]["start"],
        m["fds"]["end"],
        m["fds"]["max"],
        m["spawns"],
        m["hups_answered"],
        m["dumps"],
        m["storms"],
        m["status_calls"],
        m["status_longest_ms"],
        z["samples"],
        z["zombies_seen"],
        z["longest_zombie_ms"],
        z["longest_zombie_charged_ms"],
        z["groups_drained"],
        z["longest_group_drain_ms"],
        z["dead_files_seen"],
        z["longest_dead_file_ms"],
        z["planted_removed"],
        z["longest_planted_removal_ms"],
        violations.len(),
        if violations.is_empty() {
            String::new()
        } else {
            format!("\n{}", violations.join("\n"))
        },
    )
}
