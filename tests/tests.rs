//! One integration-test crate (see Cargo.toml `autotests = false`): every
//! module below is one concern, sharing `util`.

mod util;

mod record_props;
mod scoreboard_basic;
mod scoreboard_fork;
mod scoreboard_interop;
mod scoreboard_safety;
mod scoreboard_stress;
