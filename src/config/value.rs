//! The kinds of value the options take. One module per kind holds all of
//! it: `parse` reads it from the command line (clap's value parser),
//! `deserialize` from the config file, and `serialize` writes it as
//! `prefork check` prints it, in a form `deserialize` reads back the same.
//! Both sources check a value with the same function, so it is refused with
//! the same words wherever it was written; an error raised while
//! deserializing carries the value's position in the file.

/// A duration: `"500ms"`, `"2s"`, ... (see [`crate::duration`]), or a
/// number of seconds.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub use crate::duration::parse;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&crate::duration::display(*d)),
            None => s.serialize_none(),
        }
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a duration: {}", crate::duration::FORMS)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            crate::duration::parse(text).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
            self.visit_f64(secs as f64)
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
            self.visit_f64(secs as f64)
        }

        fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
            crate::duration::from_secs(secs).map_err(E::custom)
        }
    }
}

/// The scoreboard check interval: a duration of at least 10ms.
pub mod interval {
    use std::time::Duration;

    use serde::de::{self, Deserializer};

    pub use super::duration::serialize;
    use crate::config::check_interval;

    pub fn parse(text: &str) -> Result<Duration, String> {
        let interval = crate::duration::parse(text)?;
        check_interval(interval).map(|()| interval)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let interval = super::duration::deserialize(d)?;
        if let Some(interval) = interval {
            check_interval(interval).map_err(de::Error::custom)?;
        }
        Ok(interval)
    }
}

/// A worker count, from 1 to [`crate::config::MAX_WORKERS`].
pub mod workers {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::{Serialize, Serializer};

    use crate::config::{check_workers, MAX_WORKERS};

    pub fn parse(text: &str) -> Result<usize, String> {
        let n: usize = text
            .parse()
            .map_err(|_| format!("{text:?} is not {}", expected()))?;
        check_workers(n).map(|()| n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_u64(WorkersVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    /// What a worker count is, for the errors of both sources.
    fn expected() -> String {
        format!("a whole number from 1 to {MAX_WORKERS}")
    }

    struct WorkersVisitor;

    impl Visitor<'_> for WorkersVisitor {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(&expected())
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<usize, E> {
            let n = usize::try_from(n)
                .map_err(|_| E::custom("the number of workers must be at least 1"))?;
            check_workers(n).map_err(E::custom)?;
            Ok(n)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<usize, E> {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            check_workers(n).map_err(E::custom)?;
            Ok(n)
        }
    }
}

/// The worker command: a program and its arguments, as a list of strings.
pub mod command {
    use std::ffi::OsString;

    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<OsString>>, D::Error> {
        let words = Vec::<String>::deserialize(d)?;
        match words.first() {
            None => Err(de::Error::custom("the command is empty: give the program and its arguments, like [\"./worker\", \"--port\", \"8080\"]")),
            Some(program) if program.is_empty() => Err(de::Error::custom("the program name is empty")),
            Some(_) => Ok(Some(words.into_iter().map(OsString::from).collect())),
        }
    }

    /// Words that are not UTF-8 are printed lossily: TOML has no bytes.
    pub fn serialize<S: Serializer>(
        value: &Option<Vec<OsString>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(words) => s.collect_seq(words.iter().map(|w| w.to_string_lossy())),
            None => s.serialize_none(),
        }
    }
}

/// Environment variables: `KEY=VALUE` on the command line, a `[env]` table
/// in the file. A key given twice keeps its last value.
pub mod env {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn parse(text: &str) -> Result<(String, String), String> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(format!("{text:?} is not KEY=VALUE")),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        let table = BTreeMap::<String, String>::deserialize(d)?;
        Ok(table.into_iter().collect())
    }

    pub fn serialize<S: Serializer>(vars: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let table: BTreeMap<&str, &str> = vars.iter().map(|(k, v)| (&**k, &**v)).collect();
        table.serialize(s)
    }
}

/// A path. One that is not UTF-8 is printed lossily: TOML has no bytes.
pub mod path {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        PathBuf::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(path) => s.serialize_str(&path.to_string_lossy()),
            None => s.serialize_none(),
        }
    }
}

/// Listening addresses (see [`crate::listen::ListenAddr`]): repeated on
/// the command line, a list of strings in the file.
pub mod listen {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    use crate::listen::ListenAddr;

    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        text.parse()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<ListenAddr>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| text.parse().map_err(de::Error::custom))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    pub fn serialize<S: Serializer>(
        addrs: &Option<Vec<ListenAddr>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match addrs {
            Some(addrs) => s.collect_seq(addrs.iter().map(ToString::to_string)),
            None => s.serialize_none(),
        }
    }
}

/// One listening address (the status endpoint's).
pub mod listen_one {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    use crate::listen::ListenAddr;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ListenAddr>, D::Error> {
        String::deserialize(d)?
            .parse()
            .map(Some)
            .map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(addr: &Option<ListenAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_none(),
        }
    }
}

