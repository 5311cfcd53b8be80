#!/usr/bin/python3
"""Golden pcap scenarios for lbd.

    golden.py gen SCENARIO DIR PREFIX   write DIR/config.yaml, DIR/in*.pcap,
                                        DIR/expected.json, DIR/meta.json
    golden.py check SCENARIO DIR        compare DIR/out*.pcap and
                                        DIR/stats.json with the expectation

The Rust harness (tests/golden.rs) runs lbd between the two steps. Every
expected output packet is built here, independently of lbd, with scapy:
the backend of each flow comes from lbmodel (a separate implementation of
lbd's Maglev hashing), rewritten fields are set explicitly and checksums
recomputed from scratch, so comparing raw bytes checks every MAC, address,
port, TTL and checksum. Drop counters are compared with the exact number
each scenario provokes.
"""

import json
import os
import random
import sys

from scapy.all import (  # noqa: E402
    ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, IPOption_NOP, IPv6, Padding, Raw, raw, rdpcap, wrpcap,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbmodel import RSS_KEY, Listener, owner_shard  # noqa: E402

LB_MAC = "02:00:00:00:00:01"
LB_IP = "10.0.0.1"
GW_IP, GW_MAC = "10.0.0.254", "02:00:00:00:00:fe"
VIP = "10.0.0.100"
BACKENDS = {"10.0.0.11": "02:00:00:00:00:11", "10.0.0.12": "02:00:00:00:00:12", "10.0.0.13": "02:00:00:00:00:13"}
ONLINK_CLIENT, ONLINK_MAC = "10.0.0.50", "02:00:00:00:00:50"
BCAST = "ff:ff:ff:ff:ff:ff"

WEB = Listener(VIP, 6, 80, [(b, 8080, 1) for b in BACKENDS])
DNS = Listener(VIP, 17, 53, [("10.0.0.11", 5353, 1), ("10.0.0.12", 5353, 1)])
RR_BACKENDS = [("10.0.0.11", 8081), ("10.0.0.12", 8081)]


def listeners_yaml():
    return """listeners:
  - name: web
    vip: 10.0.0.100
    protocol: tcp
    port: 80
    scheduler: maglev
    backends:
      - {address: 10.0.0.11, port: 8080, weight: 1}
      - {address: 10.0.0.12, port: 8080, weight: 1}
      - {address: 10.0.0.13, port: 8080, weight: 1}
  - name: dns
    vip: 10.0.0.100
    protocol: udp
    port: 53
    backends:
      - {address: 10.0.0.11, port: 5353}
      - {address: 10.0.0.12, port: 5353}
  - name: rr
    vip: 10.0.0.100
    protocol: tcp
    port: 81
    scheduler: round_robin
    backends:
      - {address: 10.0.0.11, port: 8081}
      - {address: 10.0.0.12, port: 8081}
  - name: drained
    vip: 10.0.0.101
    protocol: tcp
    port: 80
    backends:
      - {address: 10.0.0.11, port: 80, weight: 0}
  - name: blackhole
    vip: 10.0.0.102
    protocol: udp
    port: 53
    backends:
      - {address: 10.0.0.99, port: 53}
"""


class Scenario:
    """Inputs per RX queue, the outputs expected, and the counters."""

    def __init__(self, workers=1):
        self.workers = workers
        self.inputs = [[] for _ in range(workers)]
        self.expected = []  # (tx queue or None, bytes)
        self.drops = {}
        self.events = {}
        self.static_neighbors = True
        self.capacity = 1000
        self.arp_extra = ""
        self.ordered = workers == 1
        self.check_owner = workers > 1

    def rx(self, pkt, queue=0):
        self.inputs[queue].append(pkt)

    def out(self, pkt, queue=None):
        self.expected.append((queue, raw(pkt)))

    def drop(self, reason, n=1):
        self.drops[reason] = self.drops.get(reason, 0) + n


def l4(proto, sport, dport, flags="", payload=b"", seq=1000, ack=0):
    if proto == 6:
        t = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535)
    else:
        t = UDP(sport=sport, dport=dport)
    return t / Raw(payload) if payload else t


def request(client, cport, listener_vip, lport, proto, flags="", payload=b"", ttl=64, src_mac=GW_MAC, ident=1):
    return Ether(dst=LB_MAC, src=src_mac) / IP(src=client, dst=listener_vip, ttl=ttl, id=ident) / l4(proto, cport, lport, flags, payload)


