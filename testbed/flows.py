#!/usr/bin/python3
"""Many short flows through the VIP, for the multi-worker testbed test.

    flows.py --vip 10.0.0.100 [--udp-flows N] [--tcp-flows N] [--parallel P]
             [--timeout SECONDS] [--udp-attempts N]

Each UDP flow is a fresh connected socket (new source port): the kernel
only delivers a reply whose source is the VIP and port, so every answer
received proves lbd rewrote the reply. Each TCP flow is a new connection
with one HTTP request; the backend's answer must name this socket's own
address and port (NAT mode keeps the client's). Prints a JSON summary.

A UDP flow whose reply does not come within --timeout sends its datagram
again, up to --udp-attempts sends in all. Every resend is counted:
`udp_retries` (resends over all UDP flows, answered or not) and
`udp_flows_retried` (flows that needed at least one); a caller asserts on
them, since a path that loses some datagrams still gets most flows
answered within three attempts.
"""

import argparse
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor


def udp_flow(vip, port, i, timeout, attempts):
    """(status, resends, backend, source port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((vip, port))
        s.settimeout(timeout)
        local = s.getsockname()
        msg = f"flow-{i}".encode()
        for attempt in range(attempts):
            s.send(msg)
            try:
                data = s.recv(4096)
            except socket.timeout:
                continue
            text = data.decode(errors="replace")
            ok = text.endswith("data=" + msg.decode()) and f"client={local[0]}:{local[1]}" in text
            return ("ok" if ok else "bad", attempt, text.split()[0], local[1])
        return ("timeout", attempts - 1, None, local[1])
    finally:
        s.close()


def tcp_flow(vip, port, i, timeout):
    s = socket.create_connection((vip, port), timeout=timeout)
    try:
        local = s.getsockname()
        s.sendall(f"GET /?flow={i} HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
        ok = body.startswith("backend=") and body.endswith(f"client={local[0]}:{local[1]}")
        return ("ok" if ok else "bad", 0, body.split()[0] if body else None, local[1])
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vip", required=True)
    ap.add_argument("--udp-port", type=int, default=9000)
    ap.add_argument("--tcp-port", type=int, default=80)
    ap.add_argument("--udp-flows", type=int, default=0)
    ap.add_argument("--tcp-flows", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply")
    ap.add_argument("--udp-attempts", type=int, default=3, help="sends per UDP flow at most")
    a = ap.parse_args()
    lock = threading.Lock()
    summary = {"udp": {}, "tcp": {}, "udp_retries": 0, "udp_flows_retried": 0, "backends": {}, "errors": []}
    # The kernel may hand a later flow a source port an earlier one used:
    # the same 5-tuple is the same flow (and session) to the balancer.
    ports = {"udp": set(), "tcp": set()}

    def record(kind, fut):
        try:
            status, retries, backend, port = fut.result()
        except Exception as e:  # noqa: BLE001
            status, retries, backend, port = "error", 0, None, None
            with lock:
                if len(summary["errors"]) < 5:
                    summary["errors"].append(repr(e))
        with lock:
            summary[kind][status] = summary[kind].get(status, 0) + 1
            if kind == "udp":
                summary["udp_retries"] += retries
                summary["udp_flows_retried"] += 1 if retries else 0
            if backend:
                summary["backends"][backend] = summary["backends"].get(backend, 0) + 1
            if port is not None:
                ports[kind].add(port)

    with ThreadPoolExecutor(max_workers=a.parallel) as ex:
        for i in range(a.udp_flows):
            f = ex.submit(udp_flow, a.vip, a.udp_port, i, a.timeout, a.udp_attempts)
            f.add_done_callback(lambda f: record("udp", f))
        for i in range(a.tcp_flows):
            f = ex.submit(tcp_flow, a.vip, a.tcp_port, i, a.timeout * 3)
            f.add_done_callback(lambda f: record("tcp", f))
    summary["udp_tuples"] = len(ports["udp"])
    summary["tcp_tuples"] = len(ports["tcp"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
