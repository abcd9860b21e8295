#!/usr/bin/env bash
# Runs the scoreboard benchmarks of the Rust library, the Perl reference
# (Parallel::Scoreboard 0.08) and a C floor (bench/floor.c: the bare syscalls
# and MD5) in one run, on the same tmpfs, and prints tables of the figures
# (medians, and fastest samples) and their ratios against the targets of
# BENCHMARKS.md. The C floor and Perl run twice, before and after Rust.
#
#   bash bench/scoreboard.sh            # from anywhere; takes under a minute
#
# The read_all benchmarks of all three read the same boards: 10, 100 and 1000
# live Perl workers (bench/perl_scoreboard.pl hold), each a process holding
# the flock on its status file, kept alive for the whole run.
#
# Needs: cargo, gcc, perl with Class::Accessor::Lite
# (apt-get install -y libclass-accessor-lite-perl) and Parallel::Scoreboard
# (from CPAN: cpanm Parallel::Scoreboard; else found in ../shared/reference/perl
# when PERL5LIB does not provide it).
# Environment: SAMPLES (default 15) timed samples per Perl/C figure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
samples=${SAMPLES:-15}
sizes=(16 256 4096)
counts=(10 100 1000)

if ! perl -MParallel::Scoreboard -e1 2>/dev/null; then
    export PERL5LIB="$root/../shared/reference/perl${PERL5LIB:+:$PERL5LIB}"
fi
if ! perl -MParallel::Scoreboard -e1; then
    echo "Parallel::Scoreboard cannot be loaded: install it from CPAN" \
        "(cpanm Parallel::Scoreboard; Debian does not package it), or set PERL5LIB" \
        "to a directory holding Parallel/Scoreboard.pm; it needs Class::Accessor::Lite" \
        "(apt-get install -y libclass-accessor-lite-perl)" >&2
    exit 1
fi

# One scratch directory for everything, on tmpfs when there is one.
shm=/dev/shm
[[ -d $shm && -w $shm ]] || shm=${TMPDIR:-/tmp}
work=$(mktemp -d "$shm/scoreboard-bench.XXXXXX")
holder_pid=
holder_in=
cleanup() {
    if [[ -n $holder_pid ]]; then
        # EOF on its input makes the holder release its workers and exit.
        eval "exec $holder_in>&-" 2>/dev/null || true
        wait "$holder_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "== machine"
echo "cpus:   $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "kernel: $(uname -sr)"
echo "fs:     $work on $(stat -f -c %T "$work")"
echo "tools:  $(rustc --version), $(gcc --version | head -1), perl $(perl -e 'print $^V')," \
    "Parallel::Scoreboard $(perl -MParallel::Scoreboard -e 'print $Parallel::Scoreboard::VERSION')"

echo "== build"
gcc -O2 -Wall -Wextra -o "$work/floor" bench/floor.c
"$work/floor" selftest
probe="busy: GET /index.html HTTP/1.1"
if [[ $("$work/floor" md5hex "$probe") != $(perl -MDigest::MD5=md5_hex -e 'print md5_hex($ARGV[0])' "$probe") ]]; then
    echo "the floor's MD5 disagrees with Digest::MD5" >&2
    exit 1
fi
if ! cargo bench --bench scoreboard --no-run >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    exit 1
fi
tail -n 2 "$work/build.log"

echo "== workers"
mkdir "$work/boards"
coproc HOLD { exec perl bench/perl_scoreboard.pl hold "$work/boards" "${counts[@]}"; }
holder_pid=$HOLD_PID
holder_in=${HOLD[1]}
line=
read -r -t 300 -u "${HOLD[0]}" line || true
if [[ $line != ready ]]; then
    echo "the Perl workers did not come up" >&2
    exit 1
fi
for n in "${counts[@]}"; do
    echo "board_$n: $(find "$work/boards/board_$n" -name 'status_*' | wc -l) live Perl workers"
done

results=$work/results
: >"$results"
# Iterations per timed sample, so that each sample takes some milliseconds.
update_iters() { case $1 in 16) echo 20000 ;; 256) echo 10000 ;; *) echo 2000 ;; esac; }
read_iters() { echo $((5000 / $1 > 0 ? 5000 / $1 : 1)); }
# Keeps a line "<who> <op> <param> <ns per op of each sample>..." and shows
# its summary.
record() {
    tee -a "$results" | perl -lane '
        my ($who, $op, $p, @t) = @F;
        @t = sort { $a <=> $b } @t;
        printf "%-5s %-8s %5d: median %12.1f ns, min %12.1f, max %12.1f (%d samples)\n",
            $who, $op, $p, $t[@t / 2], $t[0], $t[-1], scalar @t;'
}