def reply(backend, bport, client, cport, proto, flags="", payload=b"", ttl=64, ident=2):
    return Ether(dst=LB_MAC, src=BACKENDS.get(backend, "02:00:00:00:00:99")) / IP(src=backend, dst=client, ttl=ttl, id=ident) / l4(proto, bport, cport, flags, payload)


def rebuild(p, keep_udp_zero=False):
    """Recompute every checksum from scratch."""
    p = p.copy()
    del p[IP].chksum
    if TCP in p:
        del p[TCP].chksum
    if UDP in p and not keep_udp_zero:
        del p[UDP].chksum
    return Ether(raw(p))


def next_hop_mac(ip):
    if ip == ONLINK_CLIENT:
        return ONLINK_MAC
    if ip in BACKENDS:
        return BACKENDS[ip]
    if ip.startswith("10.0.0."):
        raise ValueError(ip)
    return GW_MAC


def fwd_request(pkt, backend, bport, keep_udp_zero=False):
    """What lbd sends for a request: destination rewritten, TTL - 1."""
    p = pkt.copy()
    p[Ether].src, p[Ether].dst = LB_MAC, BACKENDS.get(backend, "02:00:00:00:00:99")
    p[IP].dst = backend
    p[IP].ttl -= 1
    (p[TCP] if TCP in p else p[UDP]).dport = bport
    return rebuild(p, keep_udp_zero)


def fwd_reply(pkt, vip, vport, keep_udp_zero=False):
    p = pkt.copy()
    p[Ether].src, p[Ether].dst = LB_MAC, next_hop_mac(p[IP].dst)
    p[IP].src = vip
    p[IP].ttl -= 1
    (p[TCP] if TCP in p else p[UDP]).sport = vport
    return rebuild(p, keep_udp_zero)


def arp_request(sender_mac, sender_ip, target_ip):
    return Ether(dst=BCAST, src=sender_mac) / ARP(op=1, hwsrc=sender_mac, psrc=sender_ip, hwdst="00:00:00:00:00:00", pdst=target_ip)


def arp_reply_from_lb(req_pkt, for_ip):
    a = req_pkt[ARP]
    return Ether(dst=a.hwsrc, src=LB_MAC) / ARP(op=2, hwsrc=LB_MAC, psrc=for_ip, hwdst=a.hwsrc, pdst=a.psrc)


def lb_arp_request(target_ip):
    """lbd's own resolution request: 60 bytes, zero padded."""
    p = Ether(dst=BCAST, src=LB_MAC) / ARP(op=1, hwsrc=LB_MAC, psrc=LB_IP, hwdst="00:00:00:00:00:00", pdst=target_ip)
    return p / Padding(b"\x00" * (60 - len(p)))


def tcp_flow(s, client, cport, queue=0, close="fin", data=True, out_queue=None):
    """A full connection through WEB; returns the backend Maglev picks."""
    backend, bport, _ = WEB.pick(client, cport)
    steps = [("c", "S", b""), ("b", "SA", b"")]
    if data:
        steps += [("c", "A", b"GET / HTTP/1.0\r\n\r\n"), ("b", "PA", b"HTTP/1.0 200 OK\r\n\r\nhello")]
    if close == "fin":
        steps += [("c", "FA", b""), ("b", "FA", b""), ("c", "A", b"")]
    elif close == "rst":
        steps += [("b", "R", b"")]
    for i, (who, flags, payload) in enumerate(steps):
        if who == "c":
            p = request(client, cport, VIP, 80, 6, flags, payload, ident=100 + i)
            s.rx(p, queue)
            s.out(fwd_request(p, backend, bport), out_queue)
        else:
            p = reply(backend, bport, client, cport, 6, flags, payload, ident=200 + i)
            s.rx(p, queue)
            s.out(fwd_reply(p, VIP, 80), out_queue)
    return backend


