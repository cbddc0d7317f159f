/*
 * udp-echo PORT: answer every UDP datagram with the same bytes, to the address it came from.
 *
 * The engine tests need a real UDP round trip through a published port, and busybox's nc has no
 * UDP mode. Built with `gcc -static -Os` (scripts/test-image/build.sh) so it runs in the test
 * image, which has no libc.
 *
 * It listens on every address of the container: IPv6 with IPV6_V6ONLY off (IPv4 arrives as
 * mapped addresses) where the container has IPv6, plain IPv4 where it has none. SIGTERM and
 * SIGINT end it at once: as a container's PID 1 a signal without a handler is ignored, and the
 * engine would wait out the whole stop timeout before it kills.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void quit(int sig) {
    (void)sig;
    _exit(0);
}

static int open_socket(unsigned short port) {
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    if (fd >= 0) {
        int off = 0;
        struct sockaddr_in6 a6;
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons(port);
        a6.sin6_addr = in6addr_any;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) == 0
            && bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0)
            return fd;
        close(fd);
    }
    /* No IPv6 in this network namespace (or it is disabled): IPv4 only. */
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("udp-echo: socket");
        exit(1);
    }
    struct sockaddr_in a4;
    memset(&a4, 0, sizeof a4);
    a4.sin_family = AF_INET;
    a4.sin_port = htons(port);
    a4.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&a4, sizeof a4) != 0) {
        perror("udp-echo: bind");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv) {
    char *end = NULL;
    long port = argc == 2 ? strtol(argv[1], &end, 10) : 0;
    if (argc != 2 || *argv[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
        fprintf(stderr, "usage: udp-echo PORT (1-65535)\n");
        return 2;
    }
    signal(SIGTERM, quit);
    signal(SIGINT, quit);
    int fd = open_socket((unsigned short)port);
    fprintf(stderr, "udp-echo: listening on udp port %ld\n", port);

    static char buf[65536];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("udp-echo: recvfrom");
            return 1;
        }
        /* A reply that cannot be sent (e.g. the sender is gone) is not this program's failure. */
        if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len) < 0 && errno != EINTR)
            perror("udp-echo: sendto");
    }
}
