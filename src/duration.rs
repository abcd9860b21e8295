//! Durations as people write them: a number of seconds (`30`, `0.5`) or a
//! number with a unit (`500ms`, `2s`, `1.5m`, `1h`), counted in whole
//! milliseconds. One parser for the command line and the config file, so the
//! two never disagree, and [`FORMS`] says what it accepts wherever a
//! duration is asked for: its errors, `--help`, the README.

use std::time::Duration;

/// What [`parse`] accepts, in the words of its errors and of `--help`.
pub const FORMS: &str = "a number of seconds (30, 0.5) or a number with a unit, ms, s, m or h \
     (500ms, 2s, 1.5m, 1h), in whole milliseconds";

/// Anything longer than about 100 years is a typo, and the bound keeps the
/// deadline arithmetic (Instant + Duration) from overflowing.
const MAX_MILLIS: u128 = 3_200_000_000_000;

/// Parses a duration; the error says what was expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit = match unit {
        "" | "s" => 1000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(Invalid::Form.describe(&format!("{text:?}"))),
    };
    decimal(number, millis_per_unit).map_err(|why| why.describe(&format!("{text:?}")))
}

/// A number of seconds (as a config file may give it) as a duration.
pub fn from_secs(secs: f64) -> Result<Duration, String> {
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!(
            "invalid duration {secs}: expected a number of seconds from 0 to 100 years"
        ));
    }
    // The shortest decimal that reads back as the same f64: what was written.
    decimal(&secs.to_string(), 1000).map_err(|why| why.describe(&format!("{secs:?}")))
}

/// Why a duration is refused.
enum Invalid {
    Form,
    TooFine,
    TooLong,
}

impl Invalid {
    fn describe(self, what: &str) -> String {
        let why = match self {
            Invalid::Form => format!("expected {FORMS}"),
            Invalid::TooFine => "finer than a millisecond".into(),
            Invalid::TooLong => "longer than 100 years".into(),
        };
        format!("invalid duration {what}: {why}")
    }
}

/// `whole[.fraction]` units, exactly, in whole milliseconds.
fn decimal(number: &str, millis_per_unit: u128) -> Result<Duration, Invalid> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return Err(Invalid::Form);
    }
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    // Past 13 digits a whole number is more than 100 years in any unit; past
    // 7 a fraction is finer than a millisecond in any unit.
    if whole.len() > 13 {
        return Err(Invalid::TooLong);
    }
    if fraction.len() > 7 {
        return Err(Invalid::TooFine);
    }
    let whole: u128 = whole.parse().unwrap_or(0);
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = fraction.parse().unwrap_or(0);
    if fraction * millis_per_unit % scale != 0 {
        return Err(Invalid::TooFine);
    }
    let millis = whole * millis_per_unit + fraction * millis_per_unit / scale;
    if millis > MAX_MILLIS {
        return Err(Invalid::TooLong);
    }
    Ok(Duration::from_millis(millis as u64))
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
    fn fractions_count_exactly_to_the_millisecond() {
        assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("2.500s"), Ok(Duration::from_millis(2500)));
        assert_eq!(
            parse("0.0000005h"),
            Err("invalid duration \"0.0000005h\": finer than a millisecond".into())
        );
        assert!(parse("1.5ms")
            .unwrap_err()
            .contains("finer than a millisecond"));
        assert!(parse("0.0001")
            .unwrap_err()
            .contains("finer than a millisecond"));
        assert_eq!(from_secs(0.1), Ok(Duration::from_millis(100)));
        assert_eq!(
            from_secs(123456789.123),
            Ok(Duration::from_millis(123456789123))
        );
        assert!(from_secs(1e-300)
            .unwrap_err()
            .contains("finer than a millisecond"));
        assert!(from_secs(-1.0).unwrap_err().contains("from 0 to 100 years"));
        assert!(from_secs(1e20)
            .unwrap_err()
            .contains("longer than 100 years"));
        assert!(from_secs(f64::NAN).is_err());
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
            // Forms the parser once let through, undocumented.
            "5 sec",
            "5 s",
            "2mins",
            ".5",
            "5.",
            "1e3",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
        let err = parse("5 seconds").unwrap_err();
        assert!(err.ends_with(&format!("expected {FORMS}")), "{err}");
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