def scenario_basic():
    s = Scenario()
    # ARP for the VIP (from an on-link client) and for the port address.
    q = arp_request(ONLINK_MAC, ONLINK_CLIENT, VIP)
    s.rx(q)
    s.out(arp_reply_from_lb(q, VIP))
    q = arp_request(GW_MAC, GW_IP, LB_IP)
    s.rx(q)
    s.out(arp_reply_from_lb(q, LB_IP))
    s.events["arp_replies_sent"] = 2

    # Full TCP connections, FIN and RST endings, and a spread of SYNs.
    tcp_flow(s, "192.168.1.10", 40000)
    tcp_flow(s, "192.168.1.11", 40001, close="rst")
    picked = set()
    for port in range(41000, 41030):
        p = request("192.168.2.20", port, VIP, 80, 6, "S")
        b, bp, _ = WEB.pick("192.168.2.20", port)
        picked.add(b)
        s.rx(p)
        s.out(fwd_request(p, b, bp))
    assert len(picked) == 3, "the SYN spread should reach every backend"

    # A mid-flow ACK without a session (as after an lbd restart): Maglev
    # schedules it to the same backend its SYN would have had.
    p = request("192.168.1.12", 40002, VIP, 80, 6, "A", b"after restart")
    b, bp, _ = WEB.pick("192.168.1.12", 40002)
    s.rx(p)
    s.out(fwd_request(p, b, bp))
    s.events["sessions_rescheduled"] = 1

    # UDP with a checksum, from an on-link client, and with checksum 0.
    b, bp, _ = DNS.pick(ONLINK_CLIENT, 5000)
    p = request(ONLINK_CLIENT, 5000, VIP, 53, 17, payload=b"query-1", src_mac=ONLINK_MAC)
    s.rx(p)
    s.out(fwd_request(p, b, bp))
    r = reply(b, bp, ONLINK_CLIENT, 5000, 17, payload=b"answer-1")
    s.rx(r)
    s.out(fwd_reply(r, VIP, 53))
    b, bp, _ = DNS.pick("192.168.3.30", 5001)
    p = request("192.168.3.30", 5001, VIP, 53, 17, payload=b"query-2")
    p[UDP].chksum = 0
    p = Ether(raw(p))
    s.rx(p)
    s.out(fwd_request(p, b, bp, keep_udp_zero=True))
    r = reply(b, bp, "192.168.3.30", 5001, 17, payload=b"answer-2")
    r[UDP].chksum = 0
    r = Ether(raw(r))
    s.rx(r)
    s.out(fwd_reply(r, VIP, 53, keep_udp_zero=True))

    # TTL 2 still goes through, with TTL 1.
    b, bp, _ = WEB.pick("192.168.1.13", 40003)
    p = request("192.168.1.13", 40003, VIP, 80, 6, "S", ttl=2)
    s.rx(p)
    s.out(fwd_request(p, b, bp))

    # Round robin: one worker, cursor from the first backend.
    for i, port in enumerate((42000, 42001, 42002)):
        p = request("192.168.4.40", port, VIP, 81, 6, "S")
        s.rx(p)
        rb, rbp = RR_BACKENDS[i % 2]
        s.out(fwd_request(p, rb, rbp))

    # Ping the VIP: answered to the sender.
    p = Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.5.50", dst=VIP, ttl=60, id=7) / ICMP(type=8, id=1, seq=1) / Raw(b"ping-payload")
    s.rx(p)
    e = Ether(dst=GW_MAC, src=LB_MAC) / IP(src=VIP, dst="192.168.5.50", ttl=64, id=7) / ICMP(type=0, id=1, seq=1) / Raw(b"ping-payload")
    s.out(rebuild_icmp(e))
    s.events["icmp_echo_replies"] = 1

    # No listener on that port, a drained listener, a reply nobody asked for.
    s.rx(request("192.168.1.10", 40000, VIP, 22, 6, "S"))
    s.drop("no_listener")
    s.rx(request("192.168.1.10", 40000, "10.0.0.101", 80, 6, "S"))
    s.drop("no_backend")
    s.rx(reply("10.0.0.11", 8080, "192.168.9.9", 1234, 6, "A"))
    s.drop("no_session")
    # Round robin cannot reschedule a mid-flow segment.
    s.rx(request("192.168.1.10", 40005, VIP, 81, 6, "A"))
    s.drop("tcp_no_session")
    return s


def rebuild_icmp(p):
    p = p.copy()
    del p[IP].chksum
    del p[ICMP].chksum
    return Ether(raw(p))


def corrupt(pkt, offset, value):
    b = bytearray(raw(pkt))
    b[offset] = value
    return Ether(bytes(b))


def fix_ip_checksum(b):
    b = bytearray(b)
    b[24:26] = b"\x00\x00"
    s = 0
    for i in range(14, 34, 2):
        s += (b[i] << 8) | b[i + 1]
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    c = ~s & 0xFFFF
    b[24:26] = bytes([c >> 8, c & 0xFF])
    return bytes(b)


