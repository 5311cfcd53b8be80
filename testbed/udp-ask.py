#!/usr/bin/python3
"""One UDP datagram per message, each from a fresh socket (a new source
port, so a new flow), each waiting for its answer; prints one line per
message: the answer, or "no answer within T s".

    udp-ask.py [--timeout SECONDS] ADDRESS PORT MESSAGE...

Unlike `socat -t T`, which waits T after sending whether or not the answer
came and drops an answer later than that, this returns on the answer and
waits long (default 10 s) only for one that is slow: on a loaded machine
a correct path can take more than the fraction of a second socat is
usually given. Exit status 1 if any message went unanswered.
"""

import argparse
import socket
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("address")
    ap.add_argument("port", type=int)
    ap.add_argument("messages", nargs="+")
    a = ap.parse_args()
    unanswered = 0
    for msg in a.messages:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # Connected: the kernel passes up only datagrams from the
            # address and port asked, so an answer proves lbd rewrote it.
            s.connect((a.address, a.port))
            s.settimeout(a.timeout)
            s.send(msg.encode())
            try:
                print(s.recv(65535).decode(errors="replace").strip(), flush=True)
            except socket.timeout:
                print(f"no answer within {a.timeout:g} s", flush=True)
                unanswered += 1
            except OSError as e:  # e.g. ICMP port unreachable on a connected socket
                print(f"error: {e}", flush=True)
                unanswered += 1
    return 1 if unanswered else 0


if __name__ == "__main__":
    sys.exit(main())
