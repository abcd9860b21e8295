//! `prefork top` (issue 15): a live view of any board, prefork's or a
//! Parallel::Scoreboard program's, refreshed in place.
//!
//! The loop reads a frame ([`reader`]) every interval, draws it ([`view`])
//! and sleeps until the next one, a key, a resize or a signal
//! ([`terminal`]); keys change what is shown ([`app`]), not what is read.
//! Where the output is not a terminal, or with `--once`, one frame is
//! printed as plain text ([`plain`]). It never writes on the board.

pub mod app;
pub mod board;
pub mod model;
pub mod plain;
pub mod procfs;
pub mod reader;
pub mod snapshot;
pub mod terminal;
pub mod view;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event};
use ratatui::widgets::TableState;

use crate::config::ConfigError;
use crate::idle::IdleRule;
use app::{Action, App};
use model::SortKey;
use reader::Reader;

/// The exit status when the terminal hangs up, as if by SIGHUP.
const HUNG_UP: u8 = 128 + 1;

/// The shortest interval: a faster refresh is mostly the view's own cost.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// What `prefork top` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub interval: Duration,
    /// One plain frame, then exit.
    pub once: bool,
    /// `--idle-status`, over the master's rule.
    pub idle_rule: Option<IdleRule>,
    pub sort: SortKey,
}

/// Runs the view until `q`, ^C, SIGINT or SIGTERM, or its terminal hangs
/// up; returns the exit code (0, or 128 + the signal that ended it).
pub fn run(options: Options) -> Result<u8> {
    let dir = &options.dir;
    if !dir.is_dir() {
        let why = match dir.exists() {
            true => "not a directory",
            false => "no such directory",
        };
        return Err(ConfigError(format!(
            "cannot watch the scoreboard {}: {why}",
            dir.display()
        ))
        .into());
    }
    let mut reader = Reader::open(dir, options.idle_rule.clone())
        .with_context(|| format!("cannot read the scoreboard {}", dir.display()))?;
    let stdout = std::io::stdout();
    if options.once || !stdout.is_terminal() {
        let width = stdout
            .is_terminal()
            .then(|| crossterm::terminal::size().ok())
            .flatten()
            .map(|(w, _)| usize::from(w));
        let text = plain::render(&reader.read(), options.sort, width);
        let mut out = stdout.lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("cannot write to standard output")?;
        return Ok(0);
    }
    live(&mut reader, &options)
}

/// Colours unless `NO_COLOR` is set to anything (https://no-color.org).
fn colors() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn live(reader: &mut Reader, options: &Options) -> Result<u8> {
    let interval = options.interval.max(MIN_INTERVAL);
    let mut wakeups = terminal::Wakeups::new().context("cannot catch signals")?;
    let mut screen = terminal::Screen::enter().context("cannot set up the terminal")?;
    let palette = view::Palette { colors: colors() };
    let mut app = App::new(options.sort);
    let mut table = TableState::default();
    let mut frame = reader.read();
    let mut next = Instant::now() + interval;
    let mut watch_tty = true;
    loop {
        let shown = model::visible(&frame.rows, app.sort, &app.filter);
        let ids: Vec<&str> = shown.iter().map(|&i| frame.rows[i].id.as_str()).collect();
        app.follow(&ids);
        screen
            .draw(|out| view::draw(out, &frame, &mut app, &shown, &mut table, palette))
            .context("cannot draw")?;
        // Until something changes what is shown.
        loop {
            if let Some(signal) = wakeups.quit_signal() {
                drop(screen);
                return Ok(128 + signal as u8);
            }
            let now = Instant::now();
            if now >= next {
                frame = reader.read();
                next = now + interval;
                break;
            }
            let woken = wakeups
                .wait(next - now, watch_tty)
                .context("cannot wait for input")?;
            if woken == terminal::Woken::HungUp {
                return Ok(HUNG_UP);
            }
            let mut redraw = wakeups.take_resized();
            // crossterm reads the terminal (and its own SIGWINCH) at every
            // wake-up, so that a resize is taken apart from the keys.
            let mut events = 0;
            while event::poll(Duration::ZERO).context("cannot read the terminal")? {
                events += 1;
                match event::read().context("cannot read the terminal")? {
                    Event::Key(key) => match app.key(key, &ids) {
                        Action::Quit => return Ok(0),
                        Action::Redraw => redraw = true,
                        Action::Nothing => {}
                    },
                    Event::Resize(..) => redraw = true,
                    _ => {}
                }
            }
            // Input that crossterm did not take (a wake-up it had already
            // consumed, or half an escape sequence) waits for the next key
            // or the next frame, rather than waking the loop again at once.
            watch_tty = !(woken == terminal::Woken::Input && events == 0);
            if redraw {
                break;
            }
        }
    }
}