floor_and_perl() {
    echo "== C floor (round $1)"
    for size in "${sizes[@]}"; do
        mkdir -p "$work/floor-update"
        "$work/floor" update "$work/floor-update" "$size" "$(update_iters "$size")" "$samples" | record
    done
    for n in "${counts[@]}"; do
        "$work/floor" read_all "$work/boards/board_$n" "$n" "$(read_iters "$n")" "$samples" | record
    done
    echo "== Perl, Parallel::Scoreboard (round $1)"
    for size in "${sizes[@]}"; do
        perl bench/perl_scoreboard.pl update "$work/perl-update" "$size" "$(update_iters "$size")" "$samples" | record
    done
    for n in "${counts[@]}"; do
        perl bench/perl_scoreboard.pl read_all "$work/boards/board_$n" "$n" "$(read_iters "$n")" "$samples" | record
    done
}

# The floor and Perl run before and after the Rust bench, and their samples
# are pooled, so that a burst of load from elsewhere on a shared machine
# weighs less on one side of a ratio.
floor_and_perl 1

echo "== Rust (cargo bench --bench scoreboard, criterion)"
if ! SCOREBOARD_BENCH_BOARDS="$work/boards" SCOREBOARD_BENCH_TMPDIR="$work" \
    CRITERION_HOME="$work/criterion" cargo bench --bench scoreboard >"$work/criterion.log" 2>&1; then
    cat "$work/criterion.log" >&2
    exit 1
fi
grep -E '^(update|read_all)/[0-9]+ +time:' "$work/criterion.log" || true
# Criterion's samples (sample.json: iteration counts and total times), as ns
# per iteration of each sample: the median of these is criterion's median.
for op in update read_all; do
    for dir in "$work/criterion/$op"/*/; do
        p=$(basename "$dir")
        [[ $p =~ ^[0-9]+$ ]] || continue
        perl -MJSON::PP -e '
            my ($op, $p, $file) = @ARGV;
            open my $f, "<", $file or die "$file: $!";
            my $s = decode_json(do { local $/; <$f> });
            my @t = map { $s->{times}[$_] / $s->{iters}[$_] } 0 .. $#{ $s->{iters} };
            print join(" ", "rust", $op, $p, map { sprintf "%.1f", $_ } sort { $a <=> $b } @t), "\n";
        ' "$op" "$p" "$dir/new/sample.json" | record
    done
done

floor_and_perl 2

table() {
    perl -e '
        my $stat = shift;
        my %t;
        while (<STDIN>) {
            my ($who, $op, $p, @t) = split;
            push @{ $t{$op}{$p}{$who} }, @t;
        }
        sub pick {
            my @t = sort { $a <=> $b } @_;
            return $stat eq "min" ? $t[0] : $t[@t / 2];
        }
        sub fmt { my $ns = shift; $ns >= 1e6 ? sprintf("%.2f ms", $ns / 1e6)
            : $ns >= 1e3 ? sprintf("%.2f us", $ns / 1e3) : sprintf("%.0f ns", $ns) }
        printf "%-22s %11s %11s %11s %11s %10s  %s\n", "operation", "C floor", "Rust",
            "Perl", "Rust/floor", "Perl/Rust", "targets";
        my $missed = 0;
        for my $op (qw(update read_all)) {
            for my $p (sort { $a <=> $b } keys %{ $t{$op} }) {
                my ($f, $r, $l) = map { pick(@$_) } @{ $t{$op}{$p} }{qw(floor rust perl)};
                my ($rf, $lr) = ($r / $f, $l / $r);
                my @check;
                if ($op eq "update") {
                    push @check, sprintf("Rust/floor <= 1.3: %s", $rf <= 1.3 ? "met" : "MISSED");
                    $missed++ if $rf > 1.3;
                } elsif ($p == 1000) {
                    push @check, sprintf("Rust/floor <= 1.5: %s", $rf <= 1.5 ? "met" : "MISSED");
                    push @check, sprintf("Perl/Rust >= 2.5: %s", $lr >= 2.5 ? "met" : "MISSED");
                    $missed++ if $rf > 1.5;
                    $missed++ if $lr < 2.5;
                }
                my $name = $op eq "update" ? "update, $p B status" : "read_all, $p workers";
                printf "%-22s %11s %11s %11s %10.2fx %9.2fx  %s\n", $name, fmt($f), fmt($r),
                    fmt($l), $rf, $lr, join("; ", @check);
            }
        }
        print $missed ? "$missed target(s) missed\n" : "all targets met\n";
    ' "$1" <"$results"
}

echo "== results: median time per operation (C, Perl: $((2 * samples)) samples over 2 rounds; Rust: criterion's samples)"
table median
echo "== the same with the fastest sample of each (less sensitive to load from elsewhere)"
table min
