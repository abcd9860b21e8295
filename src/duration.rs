//! Durations as people write them: `500ms`, `2s`, `1m`, `1h`, or a bare
//! number of seconds (`30`, `0.5`). One parser for the command line and the
//! config file, so the two never disagree.

use std::time::Duration;

/// Parses a duration; the error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit: u64 = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1000,
        "ms" => 1,
        "m" | "min" | "mins" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid(text)),
    };
    // Whole numbers exactly (what `display` prints must read back the same);
    // fractions through f64.
    let duration = if number.bytes().all(|b| b.is_ascii_digit()) && !number.is_empty() {
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(millis_per_unit))
            .map(Duration::from_millis)
            .filter(|d| d.as_secs_f64() <= MAX_SECS)
    } else {
        let value: f64 = number.parse().map_err(|_| invalid(text))?;
        from_secs(value * millis_per_unit as f64 / 1000.0)
    };
    duration.ok_or_else(|| invalid(text))
}

/// Anything longer than about 100 years is a typo, and the bound keeps the
/// deadline arithmetic (Instant + Duration) from overflowing.
const MAX_SECS: f64 = 3.2e9;

/// A number of seconds (as a config file may give it) as a duration.
pub fn from_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..=MAX_SECS).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

fn invalid(text: &str) -> String {
    format!("invalid duration {text:?}: expected a number with an optional unit ms, s, m or h, like \"500ms\", \"2s\", \"1m\" or \"30\" (seconds)")
}

/// Formats a duration the way `parse` reads it back.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 || ms == 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 5s "), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in [
            "",
            "s",
            "5 parsecs",
            "-1s",
            "1e9999",
            "1.2.3s",
            "ms5",
            "99999999999999",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::ZERO,
        ] {
            assert_eq!(parse(&display(d)), Ok(d));
        }
    }
}
