//! Reading the TOML file, and errors that point at the line: every problem
//! in a config file is reported as `FILE:LINE:COLUMN: key `K`: what is wrong`,
//! followed by (an excerpt of) the line, before any worker is started.
//!
//! The master reads the file again on SIGHUP, inside its single-threaded
//! loop: reading it must never block, and never take more than a bounded
//! amount of memory, whatever the path names (a FIFO, `/dev/zero`, a file
//! of gigabytes).

use std::fmt;
use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::layer::Layer;
use super::Config;

/// A configuration that cannot be used; `prefork` exits 2 with it, and a
/// reload logs it and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where the configuration comes from, kept so that SIGHUP can read it again
/// with the same command-line overrides.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub overrides: Layer,
    pub default_workers: usize,
}

impl Source {
    /// Reads the file (if any), puts the command line over it, validates.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let from_file = match &self.file {
            Some(path) => read(path)?,
            None => Layer::default(),
        };
        let config = self
            .overrides
            .clone()
            .over(from_file)
            .into_config(self.default_workers);
        config.map_err(|e| match &self.file {
            Some(path) => ConfigError(format!("{}: {e}", path.display())),
            None => ConfigError(e),
        })
    }
}

/// Parses one config file into a layer.
pub fn read(path: &Path) -> Result<Layer, ConfigError> {
    let text = read_text(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(locate(path, &text, &e)))
}

/// The most a config file may hold: far more than any configuration needs,
/// far less than would hurt the master to hold.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// The text of a config file: a regular file, or a symlink to one, of at
/// most [`MAX_FILE_SIZE`] bytes of UTF-8.
fn read_text(path: &Path) -> Result<String, String> {
    let file = open(path)?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err(format!(
            "it is {}, not a regular file",
            kind(metadata.file_type())
        ));
    }
    let too_large = || {
        let limit = MAX_FILE_SIZE >> 20;
        format!("it is larger than {limit} MiB, the limit for a config file")
    };
    if metadata.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    // The size may have changed since fstat (and is 0 for some files of
    // /proc): the limit holds for what is actually read.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        format!("it is not UTF-8 text (byte {at} is not)")
    })
}

/// Opens `path` for reading without ever waiting: `O_NONBLOCK`, so that
/// opening a FIFO returns at once instead of waiting for a writer (the file
/// type is checked on the open descriptor, as what the path names may
/// change); `O_NOCTTY`, so that a terminal does not become the master's
/// controlling terminal; `O_CLOEXEC`, so that no worker inherits it.
fn open(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            // A socket cannot be opened at all (ENXIO): say what it is.
            match std::fs::metadata(path) {
                Ok(m) if !m.is_file() && !m.is_dir() => {
                    format!("it is {}, not a regular file", kind(m.file_type()))
                }
                _ => e.to_string(),
            }
        })
}

/// What a file that is not a regular file is, for an error message.
fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "something else"
    }
}

/// The scoreboard directory a config file names (for `prefork status -c`).
pub fn scoreboard_dir_of(path: &Path) -> Result<PathBuf, ConfigError> {
    read(path)?.scoreboard_dir.ok_or_else(|| {
        ConfigError(format!(
            "{} sets no scoreboard_dir, so its board is private to its master: pass --scoreboard DIR",
            path.display()
        ))
    })
}

/// `FILE:LINE:COLUMN: key `K`: message`, then the line with a caret under
/// the error. A long line is shown as an excerpt around the column, and a
/// long key or message is shortened: what the file says is echoed, and a
/// file may hold a line of a megabyte.
fn locate(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let message = shorten_message(error.message().trim_end());
    let Some(span) = error.span() else {
        return format!("{}: {message}", path.display());
    };
    let start = floor_char_boundary(text, span.start);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let key = key_of(&text[line_start..line_end])
        .map(|k| format!("key `{}`: ", shorten(k, MAX_KEY)))
        .unwrap_or_default();
    // The span in characters of the line, at least one, at most to its end.
    let span_end = floor_char_boundary(text, span.end.clamp(start, line_end));
    let width = text[start..span_end].chars().count().max(1);
    let (excerpt, caret) = excerpt(&text[line_start..line_end], column - 1, width);
    format!(
        "{}:{line}:{column}: {key}{message}\n{line:>5} | {excerpt}\n      | {caret}",
        path.display(),
    )
}

