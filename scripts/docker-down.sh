#!/bin/sh
# Stop the Docker Engine of scripts/docker-up.sh: dockerd, then its containerd, each by the pid
# in its pid file only, then drop the network namespace's name. dockerd stops its running
# containers as it shuts down (no live-restore), so their shims and docker-proxy go with it.
# The data root (image, stopped containers) stays on disk for the next docker-up.sh.
# Idempotent: missing pid files or dead pids are not errors.
#
# Environment: LIGHTD_DOCKER_DIR, LIGHTD_DOCKER_NETNS, as for docker-up.sh.
set -eu

ME=docker-down
. "$(cd "$(dirname "$0")" && pwd)/engine-lib.sh"

DIR=${LIGHTD_DOCKER_DIR:-/run/lightd-docker}
NETNS=${LIGHTD_DOCKER_NETNS:-lightd-docker}
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
CTR_PIDFILE="$DIR/containerd.pid"
CTR_SOCK="$DIR/containerd.sock"

[ -d "$DIR" ] || { say "no $DIR; nothing to stop"; exit 0; }
take_lock "$DIR/up.lock"  # not while a docker-up.sh is starting them

# stop_ours PIDFILE PATTERN WHAT SECONDS
stop_ours() {
    if ! p=$(pid_in "$1"); then
        say "no $3 pid file $1; nothing to stop"
    elif ! runs "$p" "$2"; then
        say "pid $p is not our $3 any more; removing stale pid file"
    else
        stop_pid "$p" "$4" "$3"
    fi
    rm -f "$1"
}

# dockerd gives each running container its stop timeout (10 s) before it kills it.
stop_ours "$PIDFILE" "dockerd .*-H unix://$SOCK" dockerd 60
rm -f "$SOCK"
stop_ours "$CTR_PIDFILE" "containerd --config $DIR/containerd.toml" containerd 20
rm -f "$CTR_SOCK" "$CTR_SOCK.ttrpc"

# The namespace itself goes once nothing runs in it any more; this only removes its name.
if [ -e "/run/netns/$NETNS" ]; then
    ip netns delete "$NETNS" && say "removed network namespace /run/netns/$NETNS"
fi
rm -f "$DIR/netns"
