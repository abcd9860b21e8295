#!/bin/sh
# The spare-scaling benchmark (issue 14; see benches/spare.rs): prefork's
# pool growing for a burst of slow requests and shrinking back, against
# Parallel::Prefork::SpareWorkers (bench/spare_peer.pl) in the same run.
# Builds the example http_worker (release), then runs
# `cargo bench --bench spare`, which measures the bench profile's prefork
# (release with debug info) unless PREFORK_BENCH_BIN names another.
#
#   bench/spare.sh            # about 2.5 minutes once built
#   bench/spare.sh --quick    # bursts of 6 s instead of 15 (PREFORK_BENCH_QUICK=1)
#
# The peer needs Perl's Parallel::Prefork (Debian: libparallel-prefork-perl);
# without it, its rows say so. Results: BENCHMARKS.md.
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" = --quick ]; then
    PREFORK_BENCH_QUICK=1
    export PREFORK_BENCH_QUICK
fi
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- commit: $(git --no-optional-locks describe --always --dirty 2>/dev/null || echo '?')"
echo "- load average before the build: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
cargo build --release --examples -p prefork-scoreboard
cargo bench --bench spare
