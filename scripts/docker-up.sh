#!/bin/sh
# Bring up Docker Engine (Debian's docker.io, dockerd 20.10) for lightd's engine tests and
# benches, inside a private network namespace, and make sure the test image is current.
# Idempotent; run as root. scripts/docker-down.sh stops it again. Podman, the suite's other
# engine, has its own pair: scripts/engine-up.sh/engine-down.sh.
#
# Why a namespace of its own: dockerd makes a bridge (docker0), NAT and filter chains and turns
# on ip_forward. In the private namespace all of that stays away from the host's network and
# firewall (../shared/docker-engine.md). Its published ports exist only in there too, so
# whatever talks to them (tests, a `lightd serve` under test, curl) must run in the namespace:
# `nsenter --net=/run/netns/<name> ...`, or setns(2) as tests/engine_support.py does.
#
# What else keeps it to itself, and what it needs here:
# - `ip netns add` gives the namespace a stable path (/run/netns/<name>, a bind mount that
#   keeps it alive without a process in it), so tests can enter it by path.
# - Its own containerd: dockerd 20.10 starts a private containerd under --exec-root only when
#   /run/containerd/containerd.sock does not exist, and otherwise joins the host's. Started
#   here with a config of our own and passed as --containerd, ours is used either way.
# - --data-root, --exec-root, --pidfile, -H and --config-file of our own; the daemon.json here
#   moves the trust key (`deprecated-key-path`), which 20.10 otherwise writes to
#   /etc/docker/key.json. --cgroup-parent keeps container cgroups apart from another docker's.
#   dockerd still makes /run/docker/plugins and runc shims' sockets go to /run/containerd/s/
#   (both fixed paths, named per daemon, so they do not collide with another engine's).
# - --storage-driver=vfs: overlayfs may be unavailable (or already in use by Podman); vfs only
#   copies directories, and the test image is a few MB.
# - cgroups: the cgroupfs driver (no systemd here). The hybrid v1 hierarchy of these machines
#   works with runc 1.1; dockerd only warns that blkio weights are missing.
# - AppArmor: dockerd loads its docker-default profile only where AppArmor is enabled; these
#   machines have none (no securityfs), and nothing needs configuring either way.
# - iptables: dockerd calls the iptables (nft) binary in its namespace, which has its own empty
#   tables. The userland proxy (docker-proxy, dockerd's default) stays on: it is what makes a
#   published port answer on 127.0.0.1 and ::1 of the namespace, as on a user's host.
# Everything else is dockerd's default, so the tests see what users see.
#
# Environment:
#   LIGHTD_DOCKER_DIR    run dir (default /run/lightd-docker): docker.sock, dockerd.pid,
#                        dockerd.log, containerd.{sock,pid,log,toml}, daemon.json, exec/, netns
#   LIGHTD_DOCKER_DATA   data root on disk (default /var/lib/lightd-docker); containerd's root
#                        is its containerd/ folder
#   LIGHTD_DOCKER_NETNS  name of the network namespace (default lightd-docker)
#   LIGHTD_TEST_IMAGE    test image (default localhost/busybox:latest), built by
#                        scripts/test-image/build.sh and loaded over the socket (docker import)
#   LIGHTD_ENGINE_WAIT   seconds to wait for each daemon (default 60)
#
# Output on stdout, two lines: the socket URL (unix://<dir>/docker.sock), then the path of the
# network namespace (/run/netns/<name>); the path is also written to <dir>/netns. Progress on
# stderr. Exit status: 0 when dockerd answers in that namespace and the image is current.
set -eu

ME=docker-up
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/engine-lib.sh"

