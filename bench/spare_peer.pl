#!/usr/bin/perl
# The peer of `cargo bench --bench spare` (benches/spare.rs): a pool of HTTP
# workers sized by Parallel::Prefork::SpareWorkers (Debian:
# libparallel-prefork-perl), the same shape as prefork running its example
# http_worker with HTTP_WORKER_CONNECTIONS=1:
#
# - one listening socket on 127.0.0.1 (port 0: the kernel picks one),
#   opened by the parent and shared by every worker, backlog 1024;
# - each worker accepts one connection at a time, reads one request, answers
#   `GET /` at once and `GET /sleep/N` after N seconds (200, `Connection:
#   close`; anything else 404), and closes the connection;
# - a worker's status is `_` (SpareWorkers' STATUS_IDLE) while it waits in
#   accept and `A` from the accepted connection until it is closed;
# - SIGTERM (what the manager sends to a worker it retires, and to all at
#   shutdown) ends an idle worker at once and a busy one after its answer,
#   as the Rust worker does.
#
# The spawn and kill rules are the module's own, at its defaults (heartbeat
# 0.25 s, spawn_interval 0): a worker more while fewer than min_spare are
# idle (and fewer than max_workers run), one SIGTERM (to the first pid of a
# hash: any worker, idle or busy) while more than max_spare are.
#
#   perl bench/spare_peer.pl --min-spare 2 --max-spare 3 --max-workers 32
#
# prints `port N` on standard output once it listens. SIGTERM or SIGINT
# stops it: the workers get SIGTERM and it waits for them. A worker whose
# manager died exits within a second (it checks its parent pid).
use strict;
use warnings;

use Getopt::Long qw(GetOptions);
use IO::Handle;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use Parallel::Prefork::SpareWorkers qw(:status);

my %opt = (min_spare => 2, max_spare => 3, max_workers => 32);
GetOptions(
    'min-spare=i'   => \$opt{min_spare},
    'max-spare=i'   => \$opt{max_spare},
    'max-workers=i' => \$opt{max_workers},
) or die "usage: $0 [--min-spare N] [--max-spare N] [--max-workers N]\n";

my $listener = IO::Socket::INET->new(
    LocalAddr => '127.0.0.1',
    LocalPort => 0,
    Proto     => 'tcp',
    Listen    => 1024,
    ReuseAddr => 1,
) or die "listen on 127.0.0.1: $!\n";
STDOUT->autoflush(1);
print "port ", $listener->sockport, "\n";

my $manager = $$;
my $pm = Parallel::Prefork::SpareWorkers->new({
    max_workers       => $opt{max_workers},
    min_spare_workers => $opt{min_spare},
    max_spare_workers => $opt{max_spare},
    trap_signals      => { TERM => 'TERM', INT => 'TERM' },
});

while ($pm->signal_received ne 'TERM') {
    $pm->start and next;
    serve();
    $pm->finish;
}
$pm->wait_all_children;
exit 0;

sub serve {
    my $stop = 0;
    $SIG{PIPE} = 'IGNORE';
    # Perl's safe signals interrupt accept (no SA_RESTART): an idle worker
    # ends at once, a busy one after its answer.
    $SIG{TERM} = $SIG{INT} = sub { $stop = 1 };
    # Wakes accept every second to see whether the manager is still there.
    $SIG{ALRM} = sub { };
    until ($stop) {
        alarm 1;
        my $conn = $listener->accept;
        alarm 0;
        unless ($conn) {
            exit 0 if getppid() != $manager;
            next;
        }
        $pm->set_status('A');
        answer($conn);
        close $conn;
        $pm->set_status(STATUS_IDLE);
    }
}

sub answer {
    my ($conn) = @_;
    my $head = '';
    while ($head !~ /\r?\n\r?\n/) {
        my $n = sysread $conn, $head, 8192, length $head;
        return if !$n || length $head > 8192;
    }
    my ($path) = $head =~ m{^GET (\S+) HTTP/1\.[01]\r?\n};
    my ($status, $body) = (404, "not found\n");
    if (defined $path && $path eq '/') {
        ($status, $body) = (200, "hello from pid $$\n");
    } elsif (defined $path && $path =~ m{^/sleep/(\d+)$}) {
        # A signal cuts a sleep short: sleep until the deadline.
        my $until = time + $1;
        while ((my $left = $until - time) > 0) {
            sleep $left;
        }
        ($status, $body) = (200, "hello from pid $$\n");
    }
    my $reason = $status == 200 ? 'OK' : 'Not Found';
    my $response = "HTTP/1.1 $status $reason\r\nContent-Type: text/plain\r\n"
        . "Content-Length: " . length($body) . "\r\nX-Worker-Pid: $$\r\n"
        . "Connection: close\r\n\r\n$body";
    syswrite $conn, $response;
}
