#!/usr/bin/env perl
# The Perl side of bench/scoreboard.sh: times Parallel::Scoreboard 0.08 (the
# reference, found through PERL5LIB) on the same work as the Rust benchmarks,
# and holds the boards of live workers that every reader reads.
#
#   perl_scoreboard.pl hold BASE N...
#       Creates BASE/board_<N> for each N and forks N workers into it; each
#       worker calls Parallel::Scoreboard->new + update (so it holds its flock)
#       and then blocks. Prints "ready" once all are up, and keeps them until
#       its standard input reaches EOF (or it dies: the workers then see EOF on
#       their pipe and exit, removing their files).
#   perl_scoreboard.pl update DIR SIZE ITERS SAMPLES
#   perl_scoreboard.pl read_all DIR EXPECTED ITERS SAMPLES
#       Print "perl <op> <param> <ns/op>...": the time per operation of each
#       of SAMPLES timed samples of ITERS operations (after one untimed
#       warm-up sample), sorted.
use strict;
use warnings;

use Parallel::Scoreboard;
use POSIX ();
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);

# The status every live worker holds (the same in the Rust bench's workers).
my $WORKER_STATUS = 'busy: GET /index.html HTTP/1.1';

my $op = shift // '';
if ($op eq 'hold') {
    hold(@ARGV);
} elsif ($op eq 'update') {
    bench_update(@ARGV);
} elsif ($op eq 'read_all') {
    bench_read_all(@ARGV);
} else {
    die "usage: $0 hold BASE N... | update DIR SIZE ITERS SAMPLES | read_all DIR EXPECTED ITERS SAMPLES\n";
}

sub hold {
    my ($base, @counts) = @_;
    die "hold: no board sizes given\n" unless @counts;
    pipe(my $hold_r, my $hold_w) or die "pipe: $!";
    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    my @pids;
    my $total = 0;
    for my $n (@counts) {
        my $dir = "$base/board_$n";
        mkdir $dir or die "mkdir $dir: $!";
        for (1 .. $n) {
            my $pid = fork;
            die "fork: $!" unless defined $pid;
            if ($pid == 0) {
                close $hold_w;
                close $ready_r;
                open STDIN, '<', '/dev/null';
                open STDOUT, '>', '/dev/null';
                my $ok = eval {
                    my $sb = Parallel::Scoreboard->new(base_dir => $dir);
                    $sb->update($WORKER_STATUS);
                    syswrite $ready_w, 'r';
                    close $ready_w;
                    sysread $hold_r, my $buf, 1;    # blocks until EOF
                    undef $sb;                      # close and unlink
                    1;
                };
                unless ($ok) {
                    warn "worker $$: $@";
                    syswrite $ready_w, 'E';
                }
                POSIX::_exit($ok ? 0 : 1);
            }
            push @pids, $pid;
        }
        $total += $n;
    }
    close $hold_r;
    close $ready_w;
    my $seen = 0;
    while ($seen < $total) {
        my $got = sysread $ready_r, my $buf, 4096;
        die "hold: workers went away ($seen of $total ready)\n" unless $got;
        die "hold: a worker failed\n" if $buf =~ /E/;
        $seen += $got;
    }
    $| = 1;
    print "ready\n";
    1 while defined <STDIN>;    # until the script closes our input
    close $hold_w;              # the workers see EOF and exit
    waitpid $_, 0 for @pids;
}

sub timed {
    my ($iters, $samples, $body) = @_;
    my @t;
    for my $s (-1 .. $samples - 1) {    # sample -1: warm-up
        my $t0 = clock_gettime(CLOCK_MONOTONIC);
        $body->() for 1 .. $iters;
        my $dt = clock_gettime(CLOCK_MONOTONIC) - $t0;
        push @t, $dt * 1e9 / $iters if $s >= 0;
    }
    return join ' ', map { sprintf '%.1f', $_ } sort { $a <=> $b } @t;
}

sub bench_update {
    my ($dir, $size, $iters, $samples) = @_;
    my $sb = Parallel::Scoreboard->new(base_dir => $dir);
    my $status = 'x' x $size;
    my $times = timed($iters, $samples, sub { $sb->update($status) });
    print "perl update $size $times\n";
}

sub bench_read_all {
    my ($dir, $expected, $iters, $samples) = @_;
    my $sb = Parallel::Scoreboard->new(base_dir => $dir);
    my $times = timed(
        $iters, $samples,
        sub {
            my $all = $sb->read_all;
            my $n = keys %$all;
            die "perl read_all: $n live workers in $dir, expected $expected\n"
                unless $n == $expected;
        }
    );
    print "perl read_all $expected $times\n";
}
