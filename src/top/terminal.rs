//! The terminal while `prefork top` runs: raw mode and the alternate
//! screen, given back as they were on every way out (a return, an error, a
//! panic, SIGINT, SIGTERM), and the wake-ups of the loop. A terminal that
//! hangs up ends it too (SIGHUP, or its end of file).
//!
//! The loop sleeps in one `poll` on the terminal and a self-pipe that
//! signal-hook writes to, so a key, a resize (SIGWINCH) or a signal wakes it
//! at once, and the interval is its timeout. Handlers only record (a flag,
//! a byte in the pipe); what to do is decided in the loop. In raw mode a ^C
//! typed on the keyboard is a key, not SIGINT: the app treats it as `q`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, queue};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use signal_hook::consts::signal::{SIGINT, SIGTERM, SIGWINCH};
use signal_hook::SigId;

/// Whether the terminal is ours (raw, alternate screen) and must be given
/// back: set on entering, cleared by the first [`restore`].
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Gives the terminal back: cooked mode, the main screen, the cursor. Safe
/// to call more than once, and from the panic hook.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let mut out = io::stdout();
        let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
    }
}

/// A panic gives the terminal back before its message is printed, so that
/// the message is readable and the shell usable.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// What ratatui writes a frame into: one buffer, written to the terminal in
/// one go at the end of the frame (no flicker, even on a slow link), and
/// dropped unwritten if the frame never ends (a panic in the middle).
#[derive(Default)]
pub struct FrameWriter {
    buf: Vec<u8>,
}

impl Write for FrameWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() && ACTIVE.load(Ordering::SeqCst) {
            let mut out = io::stdout().lock();
            out.write_all(&self.buf)?;
            out.flush()?;
        }
        self.buf.clear();
        Ok(())
    }
}

/// The terminal, in raw mode on the alternate screen until dropped.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<FrameWriter>>,
}

impl Screen {
    pub fn enter() -> io::Result<Screen> {
        install_panic_hook();
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let entered = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(FrameWriter::default())));
        match entered {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Draws a frame inside a synchronized update (the terminal shows it
    /// whole, where it supports that; others ignore the sequence).
    pub fn draw(&mut self, render: impl FnOnce(&mut ratatui::Frame)) -> io::Result<()> {
        queue!(
            self.terminal.backend_mut(),
            terminal::BeginSynchronizedUpdate
        )?;
        self.terminal.draw(render)?;
        execute!(self.terminal.backend_mut(), terminal::EndSynchronizedUpdate)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// The signals that end `prefork top`: what would kill it, but leave the
/// terminal raw, if they were not caught. Not SIGHUP: its terminal is
/// gone, there is nothing to give back, and its default action ends us
/// wherever we are.
const QUIT_SIGNALS: [i32; 2] = [SIGINT, SIGTERM];

/// What a wait found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// The interval passed, or a signal came (see the flags).
    Other,
    /// The terminal has input for crossterm to read.
    Input,
    /// The terminal hung up: nothing will ever be read from it again. (Not
    /// for crossterm to read: it would read its end of file forever.)
    HungUp,
}

/// What wakes the loop besides its timeout.
pub struct Wakeups {
    /// The terminal, for its readiness (crossterm reads and parses it).
    tty: Option<File>,
    pipe: UnixStream,
    /// The last quit signal caught, 0 for none.
    quit: Arc<AtomicUsize>,
    resized: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl Wakeups {
    pub fn new() -> io::Result<Wakeups> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let quit = Arc::new(AtomicUsize::new(0));
        let resized = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        // The flag first, then the pipe: woken, the loop finds the flag set.
        for sig in QUIT_SIGNALS {
            ids.push(signal_hook::flag::register_usize(
                sig,
                Arc::clone(&quit),
                sig as usize,
            )?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        ids.push(signal_hook::flag::register(SIGWINCH, Arc::clone(&resized))?);
        ids.push(signal_hook::low_level::pipe::register(SIGWINCH, write)?);
        // crossterm reads standard input when it is a terminal, else
        // /dev/tty: either way, /dev/tty is the same terminal's input.
        let tty = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/tty")
            .ok();
        Ok(Wakeups {
            tty,
            pipe: read,
            quit,
            resized,
            ids,
        })
    }

    /// Sleeps until a key (unless not `for_input`), a signal, a hang-up or
    /// `timeout`.
    pub fn wait(&mut self, timeout: Duration, for_input: bool) -> io::Result<Woken> {
        let stdin = io::stdin();
        let tty: BorrowedFd<'_> = match &self.tty {
            Some(tty) => tty.as_fd(),
            None => stdin.as_fd(),
        };
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [
            // A hang-up is reported whatever is asked.
            PollFd::new(
                tty,
                match for_input {
                    true => PollFlags::POLLIN,
                    false => PollFlags::empty(),
                },
            ),
            PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let tty = fds[0].revents().unwrap_or(PollFlags::empty());
        let mut drain = [0u8; 64];
        while matches!(self.pipe.read(&mut drain), Ok(n) if n > 0) {}
        let hung_up = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        Ok(if tty.intersects(hung_up) {
            Woken::HungUp
        } else if tty.contains(PollFlags::POLLIN) {
            Woken::Input
        } else {
            Woken::Other
        })
    }

    /// The quit signal caught, if one was.
    pub fn quit_signal(&self) -> Option<i32> {
        match self.quit.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig as i32),
        }
    }

    /// Whether the terminal was resized since the last call.
    pub fn take_resized(&self) -> bool {
        self.resized.swap(false, Ordering::SeqCst)
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