DIR=${LIGHTD_DOCKER_DIR:-/run/lightd-docker}
DATA=${LIGHTD_DOCKER_DATA:-/var/lib/lightd-docker}
NETNS=${LIGHTD_DOCKER_NETNS:-lightd-docker}
IMAGE=${LIGHTD_TEST_IMAGE:-localhost/busybox:latest}
WAIT=${LIGHTD_ENGINE_WAIT:-60}
NSPATH="/run/netns/$NETNS"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/dockerd.pid"
LOG="$DIR/dockerd.log"
CTR_SOCK="$DIR/containerd.sock"
CTR_PIDFILE="$DIR/containerd.pid"
CTR_CONF="$DIR/containerd.toml"
CTR_LOG="$DIR/containerd.log"
DAEMON_JSON="$DIR/daemon.json"
# Identify our daemons' command lines (a recycled pid would not match).
PATTERN="dockerd .*-H unix://$SOCK"
CTR_PATTERN="containerd --config $CTR_CONF"

[ "$(id -u)" -eq 0 ] || die "must run as root (dockerd, network namespaces)"
need dockerd "apt-get install docker.io"
need containerd "apt-get install containerd (docker.io depends on it)"
need ctr "apt-get install containerd"
need runc "apt-get install runc"
need docker-proxy "apt-get install docker.io"
need iptables "apt-get install iptables"
need ip "apt-get install iproute2"
need nsenter "apt-get install util-linux"
need flock "apt-get install util-linux"
need curl "apt-get install curl"

mkdir -p "$DIR" "$DATA" "$DIR/exec"
chmod 0700 "$DIR" "$DATA"
take_lock "$DIR/up.lock"

# -- the network namespace -------------------------------------------------------------------

HOST_NS=$(readlink /proc/self/ns/net)
ns_id() { nsenter --net="$1" readlink /proc/self/ns/net 2>/dev/null; }

NS_ID=$(ns_id "$NSPATH" || true)
if [ -z "$NS_ID" ]; then
    # A name without a namespace behind it (its mount is gone, e.g. /run was not cleared at a
    # reboot) would make `ip netns add` fail: drop the name first.
    if [ -e "$NSPATH" ]; then
        ip netns delete "$NETNS" 2>/dev/null || rm -f "$NSPATH"
    fi
    ip netns add "$NETNS"
    NS_ID=$(ns_id "$NSPATH") || die "ip netns add $NETNS made no namespace at $NSPATH"
    say "created network namespace $NSPATH"
fi
# Never run dockerd in the host's namespace: its NAT and filter rules would land in the host's.
[ "$NS_ID" != "$HOST_NS" ] || die "$NSPATH is the host's own network namespace; refusing"
nsenter --net="$NSPATH" ip link set lo up

# Is PID running in our namespace? (A daemon of ours elsewhere is a leftover to stop by hand.)
in_ns() { [ "$(readlink "/proc/$1/ns/net" 2>/dev/null)" = "$NS_ID" ]; }

# -- containerd --------------------------------------------------------------------------------

ctr_answers() { ctr --address "$CTR_SOCK" version >/dev/null 2>&1; }

cpid=$(pid_in "$CTR_PIDFILE" || true)
if [ -n "$cpid" ] && runs "$cpid" "$CTR_PATTERN"; then
    in_ns "$cpid" || die "containerd pid $cpid is not in $NSPATH; stop it (scripts/docker-down.sh)"
    say "containerd already running (pid $cpid)"
else
    # Version 2 config; cri (Kubernetes' plugin) is off, as in dockerd's own containerd.
    cat >"$CTR_CONF.tmp" <<EOF
version = 2
root = "$DATA/containerd"
state = "$DIR/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CTR_SOCK"
EOF
    mv "$CTR_CONF.tmp" "$CTR_CONF"
    rm -f "$CTR_PIDFILE" "$CTR_SOCK" "$CTR_SOCK.ttrpc"
    # setsid: outlive this script and the test session; 9>&-: do not hold our lock.
    setsid nsenter --net="$NSPATH" containerd --config "$CTR_CONF" \
        </dev/null >>"$CTR_LOG" 2>&1 9>&- &
    cpid=$!
    echo "$cpid" >"$CTR_PIDFILE"
    say "started containerd (pid $cpid), log $CTR_LOG"
