//! When a worker is idle, by what its status says: the one rule that the
//! spare-scaling pool, `prefork status` and `prefork top` share.
//!
//! The default rule knows the statuses idle workers write in the wild: `_`
//! (Apache's mod_status letter, which Parallel::Prefork::SpareWorkers and
//! Plack's ServerStatus middlewares use), anything starting with `idle`,
//! and a JSON object whose `"status"` is `"_"` (what
//! Plack::Middleware::ServerStatus::Lite writes, so Perl apps work
//! unmodified). The `idle_status` key replaces it with a regular expression
//! matched against the status bytes.
//!
//! A worker that never wrote a status, or whose status cannot be read,
//! is not idle: a pool that cannot tell must not shrink it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

/// Patterns longer than this are refused: a config key, not a program.
const MAX_PATTERN: usize = 1024;
/// The compiled automaton's limit, against patterns that blow up.
const MAX_COMPILED: usize = 1 << 20;

/// How to tell an idle worker's status.
#[derive(Clone, Default)]
pub enum IdleRule {
    /// `_`, a prefix `idle`, or JSON `{"status":"_"}`.
    #[default]
    Default,
    /// A regular expression over the status bytes (unanchored, as grep's;
    /// anchor it with `^` and `$`).
    Pattern(regex::bytes::Regex),
}

impl IdleRule {
    /// The rule of a pattern (`idle_status`, `--idle-status`), or why it is
    /// not one.
    pub fn pattern(source: &str) -> Result<IdleRule, String> {
        if source.len() > MAX_PATTERN {
            return Err(format!(
                "a pattern of {} bytes, above the limit of {MAX_PATTERN}",
                source.len()
            ));
        }
        regex::bytes::RegexBuilder::new(source)
            .size_limit(MAX_COMPILED)
            .build()
            .map(IdleRule::Pattern)
            .map_err(|e| format!("not a regular expression: {e}"))
    }

    /// Whether `status`, what a worker wrote, says it is idle.
    pub fn is_idle(&self, status: &[u8]) -> bool {
        match self {
            IdleRule::Default => default_is_idle(status),
            IdleRule::Pattern(re) => re.is_match(status),
        }
    }

    /// The pattern, or `None` for the default rule.
    pub fn source(&self) -> Option<&str> {
        match self {
            IdleRule::Default => None,
            IdleRule::Pattern(re) => Some(re.as_str()),
        }
    }
}

impl fmt::Debug for IdleRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source() {
            None => f.write_str("IdleRule::Default"),
            Some(source) => write!(f, "IdleRule::Pattern({source:?})"),
        }
    }
}

impl PartialEq for IdleRule {
    fn eq(&self, other: &Self) -> bool {
        self.source() == other.source()
    }
}

fn default_is_idle(status: &[u8]) -> bool {
    if status == b"_" || status.starts_with(b"idle") {
        return true;
    }
    // Only what looks like an object is parsed: a plain-text status costs
    // one byte comparison.
    match status.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => json_status_is_idle(status),
        _ => false,
    }
}

/// Whether a JSON object's `"status"` is the string `"_"`. Other fields
/// are skipped without being built, and the string is borrowed when it can
/// be; anything that is not such an object (or whose status is not a
/// string) is not idle.
fn json_status_is_idle(status: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(borrow)]
        status: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<Object>(status).is_ok_and(|o| o.status.as_deref() == Some("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rule_knows_the_usual_idle_statuses() {
        let rule = IdleRule::Default;
        for idle in [
            &b"_"[..],
            b"idle",
            b"idle since 12:00",
            br#"{"status":"_","pid":12,"uptime":3}"#,
            br#"  { "pid": 1, "status" : "_" }"#,
        ] {
            assert!(rule.is_idle(idle), "{:?}", String::from_utf8_lossy(idle));
        }
        for busy in [
            &b""[..],
            b"A",
            b"_ ",
            b"GET /foo",
            b"Idle",
            b" idle",
            br#"{"status":"A"}"#,
            br#"{"status":["_"]}"#,
            br#"{"state":"_"}"#,
            br#"{"status":"_""#,
            b"{\xff}",
        ] {
            assert!(!rule.is_idle(busy), "{:?}", String::from_utf8_lossy(busy));
        }
    }

    #[test]
    fn a_pattern_replaces_the_default_rule() {
        let rule = IdleRule::pattern("^(waiting|ready)$").unwrap();
        assert!(rule.is_idle(b"waiting"));
        assert!(rule.is_idle(b"ready"));
        assert!(!rule.is_idle(b"_"));
        assert!(!rule.is_idle(b"waiting for db"));
        // Unanchored like grep; matched against bytes, not only UTF-8.
        let rule = IdleRule::pattern("idle").unwrap();
        assert!(rule.is_idle(b"\xffnow idle\xfe"));
        assert_eq!(rule.source(), Some("idle"));
    }

    #[test]
    fn a_bad_pattern_says_why() {
        let e = IdleRule::pattern("(unclosed").unwrap_err();
        assert!(e.contains("not a regular expression"), "{e}");
        let e = IdleRule::pattern(&"a".repeat(MAX_PATTERN + 1)).unwrap_err();
        assert!(e.contains("limit"), "{e}");
        // A pattern that compiles to an enormous automaton is refused too.
        let e = IdleRule::pattern(r"\w{1000}\w{1000}").unwrap_err();
        assert!(e.contains("not a regular expression"), "{e}");
    }
}