/// How much of a line an error shows, in characters.
const EXCERPT: usize = 120;
/// How much of that is before the column, when the line has to be cut.
const BEFORE: usize = 40;
/// The longest key, and quoted text in a message (an echoed value), shown whole.
const MAX_KEY: usize = 40;
/// A bound on the rest of a message, which lists the keys, for one.
const MAX_MESSAGE: usize = 1000;

/// At most [`EXCERPT`] characters of `line` around the character `at`
/// (with `…` where it is cut), and the carets under the `width` characters
/// from `at`. Control characters (a tab) are shown as a space, so that the
/// carets line up and the terminal is not driven by the file.
fn excerpt(line: &str, at: usize, width: usize) -> (String, String) {
    let chars: Vec<char> = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let (mut from, mut to) = (0, chars.len());
    if chars.len() > EXCERPT {
        from = at.saturating_sub(BEFORE).min(chars.len() - EXCERPT);
        to = from + EXCERPT;
    }
    let mut shown: String = chars[from..to].iter().collect();
    let mut offset = at.min(to) - from;
    if from > 0 {
        shown.insert(0, '…');
        offset += 1;
    }
    if to < chars.len() {
        shown.push('…');
    }
    let width = width.min(to.saturating_sub(at)).max(1);
    (
        shown,
        format!("{}{}", " ".repeat(offset), "^".repeat(width)),
    )
}

/// `message` with what it quotes (`"…"` or `` `…` ``: a value or a key from
/// the file) shortened to [`MAX_KEY`] characters, and with the whole
/// shortened to [`MAX_MESSAGE`].
fn shorten_message(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = &rest[open..=open];
        out += &rest[..=open];
        rest = &rest[open + 1..];
        let Some(close) = rest.find(quote) else { break };
        out += &shorten(&rest[..close], MAX_KEY);
        out += quote;
        rest = &rest[close + 1..];
    }
    out += rest;
    shorten(&out, MAX_MESSAGE)
}

/// `text`, or its start and end around a `…` if it is longer than `max`
/// characters.
fn shorten(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max * 3 / 4).collect();
    let tail: String = text.chars().skip(count - max / 4).collect();
    format!("{head}…{tail}")
}

/// `at`, or the start of the character it falls in.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The key a `key = value` line sets.
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('#')).then_some(key)
}

/// The effective configuration as TOML, as `prefork check` prints it: each
/// key of [`Layer`] in order, its tables (`[env]`) last, and for a key whose
/// default is an absence (no timeout, a private board) a comment saying so,
/// in the words of its `--help`.
pub fn render(config: &Config) -> String {
    let layer = Layer::from(config);
    let table = toml::Table::try_from(&layer).expect("every value of a layer has a TOML form");
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let (mut out, mut tables) = (String::new(), String::new());
    for &key in Layer::KEYS {
        match table.get(key) {
            Some(toml::Value::Table(entries)) => {
                tables += &format!("\n[{key}]\n");
                for (name, value) in entries {
                    tables += &format!("{} = {value}\n", quote(name));
                }
            }
            Some(value) => out += &format!("{key} = {value}\n"),
            None => out += &format!("# {key}: {}\n", default_of(key)),
        }
    }
    out + &tables
}

