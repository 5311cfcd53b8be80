#!/usr/bin/python3
"""Steady, established traffic through the VIP for a fixed time.

    steady.py --vip 10.0.0.100 --udp-flows 40 --tcp-flows 10 --seconds 20

Every flow is opened first and then kept: UDP flows are connected sockets
that send a numbered datagram and wait for its echo, in a loop; TCP flows
are keep-alive HTTP connections that send GET / in a loop. Each answer
names the backend; the summary says, per protocol, how many requests were
sent and answered, and how many flows ever saw more than one backend.
Prints "ready" on stderr once every flow has had its first answer, and a
JSON summary on stdout at the end.
"""

import argparse
import json
import socket
import sys
import threading
import time


class Flow:
    def __init__(self):
        self.sent = 0
        self.answered = 0
        self.lost = 0
        self.backends = set()
        self.error = None
        self.first = threading.Event()


def udp_loop(vip, port, flow, stop, pause):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((vip, port))
    # Generous: on a loaded machine an answer can take a while, and only
    # an answer that never comes is a loss.
    s.settimeout(5.0)
    n = 0
    while not stop.is_set():
        n += 1
        msg = f"seq-{n}".encode()
        s.send(msg)
        flow.sent += 1
        try:
            while True:
                data = s.recv(4096).decode(errors="replace")
                if data.endswith("data=" + msg.decode()):
                    break  # a late answer to an earlier datagram is skipped
            flow.answered += 1
            flow.backends.add(data.split()[0])
            flow.first.set()
        except socket.timeout:
            flow.lost += 1
        time.sleep(pause)
    s.close()


def tcp_loop(vip, port, flow, stop, pause):
    try:
        s = socket.create_connection((vip, port), timeout=5)
        f = s.makefile("rb")
        while not stop.is_set():
            s.sendall(f"GET / HTTP/1.1\r\nHost: {vip}\r\n\r\n".encode())
            flow.sent += 1
            length = 0
            while True:
                line = f.readline()
                if not line:
                    raise ConnectionError("closed by peer")
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line in (b"\r\n", b"\n"):
                    break
            body = f.read(length).decode()
            flow.answered += 1
            flow.backends.add(body.split()[0])
            flow.first.set()
            time.sleep(pause)
        s.close()
    except Exception as e:  # noqa: BLE001
        flow.error = repr(e)
        flow.first.set()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vip", required=True)
    ap.add_argument("--udp-port", type=int, default=9000)
    ap.add_argument("--tcp-port", type=int, default=80)
    ap.add_argument("--udp-flows", type=int, default=40)
    ap.add_argument("--tcp-flows", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--pause", type=float, default=0.02)
    a = ap.parse_args()
    stop = threading.Event()
    udp = [Flow() for _ in range(a.udp_flows)]
    tcp = [Flow() for _ in range(a.tcp_flows)]
    threads = [threading.Thread(target=udp_loop, args=(a.vip, a.udp_port, f, stop, a.pause)) for f in udp]
    threads += [threading.Thread(target=tcp_loop, args=(a.vip, a.tcp_port, f, stop, a.pause)) for f in tcp]
    for t in threads:
        t.start()
    for f in udp + tcp:
        f.first.wait(10)
    print("ready", file=sys.stderr, flush=True)
    time.sleep(a.seconds)
    stop.set()
    for t in threads:
        t.join()

    def summary(flows):
        return {
            "flows": len(flows),
            "sent": sum(f.sent for f in flows),
            "answered": sum(f.answered for f in flows),
            "lost": sum(f.lost for f in flows),
            "flows_that_changed_backend": sum(1 for f in flows if len(f.backends) > 1),
            "flows_without_answer": sum(1 for f in flows if not f.backends),
            "errors": [f.error for f in flows if f.error][:5],
            "backends": sorted({b for f in flows for b in f.backends}),
        }

    print(json.dumps({"udp": summary(udp), "tcp": summary(tcp)}))


if __name__ == "__main__":
    main()
