#!/usr/bin/env perl
# A prefork worker in Perl, with Parallel::Scoreboard pointed at the board
# prefork gives it: the two share one on-disk format. (The module's
# constructor removes the file prefork made for this pid, and its first
# update() makes a new one; prefork follows the change.)
use strict;
use warnings;
use Parallel::Scoreboard;
use Time::HiRes qw(sleep);

my $dir = $ENV{PREFORK_SCOREBOARD_DIR}
    or die "PREFORK_SCOREBOARD_DIR is not set: run me under prefork\n";
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
