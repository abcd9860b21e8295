#!/usr/bin/env perl
# A prefork worker in Perl, with Parallel::Scoreboard pointed at the board
# prefork gives it: the two share one on-disk format. (The module's
# constructor removes the file prefork made for this pid, and its first
# update() makes a new one; prefork follows the change.)
# Run outside prefork, it says so in one line and exits 2.
use strict;
use warnings;
use Time::HiRes qw(sleep);

my $dir = $ENV{PREFORK_SCOREBOARD_DIR};
if (!$dir) {
    print STDERR "worker.pl: run me under prefork: prefork -- perl examples/worker.pl"
        . " (PREFORK_SCOREBOARD_DIR is not set)\n";
    exit 2;
}
if (!eval { require Parallel::Scoreboard; 1 }) {
    (my $why = $@) =~ s/ \(\@INC contains: [^)]*\)//;
    print STDERR "worker.pl: needs Parallel::Scoreboard from CPAN (cpanm Parallel::Scoreboard),"
        . " or PERL5LIB pointing at a copy: $why";
    exit 2;
}
my $slot = $ENV{PREFORK_WORKER_SLOT} // '?';
my $board = Parallel::Scoreboard->new(base_dir => $dir);

my $stopping = 0;
$SIG{TERM} = sub { $stopping = 1 };
my $served = 0;
while (!$stopping) {
    $board->update("perl idle slot=$slot served=$served");
    sleep 0.2;
    $board->update("perl working on job $served slot=$slot");
    sleep 0.2;
    $served++;
}
$board->update("perl stopping after $served jobs");