def scenario_malformed():
    s = Scenario()
    base = request("192.168.1.10", 40000, VIP, 80, 6, "S")
    b0 = raw(base)

    def bad(frame, reason):
        s.rx(Ether(frame) if isinstance(frame, bytes) and len(frame) >= 14 else Raw(frame))
        s.drop(reason)

    bad(b0[:10], "truncated")
    bad(b0[:14 + 12], "truncated")
    bad(b"\x02\x99\x99\x99\x99\x99" + b0[6:], "wrong_dst_mac")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / Dot1Q(vlan=5) / IP(src="192.168.1.10", dst=VIP) / TCP(dport=80, flags="S")), "vlan_tagged")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IPv6(dst="fe80::1") / TCP(dport=80)), "unsupported_ethertype")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC, type=0x88CC) / Raw(b"\x00" * 40)), "unsupported_ethertype")
    bad(fix_ip_checksum(b0[:14] + bytes([0x55]) + b0[15:]), "ip_bad_header")
    bad(fix_ip_checksum(b0[:14] + bytes([0x44]) + b0[15:]), "ip_bad_header")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP, options=[IPOption_NOP()] * 4) / TCP(dport=80, flags="S")), "ip_options")
    long_len = bytearray(b0)
    long_len[16:18] = (len(b0) - 14 + 10).to_bytes(2, "big")
    bad(fix_ip_checksum(bytes(long_len)), "ip_bad_length")
    short_len = bytearray(b0)
    short_len[16:18] = (19).to_bytes(2, "big")
    bad(fix_ip_checksum(bytes(short_len)), "ip_bad_length")
    bad(b0[:24] + b"\x12\x34" + b0[26:], "ip_bad_checksum")
    # Fragments of TCP and UDP are forwarded (README "Fragments"); of other protocols dropped.
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP, flags="MF", proto=47) / Raw(b"\x00" * 24)), "ip_fragment")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP, frag=100, proto=1) / Raw(b"x" * 24)), "ip_fragment")
    # TTL expiry: dropped, and answered with time exceeded.
    for p in (request("192.168.1.10", 40000, VIP, 80, 6, "S", ttl=1), request("192.168.1.10", 40000, VIP, 80, 6, "S", ttl=0),
              reply("10.0.0.11", 8080, "192.168.1.10", 40000, 6, "A", ttl=1)):
        bad(raw(p), "ttl_exceeded")
        s.out(lb_icmp_error(p, 11, 0))
    s.events["icmp_errors_sent"] = 3
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP, proto=47) / Raw(b"\x00" * 8)), "unsupported_protocol")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP) / ICMP(type=0)), "icmp_unsupported")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst="10.0.0.77") / ICMP(type=8)), "icmp_unsupported")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP) / TCP(dport=80, flags="S", dataofs=3)), "l4_bad_header")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP) / UDP(dport=53, len=4) / Raw(b"abcd")), "l4_bad_header")
    bad(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src="192.168.1.10", dst=VIP) / UDP(dport=53, len=40) / Raw(b"abcd")), "l4_bad_header")
    # IP total length leaves room for only 10 bytes of TCP header.
    cut = bytearray(b0[:14 + 30])
    cut[16:18] = (30).to_bytes(2, "big")
    bad(fix_ip_checksum(bytes(cut)), "truncated")
    bad(raw(Ether(dst=BCAST, src=GW_MAC) / ARP(hwlen=8, op=1, pdst=VIP)), "arp_malformed")
    bad(raw(Ether(dst=BCAST, src=GW_MAC, type=0x0806) / Raw(b"\x00\x01\x08\x00\x06\x04\x00\x01")), "arp_malformed")
    bad(raw(arp_request(GW_MAC, GW_IP, "10.0.0.77")), "arp_not_ours")
    bad(raw(request("192.168.1.10", 40000, VIP, 9999, 17)), "no_listener")
    bad(raw(request("192.168.1.10", 40000, LB_IP, 22, 6, "S")), "no_listener")
    # After all that, a valid SYN still goes through.
    s.rx(base)
    b, bp, _ = WEB.pick("192.168.1.10", 40000)
    s.out(fwd_request(base, b, bp))
    return s


