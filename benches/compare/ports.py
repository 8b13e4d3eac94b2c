"""Prints N free TCP ports on 127.0.0.1, one a line.

They are taken below the kernel's ephemeral range, so that the harness's own
outgoing connections (10,000 of them at a time) never hold a port that a
proxy restarted on between two runs needs.
"""
import random
import socket
import sys


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def main():
    count = int(sys.argv[1])
    high = max(ephemeral_low() - 1, 11000)
    candidates = list(range(10000, high))
    random.shuffle(candidates)
    found = []
    for port in candidates:
        if len(found) == count:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
    if len(found) < count:
        sys.exit(f"only {len(found)} free ports below {high}")
    print("\n".join(map(str, found)))


if __name__ == "__main__":
    main()
