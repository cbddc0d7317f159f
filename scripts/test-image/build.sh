#!/bin/sh
# The engine tests' image: busybox-static with its applet links, /bin/udp-echo (udp-echo.c here,
# built static: the image has no libc), /etc/passwd and /etc/group for root, /tmp and a page in
# /www for httpd. No registry is reachable on these machines, so each engine script imports the
# tarball this makes (podman import, or docker's POST /images/create?fromSrc=-).
#
#   build.sh recipe        print the recipe id: a sha256 over this script, udp-echo.c and the
#                          busybox binary. The engine scripts label the image with it
#                          (LABEL lightd.test-image=<id>) and rebuild an image whose label
#                          differs, so an image from an older recipe (say one without
#                          udp-echo) is replaced instead of reused.
#   build.sh tar OUT.tar   build the root filesystem and write it to OUT.tar
#   build.sh changes       print the image settings to import with, one per line
#                          (Dockerfile syntax, as `import --change` and the API's changes= take)
#
# Needs busybox-static, gcc and libc6-dev (for the static link). Progress goes to stderr.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
SOURCE="$HERE/udp-echo.c"

say() { echo "test-image: $*" >&2; }
die() { say "$*"; exit 1; }

busybox_path() {
    BUSYBOX=$(command -v busybox || true)
    [ -n "$BUSYBOX" ] || die "busybox is not installed (apt-get install busybox-static)"
    # A dynamically linked busybox would find no libc in the image.
    if LC_ALL=C ldd "$BUSYBOX" 2>&1 | grep -q '=>'; then
        die "$BUSYBOX is dynamically linked; the image has no libc (install busybox-static)"
    fi
    echo "$BUSYBOX"
}

recipe() {
    bb=$(busybox_path)
    cat "$HERE/build.sh" "$SOURCE" "$bb" | sha256sum | cut -c1-16
}

changes() {
    echo 'ENV PATH=/bin'
    echo 'CMD ["/bin/sh"]'
    echo "LABEL lightd.test-image=$(recipe)"
}

build_tar() {
    out=$1
    bb=$(busybox_path)
    command -v gcc >/dev/null 2>&1 || die "gcc is not installed (apt-get install gcc libc6-dev)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    root="$work/root"
    mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/www"
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    for applet in $("$bb" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    # -static: the image has no libc; -Os -s: small, it is copied per container by vfs.
    gcc -static -Os -s -Wall -Wextra -Werror -o "$root/bin/udp-echo" "$SOURCE" \
        || die "cannot build udp-echo statically (apt-get install gcc libc6-dev)"
    echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
    echo 'hello from lightd test image' >"$root/www/index.html"
    tar -C "$root" -cf "$out" .
    rm -rf "$work"
    trap - EXIT
    say "built $out from $bb and udp-echo.c (recipe $(recipe))"
}

case "${1:-}" in
    recipe) recipe ;;
    changes) changes ;;
    tar)
        [ $# -eq 2 ] || die "usage: build.sh tar OUT.tar"
        build_tar "$2"
        ;;
    *) die "usage: build.sh recipe | changes | tar OUT.tar" ;;
esac
