#!/bin/sh
# Stop the Podman service started by scripts/engine-up.sh, by the pid in its pid file only.
# Containers it started keep running under their own conmon; remove them first if that matters.
# Idempotent: a missing pid file or a dead pid is not an error.
#
# Environment: LIGHTD_PODMAN_DIR (default /run/lightd-podman), as for engine-up.sh.
set -eu

DIR=${LIGHTD_PODMAN_DIR:-/run/lightd-podman}
SOCK="$DIR/podman.sock"
PIDFILE="$DIR/podman.pid"

say() { echo "engine-down: $*" >&2; }

if [ ! -f "$PIDFILE" ]; then
    say "no pid file $PIDFILE; nothing to stop"
    exit 0
fi
pid=$(cat "$PIDFILE")
if [ -z "$pid" ] || [ ! -r "/proc/$pid/cmdline" ] \
    || ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "system service .*unix://$SOCK"; then
    say "pid ${pid:-?} is not our podman service any more; removing stale pid file"
    rm -f "$PIDFILE"
    exit 0
fi

kill -TERM "$pid"
i=0
while [ -d "/proc/$pid" ]; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        say "pid $pid did not exit within 10s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
    fi
    sleep 0.1
done
rm -f "$PIDFILE" "$SOCK"
say "stopped podman service (pid $pid)"
