#!/bin/sh
# The supervisor benchmarks: respawn latency, start-up time and memory, idle
# wake-ups, the cost of a board check, `prefork report`, respawn and stop
# with a stalled reader of the master's output (see
# benches/supervisor.rs). `cargo bench --bench supervisor` builds prefork
# optimized and runs them; then `prefork report` is timed with hyperfine,
# when it is installed. Results: BENCHMARKS.md.
#
#   bench/supervisor.sh            # the whole run, about 75 s once built
#   bench/supervisor.sh --quick    # shorter, about 30 s (PREFORK_BENCH_QUICK=1)
#   PREFORK_BENCH_ONLY=respawn,check bench/supervisor.sh   # some sections
#                                  # (respawn, startup, idle, check, report,
#                                  # stalled)
#   PREFORK_BENCH_BIN=/path/to/prefork bench/supervisor.sh  # measure that
#                                  # build (another commit's) instead of
#                                  # building this tree's
#   cargo bench --bench supervisor # the same, on the bench profile's build
#
# Every master runs in a fresh directory under /dev/shm and is stopped when
# its section ends or fails; nothing is left running.
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" = --quick ]; then
    PREFORK_BENCH_QUICK=1
    export PREFORK_BENCH_QUICK
fi

echo "# Machine"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- nproc: $(nproc)"
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | sort | uniq -c | sed 's/^ *//')"
echo "- kernel: $(uname -sr)"
echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "- rustc: $(rustc --version)"
echo "- commit: $(git --no-optional-locks describe --always --dirty 2>/dev/null || echo '?')"
echo "- load average before the build: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# The binary measured is a plain release build. `cargo bench` builds its own
# prefork in the bench profile (release plus debug info, and the features
# the dev-dependencies turn on: a bigger binary, with a bigger RSS) and
# replaces target/release/prefork with it, so the release one is copied
# aside first.
if [ -n "${PREFORK_BENCH_BIN:-}" ]; then
    prefork=$PREFORK_BENCH_BIN
    echo "- binary measured: $prefork (given by PREFORK_BENCH_BIN)"
    echo
else
    cargo build --release --bin prefork
    mkdir -p target/supervisor-bench
    cp target/release/prefork target/supervisor-bench/prefork
    prefork=$(pwd)/target/supervisor-bench/prefork
fi
PREFORK_BENCH_BIN=$prefork cargo bench --bench supervisor
case ",${PREFORK_BENCH_ONLY:-report}," in
*,report,*) ;;
*) exit 0 ;; # section 5b goes with section 5
esac
if command -v hyperfine >/dev/null 2>&1; then
    echo
    echo "## 5b. \`prefork report\` under hyperfine -N (no shell)"
    echo
    tmp=$(mktemp -d /dev/shm/prefork-bench-hf.XXXXXX)
    trap 'rm -rf "$tmp"' EXIT
    : >"$tmp/status_report"
    runs=500
    [ -n "${PREFORK_BENCH_QUICK:-}" ] && runs=100
    # Descriptor 3 is the status file, as prefork hands it to a worker;
    # hyperfine passes it on to the commands it runs.
    exec 3<>"$tmp/status_report"
    PREFORK_STATUS_FD=3 hyperfine -N --style basic --warmup 20 --runs "$runs" \
        --export-markdown "$tmp/hyperfine.md" --export-json "$tmp/hyperfine.json" \
        "$prefork report 'idle slot=0 served=12345'" /bin/true
    exec 3>&-
    echo
    cat "$tmp/hyperfine.md"
    if command -v python3 >/dev/null 2>&1; then
        echo
        python3 - "$tmp/hyperfine.json" <<'EOF'
import json, sys
print("| command | median | p99 | min |")
print("| --- | ---: | ---: | ---: |")
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(r["times"])
    p99 = t[min(len(t) - 1, int(0.99 * len(t)))]
    print(f"| `{r['command']}` | {r['median'] * 1e3:.3f} ms | {p99 * 1e3:.3f} ms | {t[0] * 1e3:.3f} ms |")
EOF
    fi
else
    echo
    echo "(hyperfine is not installed: section 5b skipped)"
fi