/// What a key left unset means: the `[default: ...]` of its `--help`.
fn default_of(key: &str) -> String {
    use clap::Args;
    let options = Layer::augment_args(clap::Command::new("prefork"));
    let help = options
        .get_arguments()
        .find(|arg| arg.get_id() == key)
        .and_then(|arg| arg.get_help())
        .map(|help| help.to_string())
        .unwrap_or_default();
    help.split_once("[default: ")
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .unwrap_or("not set")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefork.toml");
        std::fs::write(&path, text).unwrap();
        read(&path)
            .unwrap_err()
            .0
            .replace(&path.display().to_string(), "FILE")
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let e = error_of("workers = 2\nwrkers = 3\n");
        assert!(
            e.starts_with("FILE:2:1: key `wrkers`: unknown field `wrkers`"),
            "{e}"
        );
        let e = error_of("command = [\"x\"]\ntimeout = \"5 parsecs\"\n");
        assert!(
            e.starts_with("FILE:2:11: key `timeout`: invalid duration"),
            "{e}"
        );
        let e = error_of("workers = 0\n");
        assert!(
            e.starts_with("FILE:1:11: key `workers`: the number of workers must be at least 1"),
            "{e}"
        );
        let e = error_of("command = []\n");
        assert!(
            e.starts_with("FILE:1:11: key `command`: the command is empty"),
            "{e}"
        );
    }

    #[test]
    fn errors_say_what_is_expected() {
        let e = error_of("workers = \"x\"\n");
        assert!(
            e.starts_with("FILE:1:11: key `workers`: invalid type: string \"x\", expected a whole number from 1 to 4096"),
            "{e}"
        );
        let e = error_of("timeout = \"5 seconds\"\n");
        let expected = format!(
            "FILE:1:11: key `timeout`: invalid duration \"5 seconds\": expected {}\n",
            crate::duration::FORMS
        );
        assert!(e.starts_with(&expected), "{e}");
        let e = error_of("timeout = true\n");
        assert!(
            e.contains("expected a duration: a number of seconds"),
            "{e}"
        );
    }

    /// The character above the first caret of an error, and the lines shown.
    fn pointed_at(error: &str) -> (char, Vec<&str>) {
        let lines: Vec<&str> = error.lines().collect();
        let shown = lines[1].split_once(" | ").unwrap().1;
        let caret = lines[2].split_once("| ").unwrap().1;
        let at = caret.chars().take_while(|&c| c == ' ').count();
        (shown.chars().nth(at).unwrap(), lines)
    }

    #[test]
    fn a_long_line_is_shown_as_an_excerpt_with_the_caret_in_place() {
        // 10,000 nested tables: the parser gives up at column 400.
        let deep = format!("a = {}1{}\n", "{b = ".repeat(10_000), "}".repeat(10_000));
        let e = error_of(&format!("command = [\"x\"]\n{deep}"));
        assert!(e.starts_with("FILE:2:400: key `a`: "), "{e}");
        let (above, lines) = pointed_at(&e);
        assert_eq!(above, deep.chars().nth(399).unwrap(), "{e}");
        assert!(lines.iter().all(|l| l.chars().count() < 140), "{e}");
        assert!(lines[1].contains(" | …") && lines[1].ends_with('…'), "{e}");

        // Near the end of a long line, with wide characters before it.
        let line = format!(
            "{} = 1 # {}\nworkers = 0\n",
            "é".repeat(500),
            "x".repeat(500)
        );
        let e = error_of(&line);
        assert!(e.starts_with("FILE:1:1: key `ééé"), "{e}");
        assert!(e.len() < 2000, "{e}");
        let line = format!("timeout = \"{}\" # {}\n", "ü".repeat(300), "é".repeat(300));
        let e = error_of(&line);
        let (above, _) = pointed_at(&e);
        assert_eq!(above, '"', "{e}");
        assert!(e.contains("invalid duration \"üüü"), "{e}");
        assert!(e.len() < 1500, "{e}");
    }

    #[test]
    fn a_tab_before_the_error_keeps_the_caret_in_place() {
        let e = error_of("\t\ttimeout = \"1 sec\"\n");
        assert!(e.starts_with("FILE:1:13: key `timeout`"), "{e}");
        let (above, _) = pointed_at(&e);
        assert_eq!(above, '"', "{e}");
    }

    #[test]
    fn rendered_config_reads_back_the_same() {
        let source = Source {
            file: None,
            overrides: Layer {
                command: Some(vec!["./worker".into(), "a b".into()]),
                workers: Some(3),
                timeout: Some(std::time::Duration::from_millis(1500)),
                env: vec![("K".to_string(), "v \"q\"".to_string())],
                ..Layer::default()
            },
            default_workers: 1,
        };
        let config = source.load().unwrap();
        let again: Layer = toml::from_str(&render(&config)).unwrap();
        let again = again.into_config(1).unwrap();
        assert_eq!(again, config);
    }
}
