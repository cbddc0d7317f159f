#!/bin/sh
# Bring up a local Podman service that speaks the Docker Engine API, for lightd's engine tests
# and benches, and make sure the local test image exists. Idempotent; run as root.
#
# Settings follow ../shared/podman-engine.md: runc (crun fails on these machines), the cgroupfs
# manager, the file events logger and explicit default ulimits.
#
# Environment:
#   LIGHTD_PODMAN_DIR   state dir (default /run/lightd-podman): containers.conf, podman.sock,
#                       podman.pid, podman.log
#   LIGHTD_TEST_IMAGE   test image to build from busybox-static (default localhost/busybox:latest)
#   LIGHTD_ENGINE_WAIT  seconds to wait for the socket to answer (default 30)
#
# Output: the socket URL (unix://<dir>/podman.sock) as the only line on stdout; progress on stderr.
# Exit status: 0 when the service answers and the image exists, non-zero otherwise.
set -eu

DIR=${LIGHTD_PODMAN_DIR:-/run/lightd-podman}
IMAGE=${LIGHTD_TEST_IMAGE:-localhost/busybox:latest}
WAIT=${LIGHTD_ENGINE_WAIT:-30}
SOCK="$DIR/podman.sock"
PIDFILE="$DIR/podman.pid"
CONF="$DIR/containers.conf"
LOG="$DIR/podman.log"

say() { echo "engine-up: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (rootful podman with host port bindings)"
command -v podman >/dev/null 2>&1 || die "podman is not installed (apt-get install podman runc busybox-static)"
command -v runc >/dev/null 2>&1 || die "runc is not installed (apt-get install runc)"

mkdir -p "$DIR"
chmod 0700 "$DIR"

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

# Does the socket answer the Docker API ping?
answers() {
    [ -S "$SOCK" ] || return 1
    if command -v curl >/dev/null 2>&1; then
        [ "$(curl -fsS -m 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" = "OK" ]
    else
        podman --remote --url "unix://$SOCK" version >/dev/null 2>&1
    fi
}

# Is the pid in the pid file our podman service (not a recycled pid)?
ours() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "system service .*unix://$SOCK"
}

# Is the pid in the pid file still running (not exited, not a zombie)?
alive() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
    [ "$state" != Z ]
}

if ours && answers; then
    say "service already running (pid $(cat "$PIDFILE"))"
else
    if ours; then
        # Running but not answering (yet): give it the usual wait below instead of a second copy.
        say "service pid $(cat "$PIDFILE") is running; waiting for it to answer"
    else
        rm -f "$PIDFILE" "$SOCK"
        # setsid: the service must outlive this script and the test session's process group.
        setsid podman system service --time=0 "unix://$SOCK" </dev/null >>"$LOG" 2>&1 &
        echo $! >"$PIDFILE"
        say "started podman service (pid $!), log $LOG"
    fi
    i=0
    until answers; do
        # Liveness, not identity: right after the fork the child still shows this script's
        # command line until it execs podman, so `ours` would wrongly say it is gone.
        alive || die "podman service exited; see $LOG: $(tail -n 5 "$LOG" 2>/dev/null)"
        i=$((i + 1))
        [ "$i" -le $((WAIT * 10)) ] || die "socket $SOCK did not answer within ${WAIT}s; see $LOG"
        sleep 0.1
    done
    say "service answers on unix://$SOCK"
fi

if podman image exists "$IMAGE"; then
    say "image $IMAGE present"
else
    BUSYBOX=$(command -v busybox || true)
    [ -n "$BUSYBOX" ] || die "busybox is not installed (apt-get install busybox-static)"
    if LC_ALL=C ldd "$BUSYBOX" 2>&1 | grep -q '=>'; then
        die "$BUSYBOX is dynamically linked; the image has no libc (install busybox-static)"
    fi
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/root/bin" "$WORK/root/tmp" "$WORK/root/etc" "$WORK/root/www"
    chmod 1777 "$WORK/root/tmp"
    cp "$BUSYBOX" "$WORK/root/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$WORK/root/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$WORK/root/etc/passwd"
    echo 'root:x:0:' >"$WORK/root/etc/group"
    echo 'hello from lightd test image' >"$WORK/root/www/index.html"
    tar -C "$WORK/root" -cf "$WORK/bb.tar" .
    podman import -q \
        --change 'ENV=PATH=/bin' \
        --change 'CMD=["/bin/sh"]' \
        "$WORK/bb.tar" "$IMAGE" >/dev/null
    say "built image $IMAGE from $BUSYBOX"
fi

echo "unix://$SOCK"
