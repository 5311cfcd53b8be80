#!/usr/bin/python3
"""A testbed backend: an HTTP server and a UDP echo, both saying who they
are and which client address they saw (in NAT mode: the real client).

    backend.py --name be1 [--http-port 8080] [--udp-port 9000] [--status 200]

HTTP:
    GET /            -> "backend=be1 client=10.0.0.2:41234\n", with --status
                        (200 unless given: a failing health check's target)
    GET /bytes/N     -> N bytes, byte i = i % 251 (checkable by the client)
    POST /check      -> "received=N pattern_ok=True|False\n": whether the
                        body's byte i was i % 251 throughout (uploads)
UDP: each datagram is answered with "backend=be1 client=IP:PORT data=<payload>".
"""

import argparse
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATTERN = bytes(i % 251 for i in range(251 * 1024))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lbd-testbed"

    def log_message(self, fmt, *args):  # keep the testbed quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = self.server.backend_name
        client = f"{self.client_address[0]}:{self.client_address[1]}"
        if self.path.startswith("/bytes/"):
            try:
                n = int(self.path[len("/bytes/"):])
            except ValueError:
                self.send_error(400)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.send_header("X-Backend", name)
            self.end_headers()
            sent = 0
            while sent < n:
                # Keep the pattern aligned: chunks start at multiples of 251.
                chunk = PATTERN[: min(len(PATTERN), n - sent)]
                self.wfile.write(chunk)
                sent += len(chunk)
            return
        body = f"backend={name} client={client}\n".encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", name)
        self.end_headers()
        self.wfile.write(body)


    def do_POST(self):  # noqa: N802 (http.server's naming)
        n = int(self.headers.get("Content-Length", "0"))
        got, ok = 0, True
        while got < n:
            chunk = self.rfile.read(min(1 << 16, n - got))
            if not chunk:
                break
            start = got % 251
            ok = ok and chunk == PATTERN[start : start + len(chunk)]
            got += len(chunk)
        body = f"received={got} pattern_ok={ok and got == n}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def udp_echo(name, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    while True:
        data, addr = s.recvfrom(65535)
        msg = f"backend={name} client={addr[0]}:{addr[1]} data=".encode() + data
        s.sendto(msg, addr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--udp-port", type=int, default=9000)
    ap.add_argument("--status", type=int, default=200)
    a = ap.parse_args()
    threading.Thread(target=udp_echo, args=(a.name, a.udp_port), daemon=True).start()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 512
    srv = ThreadingHTTPServer(("0.0.0.0", a.http_port), Handler)
    srv.backend_name = a.name
    srv.status = a.status
    print(f"{a.name}: http :{a.http_port}, udp :{a.udp_port}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