fi
i=0
until ctr_answers; do
    alive "$cpid" || die "containerd exited; see $CTR_LOG: $(tail -n 5 "$CTR_LOG" 2>/dev/null)"
    i=$((i + 1))
    [ "$i" -le $((WAIT * 10)) ] || die "containerd did not answer within ${WAIT}s; see $CTR_LOG"
    sleep 0.1
done

# -- dockerd -----------------------------------------------------------------------------------

pid=$(pid_in "$PIDFILE" || true)
if [ -n "$pid" ] && runs "$pid" "$PATTERN"; then
    in_ns "$pid" || die "dockerd pid $pid is not in $NSPATH; stop it (scripts/docker-down.sh)"
    if answers "$SOCK"; then
        say "dockerd already running (pid $pid)"
    else
        say "dockerd pid $pid is running; waiting for it to answer"
        wait_answer "$SOCK" "$pid" "$WAIT" "$LOG"
    fi
else
    cat >"$DAEMON_JSON.tmp" <<EOF
{"deprecated-key-path": "$DATA/key.json"}
EOF
    mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
    # dockerd writes --pidfile itself, and refuses to start while it names a live process.
    rm -f "$PIDFILE" "$SOCK"
    # setsid and nsenter exec (neither forks here), so $! is dockerd's own pid.
    setsid nsenter --net="$NSPATH" dockerd \
        --config-file "$DAEMON_JSON" \
        --containerd "$CTR_SOCK" \
        --data-root "$DATA" \
        --exec-root "$DIR/exec" \
        --pidfile "$PIDFILE" \
        -H "unix://$SOCK" \
        --storage-driver=vfs \
        --exec-opt native.cgroupdriver=cgroupfs \
        --cgroup-parent /lightd-docker \
        </dev/null >>"$LOG" 2>&1 9>&- &
    pid=$!
    say "started dockerd (pid $pid) in $NSPATH, log $LOG"
    wait_answer "$SOCK" "$pid" "$WAIT" "$LOG"
    say "dockerd answers on unix://$SOCK"
fi

# -- the test image ----------------------------------------------------------------------------

api() { curl -fsS --unix-socket "$SOCK" "$@"; }

image_recipe() {
    api "http://d/images/$IMAGE/json" 2>/dev/null \
        | grep -o '"lightd.test-image":"[0-9a-f]*"' | cut -d'"' -f4 || true
}

RECIPE=$(sh "$HERE/test-image/build.sh" recipe)
have=$(image_recipe)
if [ "$have" = "$RECIPE" ]; then
    say "image $IMAGE present (recipe $RECIPE)"
else
    # The tag is after a colon in the last path part (a colon before a slash is a port).
    case "${IMAGE##*/}" in
        *:*) REPO=${IMAGE%:*} TAG=${IMAGE##*:} ;;
        *) REPO=$IMAGE TAG=latest ;;
    esac
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    sh "$HERE/test-image/build.sh" tar "$WORK/image.tar"
    set --
    while IFS= read -r change; do
        set -- "$@" --url-query "changes=$change"
    done <<EOF
$(sh "$HERE/test-image/build.sh" changes)
EOF
    # `docker import` over the API: the tarball is the body, fromSrc=- says so.
    api -X POST -H 'Content-Type: application/x-tar' --data-binary "@$WORK/image.tar" \
        --url-query "fromSrc=-" --url-query "repo=$REPO" --url-query "tag=$TAG" "$@" \
        http://d/images/create >"$WORK/answer" || die "import failed: $(cat "$WORK/answer")"
    # Errors come inside a 200 answer's stream of progress messages.
    ! grep -q '"error"' "$WORK/answer" || die "import failed: $(cat "$WORK/answer")"
    [ "$(image_recipe)" = "$RECIPE" ] || die "imported $IMAGE but it does not carry recipe $RECIPE"
    say "built image $IMAGE (recipe $RECIPE; it had recipe ${have:-none})"
fi

echo "$NSPATH" >"$DIR/netns"
echo "unix://$SOCK"
echo "$NSPATH"
