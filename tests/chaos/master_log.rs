//! The master's log, read as it grows: the workers it spawned, its resizes,
//! its answers to SIGHUP, its rollouts completed or aborted; what it says
//! mirrored in the driver's view of what the pool must be.

use super::configs::{Sent, Variant};
use super::driver::Chaos;

/// The master's acknowledgement of a SIGHUP, from its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Rolling,
    Reloaded,
    NotReloaded,
}

impl Chaos<'_> {
    /// Reads the master's log lines that are new since the last call.
    pub(super) fn scan_log(&mut self) {
        let log = self.master.stderr();
        let Some(end) = log[self.log_cursor..].rfind('\n') else {
            return;
        };
        let end = self.log_cursor + end + 1;
        let fresh = log[self.log_cursor..end].to_string();
        self.log_cursor = end;
        for line in fresh.lines() {
            self.log_line(line);
        }
    }

    fn log_line(&mut self, line: &str) {
        if line.contains("panicked") {
            self.findings
                .violation(format!("the master panicked: {line}"));
        }
        for alarm in [
            "waitpid failed",
            "cannot clean the scoreboard",
            "cannot write the board",
        ] {
            if line.contains(alarm) {
                self.findings
                    .violation(format!("the master logged: {line}"));
            }
        }
        if line.contains("max_lifetime reached") {
            // Not thrown by the driver: the master's own doing, counted to
            // show that it happened under fire.
            self.count("recycled for age");
        }
        if let Some(rest) = after(line, "spawned worker pid=") {
            let pid = leading_number(rest);
            let slot = after(rest, "slot=").and_then(leading_number);
            if let (Some(pid), Some(slot)) = (pid, slot) {
                *self.spawns.entry(slot as usize).or_default() += 1;
                self.spawned_pids.push(pid as i32);
                self.shared.lock().unwrap().spawned.push(pid as i32);
            }
            return;
        }
        for why in ["SIGTTIN", "SIGTTOU", "SIGHUP"] {
            if let Some((from, to)) = resize_line(line, why) {
                self.resized(why, from, to, line);
                return;
            }
            if let Some((min, max)) = bounds_line(line, why) {
                self.bounds_moved(why, min, max, line);
                return;
            }
        }
        for why in ["spare scaling", "min_workers"] {
            if let Some((from, to)) = scaling_line(line, why) {
                self.scaled(from, to, line);
                return;
            }
        }
        let ack = if line.contains("SIGHUP: configuration not reloaded") {
            Some(Ack::NotReloaded)
        } else if line.contains("SIGHUP: rolling ") {
            Some(Ack::Rolling)
        } else if line.contains("SIGHUP: configuration reloaded") {
            Some(Ack::Reloaded)
        } else {
            None
        };
        if let Some(ack) = ack {
            self.acknowledged(ack);
        } else if line.contains("rolling restart complete") {
            self.previous = None;
        } else if line.contains("rolling restart aborted") {
            self.aborted += 1;
            if let Some(previous) = self.previous.take() {
                // Only the command, environment and directory go back.
                self.current = Variant {
                    workers: self.current.workers,
                    kill_ms: self.current.kill_ms,
                    ..previous
                };
            }
        }
    }

    fn resized(&mut self, why: &'static str, from: usize, to: usize, line: &str) {
        *self.resizes.entry(why).or_default() += 1;
        let consistent = from == self.target
            && match why {
                "SIGTTIN" => to == from + 1,
                "SIGTTOU" => to + 1 == from && to >= 1,
                _ => to == self.current.workers,
            };
        if !consistent {
            self.findings.violation(format!(
                "resize inconsistent with the target {} (config workers {}): {line}",
                self.target, self.current.workers
            ));
        }
        self.target = to;
    }

    /// SIGTTIN/SIGTTOU on a self-sizing pool: floor and ceiling one up or
    /// down (the floor stays at 1 at least).
    fn bounds_moved(&mut self, why: &'static str, min: usize, max: usize, line: &str) {
        *self.resizes.entry(why).or_default() += 1;
        let Some(bounds) = self.spare.as_mut() else {
            return self
                .findings
                .violation(format!("bounds moved on a fixed pool: {line}"));
        };
        let expected = match why {
            "SIGTTIN" => (bounds.min_workers + 1, bounds.max_workers + 1),
            _ => ((bounds.min_workers - 1).max(1), bounds.max_workers - 1),
        };
        if (min, max) != expected {
            self.findings.violation(format!(
                "bounds {}..{} moved to {min}..{max}, expected {expected:?}: {line}",
                bounds.min_workers, bounds.max_workers
            ));
        }
        bounds.min_workers = min;
        bounds.max_workers = max;
    }

    /// A self-sizing pool changed its size: from the target we know, to a
    /// size within its bounds, one worker fewer at a time.
    fn scaled(&mut self, from: usize, to: usize, line: &str) {
        self.count(if to > from {
            "spare-grew"
        } else {
            "spare-shrank"
        });
        let Some(b) = self.spare else {
            return self
                .findings
                .violation(format!("a fixed pool scaled itself: {line}"));
        };
        // Growth up to the ceiling (or to the floor, after SIGTTIN raised
        // it); shrinking one worker at a time, never below the floor.
        let consistent = from == self.target
            && match to > from {
                true => to <= b.max_workers,
                false => to + 1 == from && to >= b.min_workers,
            };
        if !consistent {
            self.findings.violation(format!(
                "scaling inconsistent with the target {} and bounds {}..{}: {line}",
                self.target, b.min_workers, b.max_workers
            ));
        }
        self.target = to;
    }

    /// Mirrors what the master does with a SIGHUP it acknowledged.
    fn acknowledged(&mut self, ack: Ack) {
        self.answers.hups += 1;
        let Some(sent) = self.hups.pop_front() else {
            self.findings.violation(format!(
                "a SIGHUP acknowledged ({ack:?}) that was never sent"
            ));
            return;
        };
        let expected = match &sent {
            Sent::Broken(_) => Ack::NotReloaded,
            Sent::Valid(v) if v.arg != self.current.arg || v.env != self.current.env => {
                Ack::Rolling
            }
            Sent::Valid(_) => Ack::Reloaded,
        };
        if ack != expected {
            self.findings.violation(format!(
                "SIGHUP with {} over {}/{} answered {ack:?}, expected {expected:?}",
                sent.describe(),
                self.current.arg,
                self.current.env
            ));
        }
        if let (Sent::Valid(_), Some(bounds)) = (&sent, self.spare.as_mut()) {
            // A loaded file brings the file's bounds back.
            *bounds = super::driver::SPARE;
        }
        if let Sent::Valid(v) = sent {
            if ack == Ack::Rolling && self.previous.is_none() {
                self.previous = Some(self.current);
            }
            self.current = v;
        }
    }
}

fn after<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.find(key).map(|i| &line[i + key.len()..])
}

pub(super) fn leading_number(text: &str) -> Option<u64> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// `WHY: the pool now keeps MIN to MAX workers`.
fn bounds_line(line: &str, why: &str) -> Option<(usize, usize)> {
    let rest = after(line, &format!("{why}: the pool now keeps "))?;
    let (min, max) = rest.split_once(" to ")?;
    let max = max.strip_suffix(" workers")?;
    Some((min.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// `WHY: ...: FROM -> TO worker(s)...`: a self-sizing pool's own resize.
fn scaling_line(line: &str, why: &str) -> Option<(usize, usize)> {
    let rest = after(line, &format!("{why}: "))?;
    let (head, tail) = rest.split_once(" -> ")?;
    let from = head.rsplit(' ').next()?.trim().parse().ok()?;
    let to = tail.split(' ').next()?.parse().ok()?;
    Some((from, to))
}

/// `WHY: FROM -> TO worker(s)`.
fn resize_line(line: &str, why: &str) -> Option<(usize, usize)> {
    let rest = after(line, &format!("{why}: "))?;
    let (from, to) = rest.split_once(" -> ")?;
    let to = to.strip_suffix(" worker(s)")?;
    Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
}
