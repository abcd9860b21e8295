#!/bin/sh
# A worker that knows nothing of the scoreboard: prefork still supervises it
# (respawns it, stops it, kills what it leaves behind), and it still shows on
# the board, with no status.
if [ -z "${PREFORK_WORKER_SLOT:-}" ]; then
    echo "shell-worker.sh: run me under prefork: prefork -- examples/shell-worker.sh (PREFORK_WORKER_SLOT is not set)" >&2
    exit 2
fi
trap 'echo "shell worker $$ (slot $PREFORK_WORKER_SLOT) stopping"; exit 0' TERM
echo "shell worker $$ started in slot $PREFORK_WORKER_SLOT"
# prefork stops a worker with SIGTERM to its whole process group, so the
# sleep dies of it too, and sh would say so on standard error
# ("Terminated"). So the sleep runs in the background while the shell waits
# (`wait` returns at once on the signal, and the trap runs), with the
# shell's own messages sent to /dev/null.
while :; do
    { sleep 1 & wait $!; } 2>/dev/null
done
