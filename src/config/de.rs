//! Deserializers for the config file's values. Each one validates with the
//! same function as the command line, so both say the same thing; an error
//! raised here carries the value's position in the file.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::duration;

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration: a string like \"500ms\", \"2s\", \"1m\", or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        duration::parse(text).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
        self.visit_f64(secs as f64)
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
        self.visit_f64(secs as f64)
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
        duration::from_secs(secs).ok_or_else(|| {
            E::custom(format!(
                "invalid duration {secs}: expected a number of seconds from 0 to 100 years"
            ))
        })
    }
}

pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor).map(Some)
}

pub fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let interval = d.deserialize_any(DurationVisitor)?;
    super::check_interval(interval).map_err(de::Error::custom)?;
    Ok(Some(interval))
}

pub fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let n = i64::deserialize(d)?;
    let n = usize::try_from(n)
        .map_err(|_| de::Error::custom("the number of workers must be at least 1"))?;
    super::check_workers(n).map_err(de::Error::custom)?;
    Ok(Some(n))
}

pub fn command<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<OsString>>, D::Error> {
    let words = Vec::<String>::deserialize(d)?;
    match words.first() {
        None => Err(de::Error::custom("the command is empty: give the program and its arguments, like [\"./worker\", \"--port\", \"8080\"]")),
        Some(program) if program.is_empty() => Err(de::Error::custom("the program name is empty")),
        Some(_) => Ok(Some(words.into_iter().map(OsString::from).collect())),
    }
}
