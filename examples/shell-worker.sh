#!/bin/sh
# A worker that knows nothing of the scoreboard: prefork still supervises it
# (respawns it, stops it, kills what it leaves behind), and it still shows on
# the board, with no status.
trap 'echo "shell worker $$ (slot $PREFORK_WORKER_SLOT) stopping"; exit 0' TERM
echo "shell worker $$ started in slot $PREFORK_WORKER_SLOT"
while :; do
    sleep 1 &
    wait $!
done