/// A file mode in octal: `"0660"` (or TOML's `0o660`).
pub mod mode {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn parse(text: &str) -> Result<u32, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
            _ => Err(format!(
                "{text:?} is not a file mode: octal digits, like \"0660\""
            )),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_any(ModeVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(mode) => s.serialize_str(&format!("{mode:04o}")),
            None => s.serialize_none(),
        }
    }

    struct ModeVisitor;

    impl Visitor<'_> for ModeVisitor {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a file mode in octal, like \"0660\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u32, E> {
            parse(text).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
            u32::try_from(n)
                .ok()
                .filter(|&m| m <= 0o777)
                .ok_or_else(|| E::custom(format!("{n} is not a file mode (at most 0o777)")))
        }
    }
}

/// A signal by name: `"TERM"`, `"SIGQUIT"`, `"winch"`.
pub mod signal {
    use nix::sys::signal::Signal;
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    pub fn parse(text: &str) -> Result<Signal, String> {
        let upper = text.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        match name.parse::<Signal>() {
            Ok(Signal::SIGSTOP | Signal::SIGKILL | Signal::SIGCHLD) | Err(_) => Err(format!(
                "{text:?} is not a signal to stop a worker with: a name like TERM, QUIT, INT or WINCH"
            )),
            Ok(signal) => Ok(signal),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Signal>, D::Error> {
        parse(&String::deserialize(d)?)
            .map(Some)
            .map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Option<Signal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(signal) => s.serialize_str(&signal.as_str()[3..]),
            None => s.serialize_none(),
        }
    }
}

/// When a worker is ready: `"report"`, `"immediate"`, or a duration.
pub mod ready {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    use crate::config::Ready;

    pub fn parse(text: &str) -> Result<Ready, String> {
        match text {
            "report" => Ok(Ready::Report),
            "immediate" => Ok(Ready::Immediate),
            _ => crate::duration::parse(text).map(Ready::After).map_err(|_| {
                format!(
                    "{text:?} is not a readiness rule: \"report\" (its first status write), \
                     \"immediate\", or a duration like \"2s\""
                )
            }),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ready>, D::Error> {
        parse(&String::deserialize(d)?)
            .map(Some)
            .map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Option<Ready>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(ready) => s.serialize_str(&ready.to_string()),
            None => s.serialize_none(),
        }
    }
}

/// A number of spare workers: `min_spare`, `max_spare`; 0 is allowed.
pub mod spare {
    use serde::de::Deserializer;
    use serde::{Serialize, Serializer};

    use super::whole::Whole;
    use crate::config::MAX_WORKERS;

    fn whole() -> Whole {
        Whole::within(0, MAX_WORKERS as u64)
    }

    pub fn parse(text: &str) -> Result<usize, String> {
        whole().parse(text).map(|n| n as usize)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_u64(whole()).map(|n| Some(n as usize))
    }

    pub fn serialize<S: Serializer>(value: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }
}

/// The idle rule's pattern: a regular expression, checked where it is read.
pub mod idle_status {
    use serde::de::Deserializer;
    use serde::{Deserialize, Serialize, Serializer};

    use crate::idle::IdleRule;

    pub fn parse(text: &str) -> Result<String, String> {
        IdleRule::pattern(text).map(|_| text.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map(Some).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }
}

/// A positive count: `max_surge`, `backlog`.
pub mod count {
    use serde::de::Deserializer;
    use serde::{Serialize, Serializer};

    use super::whole::Whole;

    fn whole() -> Whole {
        Whole::at_least(1, u64::from(u32::MAX))
    }

    pub fn parse(text: &str) -> Result<u32, String> {
        whole().parse(text).map(|n| n as u32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_u64(whole()).map(|n| Some(n as u32))
    }

    pub fn serialize<S: Serializer>(value: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }
}

/// A whole number within bounds, as `count` and `spare` take it: one
/// check, and the same words, for the command line and the file.
mod whole {
    use std::fmt;

    use serde::de::{self, Visitor};

    pub struct Whole {
        lo: u64,
        hi: u64,
        /// What the value must be, for the errors.
        what: String,
    }

    impl Whole {
        pub fn within(lo: u64, hi: u64) -> Whole {
            let what = format!("a whole number from {lo} to {hi}");
            Whole { lo, hi, what }
        }

        /// Bounded above only by the type: said as "of at least `lo`".
        pub fn at_least(lo: u64, hi: u64) -> Whole {
            let what = format!("a whole number of at least {lo}");
            Whole { lo, hi, what }
        }

        pub fn parse(&self, text: &str) -> Result<u64, String> {
            match text.parse::<u64>() {
                Ok(n) if (self.lo..=self.hi).contains(&n) => Ok(n),
                _ => Err(format!("{text:?} is not {}", self.what)),
            }
        }
    }

    impl Visitor<'_> for Whole {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(&self.what)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n)
                .ok()
                .filter(|n| (self.lo..=self.hi).contains(n))
                .ok_or_else(|| E::custom(format!("{n} is not {}", self.what)))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
            if (self.lo..=self.hi).contains(&n) {
                Ok(n)
            } else {
                Err(E::custom(format!("{n} is not {}", self.what)))
            }
        }
    }
}

/// The log's format: `"text"` or `"json"`.
pub mod log_format {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    use crate::config::LogFormat;