def lb_icmp_error(offending, icmp_type, code, mtu=0):
    """The ICMP error lbd sends about `offending` (as received): from the
    port address, TTL 64, DF, quoting the IPv4 header and 8 bytes."""
    o = offending[IP]
    e = (Ether(dst=next_hop_mac(o.src), src=LB_MAC) / IP(src=LB_IP, dst=o.src, ttl=64, id=0, flags="DF")
         / ICMP(type=icmp_type, code=code, nexthopmtu=mtu) / Raw(raw(o)[:28]))
    return rebuild_icmp(e)


def quoted(src, dst, sport, dport, proto, ttl=63, payload=b""):
    """A datagram as an error quotes it (whole, so every checksum in it is
    recomputable)."""
    return raw(IP(src=src, dst=dst, ttl=ttl, id=9, flags="DF") / l4(proto, sport, dport, "A" if proto == 6 else "", payload))


def icmp_error(src_mac, src, dst, icmp_type, code, quote, mtu=0, ttl=64):
    e = Ether(dst=LB_MAC, src=src_mac) / IP(src=src, dst=dst, ttl=ttl, id=5) / ICMP(type=icmp_type, code=code, nexthopmtu=mtu) / Raw(quote)
    return rebuild_icmp(e)


def scenario_icmp():
    """ICMP errors through the NAT, both ways, and lbd's own at the port
    MTU (1000 here)."""
    s = Scenario()
    s.port_extra = "    mtu: 1000\n"
    router = "192.168.77.1"
    client, cport = "192.168.1.20", 41000
    # A TCP flow; a router on the client side says a reply was too big.
    syn = request(client, cport, VIP, 80, 6, "S")
    s.rx(syn)
    b, bp, _ = WEB.pick(client, cport)
    s.out(fwd_request(syn, b, bp))
    s.rx(icmp_error(GW_MAC, router, VIP, 3, 4, quoted(VIP, client, 80, cport, 6, payload=b"reply"), mtu=900))
    out = icmp_error(LB_MAC, router, b, 3, 4, quoted(b, client, bp, cport, 6, payload=b"reply"), mtu=900, ttl=63)
    out[Ether].src, out[Ether].dst = LB_MAC, BACKENDS[b]
    s.out(out)
    # The same with only 8 bytes of TCP quoted (no checksum to patch).
    s.rx(icmp_error(GW_MAC, router, VIP, 11, 0, quoted(VIP, client, 80, cport, 6)[:28]))
    out = icmp_error(LB_MAC, router, b, 11, 0, quoted(b, client, bp, cport, 6)[:28], ttl=63)
    out[Ether].src, out[Ether].dst = LB_MAC, BACKENDS[b]
    s.out(out)
    # A UDP flow; its backend answers port unreachable: to the client, from the VIP.
    q = request(client, 5000, VIP, 53, 17, payload=b"query")
    s.rx(q)
    db, dbp, _ = DNS.pick(client, 5000)
    s.out(fwd_request(q, db, dbp))
    s.rx(icmp_error(BACKENDS[db], db, client, 3, 3, quoted(client, db, 5000, dbp, 17, payload=b"query")))
    out = icmp_error(LB_MAC, VIP, client, 3, 3, quoted(client, VIP, 5000, 53, 17, payload=b"query"), ttl=63)
    out[Ether].src, out[Ether].dst = LB_MAC, GW_MAC
    s.out(out)
    s.events["icmp_errors_forwarded"] = 3
    # About no session: dropped.
    s.rx(icmp_error(GW_MAC, router, VIP, 3, 4, quoted(VIP, client, 80, cport + 1, 6), mtu=900))
    s.drop("icmp_error_no_session")
    # Over the port's MTU of 1000: with DF, fragmentation needed; without, dropped.
    big = Ether(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src=client, dst=VIP, id=3, flags="DF") / UDP(sport=5000, dport=53) / Raw(b"x" * (1001 - 28))))
    s.rx(big)
    s.drop("frag_needed")
    s.out(lb_icmp_error(big, 3, 4, mtu=1000))
    s.events["icmp_errors_sent"] = 1
    s.rx(Ether(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src=client, dst=VIP, id=4) / UDP(sport=5000, dport=53) / Raw(b"x" * (1001 - 28)))))
    s.drop("too_big")
    # 1000 bytes fit.
    fits = Ether(raw(Ether(dst=LB_MAC, src=GW_MAC) / IP(src=client, dst=VIP, id=5, flags="DF") / UDP(sport=5000, dport=53) / Raw(b"y" * (1000 - 28))))
    s.rx(fits)
    s.out(fwd_request(fits, db, dbp))
    return s


