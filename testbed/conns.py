#!/usr/bin/python3
"""Many real TCP connections to a testbed HTTP listener, one process (far
cheaper than a curl per connection). Each connection asks `GET /` and
reads which backend answered (testbed/backend.py says "backend=beN ...").

    conns.py seq VIP PORT N [SRC...]
        N connections one after another, each from a fresh ephemeral port,
        the source addresses taken in turn (default: the route's). Prints
        "SRC BACKEND" per connection.
    conns.py hold VIP PORT
        Reads commands from stdin and keeps connections open:
          open N      open N more connections one after another, keep them;
                      prints the backend of each, then "done"
          close NAME  closes the held connections to backend NAME; prints
                      "closed K"
        Exits (closing everything) at end of input.

The client closes each connection first (HTTP/1.1 keep-alive, then close),
so its port stays in TIME_WAIT and is not reused within the test.
"""

import socket
import sys


def request(vip, port, src=None):
    """Opens a connection, asks once, returns (backend name, socket)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    if src:
        s.bind((src, 0))
    s.connect((vip, port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: lbd-test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed before the headers: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed in the body")
        body += chunk
    name = body.split()[0].decode().removeprefix("backend=")
    return name, s


def seq(vip, port, n, sources):
    for i in range(n):
        src = sources[i % len(sources)] if sources else None
        name, s = request(vip, port, src)
        s.close()
        print(src or "-", name, flush=True)


def hold(vip, port):
    held = []
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "open":
            for _ in range(int(cmd[1])):
                name, s = request(vip, port)
                held.append((name, s))
                print(name, flush=True)
            print("done", flush=True)
        elif cmd[0] == "close":
            keep = []
            closed = 0
            for name, s in held:
                if name == cmd[1]:
                    s.close()
                    closed += 1
                else:
                    keep.append((name, s))
            held = keep
            print(f"closed {closed}", flush=True)
        else:
            raise SystemExit(f"unknown command {line!r}")
    for _, s in held:
        s.close()


def main():
    mode, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "seq":
        seq(vip, port, int(sys.argv[4]), sys.argv[5:])
    elif mode == "hold":
        hold(vip, port)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