    pub fn parse(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{text:?} is not a log format: \"text\" or \"json\""
            )),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogFormat>, D::Error> {
        parse(&String::deserialize(d)?)
            .map(Some)
            .map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Option<LogFormat>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(LogFormat::Text) => s.serialize_str("text"),
            Some(LogFormat::Json) => s.serialize_str("json"),
            None => s.serialize_none(),
        }
    }
}

/// A size in bytes: a whole number, or one with a unit: `KiB`, `MiB`,
/// `GiB` (or `K`, `M`, `G`, the same powers of 1024).
pub mod size {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn parse(text: &str) -> Result<u64, String> {
        let bad = || {
            format!(
                "{text:?} is not a size: bytes, or a number with KiB, MiB or GiB, like \"512MiB\""
            )
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" | "k" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(scale).filter(|&b| b > 0).ok_or_else(bad)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(SizeVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) if bytes % (1 << 20) == 0 => {
                s.serialize_str(&format!("{}MiB", bytes >> 20))
            }
            Some(bytes) if bytes % (1 << 10) == 0 => {
                s.serialize_str(&format!("{}KiB", bytes >> 10))
            }
            Some(bytes) => s.serialize_u64(*bytes),
            None => s.serialize_none(),
        }
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size: bytes, or a string like \"512MiB\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse(text).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| E::custom(format!("{n} is not a size of at least 1 byte")))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
            self.visit_i64(i64::try_from(n).unwrap_or(-1))
        }
    }
}

/// A user or a group: a name, or a number (a TOML integer or a string).
/// Whether it exists is checked when the configuration is loaded.
pub mod account {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(AccountVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(name) => s.serialize_str(name),
            None => s.serialize_none(),
        }
    }

    struct AccountVisitor;

    impl Visitor<'_> for AccountVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a name, or a number")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
            match text {
                "" => Err(E::custom("the name is empty")),
                _ => Ok(text.to_string()),
            }
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<String, E> {
            u32::try_from(n)
                .map(|n| n.to_string())
                .map_err(|_| E::custom(format!("{n} is not a user or group number")))
        }
    }
}

/// A resource limit: a number, or `"unlimited"`.
pub mod rlimit {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    use crate::supervisor::spawn::UNLIMITED;

    pub fn parse(text: &str) -> Result<u64, String> {
        match text {
            "unlimited" | "infinity" => Ok(UNLIMITED),
            _ => text
                .parse::<u64>()
                .ok()
                .filter(|&n| n != UNLIMITED)
                .ok_or_else(|| format!("{text:?} is not a limit: a whole number or \"unlimited\"")),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(LimitVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(UNLIMITED) => s.serialize_str("unlimited"),
            // TOML integers are signed: a larger limit is written as a string.
            Some(n) => match i64::try_from(*n) {
                Ok(n) => s.serialize_i64(n),
                Err(_) => s.serialize_str(&n.to_string()),
            },
            None => s.serialize_none(),
        }
    }

    struct LimitVisitor;

    impl Visitor<'_> for LimitVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number or \"unlimited\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse(text).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom(format!("{n} is not a limit: it is negative")))
        }
    }
}

/// A nice value, from -20 to 19.
pub mod nice {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::{Serialize, Serializer};

    pub fn parse(text: &str) -> Result<i32, String> {
        text.parse::<i64>()
            .map_err(|_| format!("{text:?} is not a nice value: a whole number from -20 to 19"))
            .and_then(check)
    }

    fn check(n: i64) -> Result<i32, String> {
        match n {
            -20..=19 => Ok(n as i32),
            _ => Err(format!("{n} is not a nice value: from -20 to 19")),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
        d.deserialize_any(NiceVisitor).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<i32>, s: S) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    struct NiceVisitor;

    impl Visitor<'_> for NiceVisitor {
        type Value = i32;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number from -20 to 19")
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<i32, E> {
            check(n).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<i32, E> {
            check(i64::try_from(n).unwrap_or(i64::MAX)).map_err(E::custom)
        }
    }
}

/// `worker_output`: `inherit` or `prefix`.
pub mod worker_output {
    use serde::de::{self, Deserializer};
    use serde::{Deserialize, Serializer};

    use crate::config::WorkerOutput;

    pub fn parse(text: &str) -> Result<WorkerOutput, String> {
        match text {
            "inherit" => Ok(WorkerOutput::Inherit),
            "prefix" => Ok(WorkerOutput::Prefix),
            _ => Err(format!(
                "{text:?} is not a worker output mode: \"inherit\" or \"prefix\""
            )),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WorkerOutput>, D::Error> {
        parse(&String::deserialize(d)?)
            .map(Some)
            .map_err(de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Option<WorkerOutput>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(WorkerOutput::Inherit) => s.serialize_str("inherit"),
            Some(WorkerOutput::Prefix) => s.serialize_str("prefix"),
            None => s.serialize_none(),
        }
    }
}