def scenario_garbage():
    """Seeded random frames: nothing may crash, leak or be forwarded."""
    s = Scenario()
    rng = random.Random(20261123)
    n = 500
    for i in range(n):
        length = rng.randint(1, 300)
        body = bytes(rng.getrandbits(8) for _ in range(length))
        if i % 2 == 0 and length >= 14:
            # Our MAC and IPv4 or ARP ethertype: deeper into the parser.
            et = b"\x08\x00" if i % 4 == 0 else b"\x08\x06"
            body = bytes.fromhex(LB_MAC.replace(":", "")) + body[6:12] + et + body[14:]
            if et == b"\x08\x00" and length >= 34:
                body = body[:14] + bytes([0x45]) + body[15:]
        s.rx(Raw(body))
    s.drops = None  # only totals are known
    s.garbage = n
    return s


def scenario_arp():
    s = Scenario()
    s.static_neighbors = False
    s.arp_extra = "arp: {retry_interval: 200ms, max_retries: 2}\n"
    client, cport = "192.168.1.10", 40000
    backend, bport, _ = WEB.pick(client, cport)
    syn = request(client, cport, VIP, 80, 6, "S")
    s.rx(syn)
    s.out(lb_arp_request(backend))
    s.rx(Ether(dst=LB_MAC, src=BACKENDS[backend]) / ARP(op=2, hwsrc=BACKENDS[backend], psrc=backend, hwdst=LB_MAC, pdst=LB_IP))
    s.out(fwd_request(syn, backend, bport))
    synack = reply(backend, bport, client, cport, 6, "SA")
    s.rx(synack)
    s.out(lb_arp_request(GW_IP))
    s.rx(Ether(dst=LB_MAC, src=GW_MAC) / ARP(op=2, hwsrc=GW_MAC, psrc=GW_IP, hwdst=LB_MAC, pdst=LB_IP))
    s.out(fwd_reply(synack, VIP, 80))
    # Both are cached now: the next segments go straight out.
    ack = request(client, cport, VIP, 80, 6, "A", b"data")
    s.rx(ack)
    s.out(fwd_request(ack, backend, bport))
    # A reply between two other hosts teaches nothing.
    s.rx(Ether(dst=BCAST, src="02:00:00:00:00:77") / ARP(op=2, hwsrc="02:00:00:00:00:77", psrc="10.0.0.77", hwdst="02:00:00:00:00:78", pdst="10.0.0.78"))
    s.events["arp_ignored"] = 1
    s.events["arp_learned"] = 2
    # A next hop that never answers: two requests, then the packet is
    # dropped as unresolved.
    q = request(client, 40001, "10.0.0.102", 53, 17, payload=b"lost")
    s.rx(q)
    s.out(lb_arp_request("10.0.0.99"))
    s.out(lb_arp_request("10.0.0.99"))
    s.drop("neighbor_unresolved")
    s.events["arp_requests_sent"] = 4
    s.wait_parked = True
    return s


def scenario_limits():
    s = Scenario()
    s.capacity = 3
    flows = [("192.168.1.10", 40000 + i) for i in range(3)]
    for c, p in flows:
        b, bp, _ = WEB.pick(c, p)
        syn = request(c, p, VIP, 80, 6, "S")
        s.rx(syn)
        s.out(fwd_request(syn, b, bp))
        # Established: a SYN evicts only half-open sessions.
        ack = request(c, p, VIP, 80, 6, "A")
        s.rx(ack)
        s.out(fwd_request(ack, b, bp))
    s.rx(request("192.168.1.10", 45000, VIP, 80, 6, "S"))
    s.drop("session_table_full")
    s.rx(request("192.168.1.10", 45001, VIP, 53, 17, payload=b"q"))
    s.drop("session_table_full")
    # Existing sessions are untouched by the refusals.
    for c, p in flows:
        b, bp, _ = WEB.pick(c, p)
        a = request(c, p, VIP, 80, 6, "A", b"still here")
        s.rx(a)
        s.out(fwd_request(a, b, bp))
        r = reply(b, bp, c, p, 6, "A", b"ok")
        s.rx(r)
        s.out(fwd_reply(r, VIP, 80))
    return s


