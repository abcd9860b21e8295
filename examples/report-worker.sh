#!/bin/sh
# A shell worker that reports its status with `prefork report`, which writes
# to the descriptor prefork handed the worker ($PREFORK_STATUS_FD). Every
# report is a heartbeat for the stuck-worker timeout.
#
# prefork tells its workers where it is: $PREFORK_BIN is the running prefork
# binary (and its directory is the last entry of their PATH), so no set-up
# is needed. (Outside prefork: "prefork" on PATH.)
if [ -z "${PREFORK_STATUS_FD:-}" ]; then
    echo "report-worker.sh: run me under prefork: prefork -- examples/report-worker.sh (PREFORK_STATUS_FD is not set)" >&2
    exit 2
fi
prefork=${PREFORK_BIN:-prefork}
if ! command -v "$prefork" >/dev/null; then
    echo "report-worker.sh: cannot run \`$prefork report\`: set PREFORK_BIN to prefork's path" >&2
    exit 2
fi

# prefork stops a worker with SIGTERM to its whole process group, so the
# command the shell is running dies of it too, and sh would say so on
# standard error ("Terminated"). So `run` starts each command in the
# background and waits for it (`wait` returns at once on the signal, and the
# trap runs), with the shell's own messages, and only those, sent to
# /dev/null: the command's standard error is the worker's, kept aside as
# descriptor 4 (3 is the status file).
stopping=0
trap 'stopping=1' TERM
run() {
    { "$@" 2>&4 4>&- & wait $!; } 4>&2 2>/dev/null
}

job=0
while [ "$stopping" = 0 ]; do
    run "$prefork" report "sh idle slot=$PREFORK_WORKER_SLOT served=$job"
    [ "$stopping" = 0 ] && run sleep 0.2
    [ "$stopping" = 0 ] && run "$prefork" report "sh working on job $job slot=$PREFORK_WORKER_SLOT"
    [ "$stopping" = 0 ] && run sleep 0.2
    job=$((job + 1))
done
"$prefork" report "sh stopping after $job jobs"
