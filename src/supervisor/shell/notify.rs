//! What the service manager is told, and when: `READY=1` once every first
//! worker is ready, `RELOADING=1` and `READY=1` around a SIGHUP reload (so
//! that `systemctl reload` waits for the rollout), `STOPPING=1`, `STATUS=`
//! when the summary changes, and `WATCHDOG=1` from the loop itself: a loop
//! that stops turning stops petting, and systemd restarts it.

use std::time::Instant;

use super::Shell;
use crate::supervisor::core::PhaseName;
use crate::supervisor::notify::{monotonic_usec, Notifier};

/// Where the conversation with the service manager stands.
#[derive(Default)]
pub(in crate::supervisor) struct Notified {
    ready: bool,
    /// `RELOADING=1` was sent; `READY=1` follows once the reload is over.
    reloading: bool,
    stopping: bool,
    status: String,
    next_watchdog: Option<Instant>,
}

impl Shell {
    fn notifier(&mut self) -> Option<&mut Notifier> {
        self.notifier.as_mut()
    }

    /// After each turn: readiness, the end of a reload, the watchdog.
    pub(super) fn notify_progress(&mut self, now: Instant) {
        let Some(notifier) = self.notifier.as_mut() else {
            return;
        };
        let phase = self.pool.phase_name();
        let mut lines = Vec::new();
        if !self.notified.ready && phase != PhaseName::Starting && self.pool.all_ready() {
            self.notified.ready = true;
            self.notified.reloading = false;
            lines.push("READY=1".to_string());
        }
        if self.notified.reloading && phase != PhaseName::Reloading && self.notified.ready {
            self.notified.reloading = false;
            lines.push("READY=1".to_string());
        }
        if !lines.is_empty() {
            let status = self.pool.summary();
            lines.push(format!("STATUS={status}"));
            self.notified.status = status;
            notifier.send(lines.join("\n"));
        }
        if let Some(every) = notifier.watchdog {
            let due = *self.notified.next_watchdog.get_or_insert(now);
            if due <= now {
                notifier.send("WATCHDOG=1".to_string());
                self.notified.next_watchdog = Some(now + every);
            }
        }
    }

    /// When the pool's summary changed (called with the master file's
    /// publication, so at most every 100 ms).
    pub(super) fn notify_status(&mut self) {
        if self.notifier.is_none() {
            return;
        }
        let status = self.pool.summary();
        if status != self.notified.status {
            self.notified.status = status.clone();
            if let Some(n) = self.notifier() {
                n.send(format!("STATUS={status}"));
            }
        }
    }

    /// A SIGHUP reload begins.
    pub(super) fn notify_reloading(&mut self) {
        let ready = self.notified.ready;
        if let Some(n) = self.notifier.as_mut() {
            n.send(format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
            // Before the first READY=1, the end of the start says it.
            self.notified.reloading = ready;
        }
    }

    pub(super) fn notify_stopping(&mut self) {
        if std::mem::replace(&mut self.notified.stopping, true) {
            return;
        }
        if let Some(n) = self.notifier() {
            n.send("STOPPING=1".to_string());
        }
    }

    /// When the watchdog is next due, for the loop's timeout.
    pub(super) fn watchdog_deadline(&self) -> Option<Instant> {
        self.notifier.as_ref()?.watchdog?;
        self.notified.next_watchdog
    }
}
