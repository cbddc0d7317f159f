#!/usr/bin/env python3
"""Make this host busy the way a game host is, to check the test suite does not depend on it.

Opens thousands of loopback TCP connections (their local ports come from ip_local_port_range, as
every outgoing connection's do), optionally holds a given range of ports with such connections,
and keeps every core busy. Loopback only; it stops by itself after --seconds, or on SIGTERM/Ctrl-C.

    python3 scripts/busy-host.py --connections 5000 --burn 2 --seconds 600 &
    make test
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import signal
import socket
import sys
import time


def burn(until: float) -> None:
    while time.monotonic() < until:
        pass


def connect_many(count: int, hold: range | None) -> list[socket.socket]:
    """Client and server ends of ``count`` loopback connections (two file descriptors each)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    address = listener.getsockname()
    sockets = [listener]
    local_ports = list(hold) if hold is not None else []
    for index in range(count):
        client = socket.socket()
        if index < len(local_ports):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                client.bind(("127.0.0.1", local_ports[index]))
            except OSError:
                client.close()
                continue
        try:
            client.connect(address)
        except OSError:
            client.close()
            break
        server, _ = listener.accept()
        sockets += [client, server]
    return sockets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--hold", help="also hold these local ports, e.g. 40000-40020")
    parser.add_argument("--burn", type=int, default=0, help="processes spinning on a core each")
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    hold = None
    if args.hold:
        first, last = (int(part) for part in args.hold.split("-"))
        hold = range(first, last + 1)
    until = time.monotonic() + args.seconds
    burners = [multiprocessing.Process(target=burn, args=(until,), daemon=True)
               for _ in range(args.burn)]
    for process in burners:
        process.start()
    sockets = connect_many(args.connections + (0 if hold is None else len(hold)), hold)
    print(f"busy-host: {len(sockets) // 2} loopback connections open, {args.burn} cores burning, "
          f"for {args.seconds:.0f} s", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while time.monotonic() < until:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in burners:
            process.terminate()
        for sock in sockets:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
