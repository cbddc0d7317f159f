#!/bin/sh
# Bring up a local Podman service that speaks the Docker Engine API, for lightd's engine tests
# and benches, and make sure the local test image exists and is current. Idempotent; run as root.
# Docker Engine, the suite's second engine, has its own pair: scripts/docker-up.sh/docker-down.sh.
#
# Settings follow ../shared/podman-engine.md: runc (crun fails on these machines), the cgroupfs
# manager, the file events logger and explicit default ulimits. Podman runs in the host's
# network namespace: its published ports are on the host's addresses (the tests use ports
# outside ip_local_port_range, see tests/ports.py).
#
# Environment:
#   LIGHTD_PODMAN_DIR   state dir (default /run/lightd-podman): containers.conf, podman.sock,
#                       podman.pid, podman.log, up.lock
#   LIGHTD_TEST_IMAGE   test image (default localhost/busybox:latest), built by
#                       scripts/test-image/build.sh: busybox-static and /bin/udp-echo. An image
#                       of that name from another recipe (older ones had no udp-echo) is rebuilt.
#   LIGHTD_ENGINE_WAIT  seconds to wait for the socket to answer (default 30)
#
# Output: the socket URL (unix://<dir>/podman.sock) as the only line on stdout; progress on stderr.
# Exit status: 0 when the service answers and the image is current, non-zero otherwise.
set -eu

ME=engine-up
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/engine-lib.sh"

DIR=${LIGHTD_PODMAN_DIR:-/run/lightd-podman}
IMAGE=${LIGHTD_TEST_IMAGE:-localhost/busybox:latest}
WAIT=${LIGHTD_ENGINE_WAIT:-30}
SOCK="$DIR/podman.sock"
PIDFILE="$DIR/podman.pid"
CONF="$DIR/containers.conf"
LOG="$DIR/podman.log"
# Identifies our service's command line (a recycled pid would not match).
PATTERN="system service .*unix://$SOCK"

[ "$(id -u)" -eq 0 ] || die "must run as root (rootful podman with host port bindings)"
need podman "apt-get install podman runc busybox-static"
need runc "apt-get install runc"
need curl "apt-get install curl"
need flock "apt-get install util-linux"

mkdir -p "$DIR"
chmod 0700 "$DIR"
take_lock "$DIR/up.lock"

cat >"$CONF.tmp" <<'EOF'
[containers]
default_ulimits = ["nproc=1024:1024", "nofile=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
mv "$CONF.tmp" "$CONF"
export CONTAINERS_CONF="$CONF"

pid=$(pid_in "$PIDFILE" || true)
if [ -n "$pid" ] && runs "$pid" "$PATTERN" && answers "$SOCK"; then
    say "service already running (pid $pid)"
else
    if [ -n "$pid" ] && runs "$pid" "$PATTERN"; then
        # Running but not answering (yet): give it the usual wait below instead of a second copy.
        say "service pid $pid is running; waiting for it to answer"
    else
        rm -f "$PIDFILE" "$SOCK"
        # setsid: the service must outlive this script and the test session's process group.
        # 9>&-: it must not inherit (and so hold) the lock of this script.
        setsid podman system service --time=0 "unix://$SOCK" </dev/null >>"$LOG" 2>&1 9>&- &
        pid=$!
        echo "$pid" >"$PIDFILE"
        say "started podman service (pid $pid), log $LOG"
    fi
    wait_answer "$SOCK" "$pid" "$WAIT" "$LOG"
    say "service answers on unix://$SOCK"
fi

RECIPE=$(sh "$HERE/test-image/build.sh" recipe)
have=$(podman image inspect --format '{{ index .Config.Labels "lightd.test-image" }}' "$IMAGE" \
    2>/dev/null || true)
case "$have" in '' | *[!0-9a-f]*) have=none ;; esac  # "<no value>": an image without the label
if [ "$have" = "$RECIPE" ]; then
    say "image $IMAGE present (recipe $RECIPE)"
else
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    sh "$HERE/test-image/build.sh" tar "$WORK/image.tar"
    set --
    # One --change per setting; `changes` prints them one a line (no line holds a newline).
    while IFS= read -r change; do
        set -- "$@" --change "$change"
    done <<EOF
$(sh "$HERE/test-image/build.sh" changes)
EOF
    podman import -q "$@" "$WORK/image.tar" "$IMAGE" >/dev/null
    say "built image $IMAGE (recipe $RECIPE; it had recipe $have)"
fi

echo "unix://$SOCK"
