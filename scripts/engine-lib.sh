# Shared by the test-engine scripts (engine-up/down.sh: Podman; docker-up/down.sh: Docker
# Engine). Sourced, not run: `. "$(dirname "$0")/engine-lib.sh"` after setting ME (the script's
# name for messages). POSIX sh; every function works on the paths it is given, nothing global.

say() { echo "$ME: $*" >&2; }
die() { say "$*"; exit 1; }

need() {  # need TOOL "apt-get install ..." : stop with the package to install when TOOL is missing
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"
}

# Serialise every run of the calling script on one lock file: test sessions run the scripts too,
# and two of them must not start two daemons or import the image twice at once. The lock is
# held until the script exits (fd 9 stays open).
take_lock() {  # take_lock FILE
    exec 9>"$1"
    flock -w 300 9 || die "another run holds $1 for over 300s"
}

# Does the socket answer the Docker API ping?
answers() {  # answers SOCK
    [ -S "$1" ] || return 1
    [ "$(curl -fsS -m 2 --unix-socket "$1" http://d/_ping 2>/dev/null)" = "OK" ]
}

pid_in() {  # pid_in FILE : print the pid a pid file holds, or fail
    [ -f "$1" ] || return 1
    p=$(cat "$1" 2>/dev/null || true)
    case "$p" in '' | *[!0-9]*) return 1 ;; esac
    echo "$p"
}

# Is PID still running (not exited, not a zombie)? Liveness, not identity: right after a fork
# the child still shows the parent script's command line until it execs the daemon.
alive() {  # alive PID
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)
    [ "$state" != Z ]
}

# Is PID the daemon we started (its command line matches PATTERN), not a recycled pid?
runs() {  # runs PID PATTERN
    [ -r "/proc/$1/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"
}

# Wait until SOCK answers; fail early when PID exits (the log says why).
wait_answer() {  # wait_answer SOCK PID SECONDS LOG
    i=0
    until answers "$1"; do
        alive "$2" || die "pid $2 exited; see $4: $(tail -n 5 "$4" 2>/dev/null)"
        i=$((i + 1))
        [ "$i" -le $(($3 * 10)) ] || die "socket $1 did not answer within $3s; see $4"
        sleep 0.1
    done
}

# SIGTERM one pid we started, wait up to SECONDS for it to go, then SIGKILL it.
stop_pid() {  # stop_pid PID SECONDS WHAT
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while alive "$1"; do
        i=$((i + 1))
        if [ "$i" -gt $(($2 * 10)) ]; then
            say "$3 (pid $1) did not exit within $2s of SIGTERM; sending SIGKILL"
            kill -KILL "$1" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    say "stopped $3 (pid $1)"
}
