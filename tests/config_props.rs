//! Properties of the parsers that read untrusted text (issue 7): durations
//! and config files never panic, reject what they cannot use with a message,
//! and what prefork prints (`prefork check`, `duration::display`) reads back
//! the same. CI runs the default number of cases; a longer run by hand:
//! `PROPTEST_CASES=200000 cargo test --release --test tests config_props`.

use std::time::Duration;

use proptest::prelude::*;

use prefork::config::{render, Layer};
use prefork::duration;

/// Text shaped like a config file: known and unknown keys, values of every
/// TOML type, tables, and plain noise.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("command".to_string()),
        Just("workers".to_string()),
        Just("timeout".to_string()),
        Just("kill_timeout".to_string()),
        Just("graceful_timeout".to_string()),
        Just("check_interval".to_string()),
        Just("scoreboard_dir".to_string()),
        Just("working_directory".to_string()),
        Just("min_uptime".to_string()),
        Just("backoff_initial".to_string()),
        Just("backoff_max".to_string()),
        Just("wrkers".to_string()),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[0-9]{1,4}(ms|s|m|h| parsecs)?".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        "[a-z./ ]{0,10}".prop_map(|s| format!("[{s:?}, \"x\"]")),
        Just("true".to_string()),
        Just("{ a = 1 }".to_string()),
        ".{0,12}",
    ];
    let line = prop_oneof![
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => Just("[env]".to_string()),
        1 => "[A-Z_]{1,8} = \"[a-z]{0,5}\"",
        1 => ".{0,20}",
    ];
    proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #[test]
    fn a_duration_string_parses_or_is_refused_with_a_message(text in ".{0,24}") {
        match duration::parse(&text) {
            Ok(d) => prop_assert!(d <= Duration::from_secs(3_200_000_000)),
            Err(e) => prop_assert!(e.contains("invalid duration"), "{}", e),
        }
    }

    #[test]
    fn numbers_with_units_parse_to_what_they_say(n in 0u64..1_000_000, unit in 0usize..4) {
        let (suffix, scale_ms) = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)][unit];
        let parsed = duration::parse(&format!("{n}{suffix}"));
        let expected = Duration::from_millis(n * scale_ms);
        if expected.as_secs() <= 3_200_000_000 {
            prop_assert_eq!(parsed, Ok(expected));
        } else {
            prop_assert!(parsed.is_err(), "{:?} is beyond 100 years", expected);
        }
    }

    #[test]
    fn displayed_durations_read_back_the_same(ms in 0u64..10_000_000_000) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(duration::parse(&duration::display(d)), Ok(d));
    }

    #[test]
    fn any_config_text_parses_or_is_refused_without_panicking(text in config_text()) {
        if let Ok(layer) = toml::from_str::<Layer>(&text) {
            // Validation of what parsed never panics either.
            let _ = layer.into_config(4);
        }
    }

    #[test]
    fn an_effective_config_reads_back_the_same(
        command in proptest::collection::vec("[ -~]{1,12}", 1..4),
        workers in 1usize..=4096,
        timeout_ms in proptest::option::of(1u64..100_000_000),
        graceful_ms in 0u64..100_000_000,
        env in proptest::collection::btree_map("[A-Z_]{1,8}", "[ -~]{0,12}", 0..4),
    ) {
        let layer = Layer {
            command: Some(command.into_iter().map(Into::into).collect()),
            workers: Some(workers),
            timeout: timeout_ms.map(Duration::from_millis),
            graceful_timeout: Some(Duration::from_millis(graceful_ms)),
            env: env.into_iter().collect(),
            ..Layer::default()
        };
        let config = layer.into_config(1).unwrap();
        let printed = render(&config);
        let again: Layer = toml::from_str(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
        prop_assert_eq!(again.into_config(1).unwrap(), config);
    }
}

proptest! {
    /// The same for every option, each set or left to its default.
    #[test]
    fn every_option_reads_back_the_same(
        durations in proptest::collection::vec(proptest::option::of(0u64..10_000_000), 6),
        check_interval_ms in proptest::option::of(10u64..10_000_000),
        scoreboard_dir in proptest::option::of("/[a-z./ ]{1,12}"),
        working_directory in proptest::option::of(prop_oneof![Just("/"), Just("/tmp")]),
    ) {
        let ms = |i: usize| durations[i].map(Duration::from_millis);
        let (initial, max) = match (ms(4), ms(5)) {
            (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
            (a, _) => (a.map(|a| a.min(Duration::from_secs(30))), None),
        };
        let layer = Layer {
            command: Some(vec!["w".into()]),
            graceful_timeout: ms(0),
            timeout: ms(1),
            kill_timeout: ms(2),
            check_interval: check_interval_ms.map(Duration::from_millis),
            min_uptime: ms(3),
            backoff_initial: initial,
            backoff_max: max,
            scoreboard_dir: scoreboard_dir.map(Into::into),
            working_directory: working_directory.map(Into::into),
            ..Layer::default()
        };
        let config = layer.into_config(1).unwrap();
        let printed = render(&config);
        let again: Layer = toml::from_str(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
        prop_assert_eq!(again.into_config(1).unwrap(), config);
    }
}
