#!/usr/bin/python3
"""SYN-flood benchmark helpers (issue 11, SYN-flood defence).

    synflood.py pcap OUT DST_MAC SRC_MAC VIP PORT N
        Writes N Ethernet/IPv4/TCP SYN frames to VIP:PORT from spoofed
        sources in 198.18.0.0/15 (random ports and ISNs, correct
        checksums) as a pcap file, for dpdk-testpmd's net_pcap with
        infinite_rx=1 to replay at the highest rate it can. This script
        starts no DPDK process; whoever starts testpmd with the pcap passes
        `--no-pci` (tests/netns.rs does), so the machine's NIC is never probed.
    synflood.py probe VIP PORT N [TIMEOUT [MAX_FAILED]]
        N real connections one after another (connect, GET /, read the
        answer; TIMEOUT seconds for each step, 3 by default, so one
        retransmitted SYN still counts as a success; 15 lets the kernel
        retry three times, as a real client waits), stopping early once
        MAX_FAILED have failed (default: never); prints one JSON line:
        ok, failed, stopped_early, and connection latency percentiles in
        ms (connect() alone, and the whole request).
"""

import json
import random
import socket
import struct
import sys
import time


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_frame(dst_mac, src_mac, src, dst, sport, dport, isn):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, isn, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    frame = dst_mac + src_mac + b"\x08\x00" + ip + tcp
    return frame + b"\0" * (60 - len(frame))


def write_pcap(out, dst_mac, src_mac, vip, port, n):
    mac = lambda s: bytes(int(x, 16) for x in s.split(":"))  # noqa: E731
    dst_mac, src_mac = mac(dst_mac), mac(src_mac)
    dst = socket.inet_aton(vip)
    rnd = random.Random(11)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for _ in range(n):
            src = struct.pack("!I", (198 << 24 | 18 << 16) + rnd.randrange(1 << 17))
            fr = syn_frame(dst_mac, src_mac, src, dst, rnd.randrange(1024, 65536), port, rnd.randrange(1 << 32))
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)))
            f.write(fr)


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 2)


def probe(vip, port, n, timeout, max_failed):
    ok, failed, connect_t, total_t = 0, 0, [], []
    for _ in range(n):
        if max_failed is not None and failed >= max_failed:
            break
        t0 = time.monotonic()
        try:
            s = socket.create_connection((vip, port), timeout=timeout)
            t1 = time.monotonic()
            s.settimeout(timeout)
            s.sendall(b"GET / HTTP/1.1\r\nHost: lbd-test\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            if b"backend=" not in data:
                raise RuntimeError("no answer")
            ok += 1
            connect_t.append(t1 - t0)
            total_t.append(time.monotonic() - t0)
        except Exception:  # noqa: BLE001 (any failure is a failed connection)
            failed += 1
    print(json.dumps({
        "ok": ok,
        "failed": failed,
        "stopped_early": ok + failed < n,
        "connect_ms": {"p50": pct(connect_t, 50), "p90": pct(connect_t, 90), "p99": pct(connect_t, 99), "max": pct(connect_t, 100)},
        "request_ms": {"p50": pct(total_t, 50), "p90": pct(total_t, 90), "p99": pct(total_t, 99), "max": pct(total_t, 100)},
    }))


if __name__ == "__main__":
    if sys.argv[1] == "pcap":
        write_pcap(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7]))
    elif sys.argv[1] == "probe":
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 3.0,
              int(sys.argv[6]) if len(sys.argv) > 6 else None)
    else:
        sys.exit(__doc__)