def scenario_multi_worker():
    """3 workers on 2 CPUs, thousands of flows in both directions, every
    flow's packets entering through one of three RX queues."""
    s = Scenario(workers=3)
    s.capacity = 100000
    flows = 0
    for i in range(2000):
        client = f"192.168.{10 + i // 250}.{1 + i % 250}"
        cport = 20000 + (i * 7) % 40000
        owner = owner_shard(client, cport, 6, 3)
        tcp_flow(s, client, cport, queue=i % 3, close="fin" if i % 2 else "rst", data=True, out_queue=owner)
        flows += 1
    for i in range(500):
        client = f"172.16.{i // 250}.{1 + i % 250}"
        cport = 30000 + i
        owner = owner_shard(client, cport, 17, 3)
        b, bp, _ = DNS.pick(client, cport)
        q = request(client, cport, VIP, 53, 17, payload=b"q%d" % i)
        s.rx(q, i % 3)
        s.out(fwd_request(q, b, bp), owner)
        r = reply(b, bp, client, cport, 17, payload=b"a%d" % i)
        # Same queue as the request: RX order is kept through the hand-off
        # ring (FIFO), so the session exists when the reply is processed.
        s.rx(r, i % 3)
        s.out(fwd_reply(r, VIP, 53), owner)
        flows += 1
    s.flows = flows
    return s


SCENARIOS = {
    "basic": scenario_basic,
    "malformed": scenario_malformed,
    "garbage": scenario_garbage,
    "arp": scenario_arp,
    "limits": scenario_limits,
    "multi_worker": scenario_multi_worker,
    "icmp": scenario_icmp,
}


def config_yaml(s, d, prefix):
    rx = ",".join(f"rx_pcap={d}/in{q}.pcap" for q in range(s.workers))
    tx = ",".join(f"tx_pcap={d}/out{q}.pcap" for q in range(s.workers))
    neighbors = ""
    if s.static_neighbors:
        items = [f"{{ip: {ip}, mac: \"{mac}\"}}" for ip, mac in list(BACKENDS.items()) + [(GW_IP, GW_MAC), (ONLINK_CLIENT, ONLINK_MAC)]]
        neighbors = "    neighbors: [" + ", ".join(items) + "]\n"
    # More workers than CPUs on purpose: 3 workers pinned to CPUs 0 and 1.
    lcores = f"lcores: {{workers: {s.workers}, cpus: [0, 1]}}\n" if s.workers > 1 else "lcores: {workers: 1}\n"
    return (
        f'eal: ["--no-pci", "--no-huge", "-m", "768", "--file-prefix", "{prefix}", "--no-telemetry",\n'
        f'      "--vdev", "net_pcap0,{rx},{tx}"]\n'
        + lcores
        + "ports:\n"
        "  - name: lan\n"
        "    device: net_pcap0\n"
        "    address: 10.0.0.1/24\n"
        "    exception: off\n"
        "    gateway: 10.0.0.254\n"
        f'    mac: "{LB_MAC}"\n'
        + getattr(s, "port_extra", "")
        + neighbors
        + listeners_yaml()
        # The fixed RSS key lbmodel.py computes owners with (lbd draws a
        # random one by default).
        + f"sessions: {{capacity_per_worker: {s.capacity}, hash_key: {RSS_KEY.hex()}}}\n"
        + s.arp_extra
        + f"control: {{socket: {d}/lbd.sock}}\n"
        + 'metrics: {listen: "off"}\n'
    )


def gen(name, d, prefix):
    s = SCENARIOS[name]()
    for q, pkts in enumerate(s.inputs):
        wrpcap(f"{d}/in{q}.pcap", pkts)
    with open(f"{d}/config.yaml", "w") as f:
        f.write(config_yaml(s, d, prefix))
    with open(f"{d}/expected.json", "w") as f:
        json.dump(
            {
                "workers": s.workers,
                "ordered": s.ordered,
                "out": [[q, b.hex()] for q, b in s.expected],
                "drops": s.drops,
                "events": s.events,
                "garbage": getattr(s, "garbage", 0),
                "flows": getattr(s, "flows", None),
            },
            f,
        )
    with open(f"{d}/meta.json", "w") as f:
        json.dump({"rx_packets": sum(len(p) for p in s.inputs), "wait_parked": getattr(s, "wait_parked", False)}, f)


