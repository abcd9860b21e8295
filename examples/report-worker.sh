#!/bin/sh
# A shell worker that reports its status with `prefork report`, which writes
# to the descriptor prefork handed the worker ($PREFORK_STATUS_FD). Every
# report is a heartbeat for the stuck-worker timeout.
PREFORK=${PREFORK:-prefork}
trap 'stopping=1' TERM
stopping=0
job=0
while [ "$stopping" = 0 ]; do
    "$PREFORK" report "sh idle slot=$PREFORK_WORKER_SLOT served=$job"
    sleep 0.2
    "$PREFORK" report "sh working on job $job slot=$PREFORK_WORKER_SLOT"
    sleep 0.2
    job=$((job + 1))
done
"$PREFORK" report "sh stopping after $job jobs"
