//! One integration-test crate (see Cargo.toml `autotests = false`): every
//! module below is one concern, sharing `util`.

mod util;

mod record_props;
mod scoreboard_basic;
mod scoreboard_fork;
mod scoreboard_interop;
mod scoreboard_liveness;
mod scoreboard_safety;
mod scoreboard_stress;

// The supervisor, through the real binary.
mod harness;
mod supervisor_config;
mod supervisor_env;
mod supervisor_environment;
mod supervisor_failures;
mod supervisor_http;
mod supervisor_lifecycle;
mod supervisor_limits;
mod supervisor_listen;
mod supervisor_log_format;
mod supervisor_messages;
mod supervisor_notify;
mod supervisor_output;
mod supervisor_privileges;
mod supervisor_ready;
mod supervisor_recycle;
mod supervisor_relay;
mod supervisor_signals;
mod supervisor_spare;
mod supervisor_stuck;

// Reading and writing the board from outside, in four languages.
mod monitoring;

// `prefork top`, driven in a real terminal (tmux).
mod top;

// Every config/*.toml, run as the README says.
mod sample_configs;

// Under fire: everything at once, with a seed to replay.
mod chaos;

// Properties of the parsers of untrusted text.
mod config_props;

// Config input that can never block or exhaust the process.
mod config_input;

// A loopback HTTP load generator (also used by benches/reload.rs).
mod httpload;

// Real third-party servers (gunicorn, Starman) under prefork, reloaded
// under that load.
mod third_party;

// Reloads under load: the example workers, and no failed request.
mod zero_downtime;

// The recipes of contrib/ (systemd, Docker, Kubernetes), checked without them.
mod recipes;

// The master's HTTP status server, on loopback sockets.
mod status_http;