def describe(b):
    try:
        return Ether(b).summary()
    except Exception:  # noqa: BLE001
        return b.hex()


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def check(name, d):
    exp = json.load(open(f"{d}/expected.json"))
    stats = json.load(open(f"{d}/stats.json"))
    errors = []
    outs = []
    for q in range(exp["workers"]):
        path = f"{d}/out{q}.pcap"
        pkts = rdpcap(path) if os.path.getsize(path) > 24 else []
        outs += [(q, bytes(p)) for p in pkts]
    drops = stats["drops"]
    total_rx = sum(p["rx_packets"] for p in stats["ports"])
    meta = json.load(open(f"{d}/meta.json"))
    if total_rx != meta["rx_packets"]:
        errors.append(f"lbd received {total_rx} packets, the input has {meta['rx_packets']}")

    if exp["ordered"]:
        want = [bytes.fromhex(h) for _, h in exp["out"]]
        got = [b for _, b in outs]
        for i in range(max(len(want), len(got))):
            w = want[i] if i < len(want) else None
            g = got[i] if i < len(got) else None
            if w != g:
                errors.append(f"output packet {i} differs:\n  want {describe(w) if w else '(nothing)'}\n  got  {describe(g) if g else '(nothing)'}")
                if w and g:
                    at = first_difference(w, g)
                    errors.append(f"  first differing byte {at}: want {w[at:at+8].hex()} got {g[at:at+8].hex()}")
                break
        if len(want) != len(got):
            errors.append(f"{len(got)} packets out, {len(want)} expected")
    else:
        want = {}
        for q, h in exp["out"]:
            want.setdefault(bytes.fromhex(h), []).append(q)
        for q, b in outs:
            qs = want.get(b)
            if not qs:
                errors.append(f"unexpected output on tx queue {q}: {describe(b)}")
                continue
            if q not in qs:
                errors.append(f"{describe(b)} went out on queue {q}, its flow's owner uses {qs[0]}")
                continue
            qs.remove(q)
        missing = [(b, qs) for b, qs in want.items() if qs]
        for b, qs in missing[:5]:
            errors.append(f"missing output: {describe(b)} (x{len(qs)})")
        if missing:
            errors.append(f"{sum(len(q) for _, q in missing)} expected packets missing")
        ev = stats["events"]
        if exp["flows"] is not None and ev["sessions_created"] != exp["flows"]:
            errors.append(f"sessions_created {ev['sessions_created']} != {exp['flows']} flows: a flow got sessions on two shards")
        if ev["handoff_in"] != ev["handoff_out"] or ev["handoff_out"] == 0:
            errors.append(f"hand-offs out {ev['handoff_out']} / in {ev['handoff_in']}")
        per_worker = [w["events"]["sessions_created"] for w in stats["workers"]]
        if min(per_worker) == 0:
            errors.append(f"sessions per worker {per_worker}: a shard got nothing")
        print(f"multi_worker: sessions per worker {per_worker}, hand-offs {ev['handoff_out']}")

    if exp["drops"] is not None:
        for reason, n in sorted(drops.items()):
            want_n = exp["drops"].get(reason, 0)
            if n != want_n:
                errors.append(f"drop counter {reason} = {n}, expected {want_n}")
        unknown = set(exp["drops"]) - set(drops)
        if unknown:
            errors.append(f"expected drop reasons lbd does not have: {unknown}")
    else:
        if stats["drops_total"] != exp["garbage"]:
            errors.append(f"{stats['drops_total']} drops for {exp['garbage']} garbage frames")
        if outs:
            errors.append(f"garbage produced {len(outs)} packets, e.g. {describe(outs[0][1])}")
        nonzero = {k: v for k, v in drops.items() if v}
        print(f"garbage: drops by reason {nonzero}")
    for ev, n in exp["events"].items():
        if stats["events"].get(ev) != n:
            errors.append(f"event {ev} = {stats['events'].get(ev)}, expected {n}")
    if stats["mempool_in_use"] != 0:
        errors.append(f"{stats['mempool_in_use']} mbufs still in use at exit (leak)")
    if errors:
        print(f"golden scenario {name}: FAILED", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 1
    print(f"golden scenario {name}: {len(outs)} packets out, all fields as expected; drops {stats['drops_total']}")
    return 0


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    if len(sys.argv) >= 4 and sys.argv[1] == "check":
        return check(sys.argv[2], sys.argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
