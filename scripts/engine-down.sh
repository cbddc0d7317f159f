#!/bin/sh
# Stop the Podman service started by scripts/engine-up.sh, by the pid in its pid file only.
# Containers it started keep running under their own conmon; remove them first if that matters.
# Idempotent: a missing pid file or a dead pid is not an error.
#
# Environment: LIGHTD_PODMAN_DIR (default /run/lightd-podman), as for engine-up.sh.
set -eu

ME=engine-down
. "$(cd "$(dirname "$0")" && pwd)/engine-lib.sh"

DIR=${LIGHTD_PODMAN_DIR:-/run/lightd-podman}
SOCK="$DIR/podman.sock"
PIDFILE="$DIR/podman.pid"

if ! pid=$(pid_in "$PIDFILE"); then
    say "no pid file $PIDFILE; nothing to stop"
    exit 0
fi
if ! runs "$pid" "system service .*unix://$SOCK"; then
    say "pid $pid is not our podman service any more; removing stale pid file"
    rm -f "$PIDFILE"
    exit 0
fi
stop_pid "$pid" 10 "podman service"
rm -f "$PIDFILE" "$SOCK"
