#!/bin/sh
# Two builds of prefork measured alternately (A, B, A, B, ...) by the
# supervisor benchmark, so that both see the same spells of load on a shared
# machine. Before each run it notes the load average and the share of CPU
# that others used over 5 s (from /proc/stat, while nothing of ours runs: the
# load average alone misleads, since a start-up of 1000 workers raises it by
# 10 to 20 for a minute).
#
#   bench/supervisor_ab.sh OLD_BIN NEW_BIN [ROUNDS] [OUT_DIR]
#
# Sections: PREFORK_BENCH_ONLY (default respawn,startup,stalled). Each run's
# output goes to OUT_DIR/<a|b>-<n>.txt (default target/supervisor-ab).
set -eu
cd "$(dirname "$0")/.."
a=$1
b=$2
rounds=${3:-2}
out=${4:-target/supervisor-ab}
PREFORK_BENCH_ONLY=${PREFORK_BENCH_ONLY:-respawn,startup,stalled}
export PREFORK_BENCH_ONLY
mkdir -p "$out"

busy() {
    s1=$(head -1 /proc/stat)
    sleep 5
    s2=$(head -1 /proc/stat)
    printf '%s\n%s\n' "$s1" "$s2" | awk '{
        idle = $5 + $6; total = 0
        for (i = 2; i <= NF; i++) total += $i
        if (NR == 1) { i0 = idle; t0 = total }
        else printf "%.0f%%", 100 * (1 - (idle - i0) / (total - t0))
    }'
}

round=1
while [ "$round" -le "$rounds" ]; do
    for side in a b; do
        if [ "$side" = a ]; then bin=$a; else bin=$b; fi
        file=$out/$side-$round.txt
        echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S); CPU busy (others) over 5 s before: $(busy)" >"$file"
        PREFORK_BENCH_BIN=$bin bash bench/supervisor.sh >>"$file" 2>&1
        echo "load after: $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S)" >>"$file"
        echo "$file: $(head -1 "$file")"
    done
    round=$((round + 1))
done
