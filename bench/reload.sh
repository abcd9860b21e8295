#!/bin/sh
# Reloading under load, prefork against its peers (Server::Starter's
# start_server, gunicorn; see benches/reload.rs): builds what it needs, then
# runs `cargo bench --bench reload`, whose markdown goes to standard output
# (progress to standard error). About two minutes once built.
#
#   bench/reload.sh
#   PREFORK_RELOAD_ONLY=prefork-rust,start_server-rust bench/reload.sh
#   PREFORK_RELOAD_COUNT=5 PREFORK_RELOAD_RATE=0 bench/reload.sh
#
# Needs the Debian packages gunicorn, starman, libnet-server-ss-prefork-perl
# and libserver-starter-perl (.ci/run installs them); a setup whose server is
# missing is skipped, with why.
set -eu
cd "$(dirname "$0")/.."

# The Rust example worker is the scoreboard crate's, which `cargo bench`
# does not build.
cargo build --release --bins --examples
PREFORK_RELOAD_WORKER=${PREFORK_RELOAD_WORKER:-$(pwd)/target/release/examples/http_worker}
export PREFORK_RELOAD_WORKER
# A plain release build of prefork, copied aside: `cargo bench` replaces
# target/release/prefork with its bench-profile build.
if [ -z "${PREFORK_BENCH_BIN:-}" ]; then
    mkdir -p target/reload-bench
    cp target/release/prefork target/reload-bench/prefork
    PREFORK_BENCH_BIN=$(pwd)/target/reload-bench/prefork
    export PREFORK_BENCH_BIN
fi
echo "- commit: $(git --no-optional-locks describe --always --dirty 2>/dev/null || echo '?')"
exec cargo bench --bench reload
