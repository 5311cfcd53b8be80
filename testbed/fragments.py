#!/usr/bin/python3
"""Fragmented traffic through the VIP, run in the testbed's client namespace.

    fragments.py udp VIP PORT SIZE...
        sends one UDP datagram of each SIZE (the kernel fragments those over
        the MTU) to the backends' echo service and checks each reply (also
        fragmented) ends with exactly the bytes sent
    fragments.py tcp VIP PORT
        opens a TCP connection with scapy, sends an HTTP request of about
        3 KiB as ONE segment split into IPv4 fragments (the last fragment
        first), and waits for the backend's answer, which it can only give
        after reassembling a segment whose checksum verifies
    fragments.py hostile VIP PORT
        sends, to a UDP listener: a first fragment and one overlapping it;
        a datagram in six fragments; and one lone middle fragment (lbd's
        counters tell what became of them)

Prints one JSON object; exits 0 when everything came back intact.
"""

import json
import os
import random
import socket
import sys
import threading
import time


def udp(vip, port, sizes):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(3)
    results = []
    for n in sizes:
        data = os.urandom(n)
        ok, attempts, head = False, 0, ""
        while not ok and attempts < 6:
            attempts += 1
            s.sendto(data, (vip, port))
            try:
                while True:
                    reply, _ = s.recvfrom(70000)
                    head = reply[: reply.find(b"data=")].decode(errors="replace")
                    if reply.endswith(b"data=" + data):
                        ok = True
                        break
            except socket.timeout:
                pass
        results.append({"size": n, "ok": ok, "attempts": attempts, "reply": head})
    print(json.dumps({"udp": results}))
    return all(r["ok"] for r in results)


def tcp(vip, port):
    from scapy.all import IP, TCP, AsyncSniffer, Raw, conf, fragment, send, sr1

    conf.verb = 0
    sport = random.randint(20000, 60000)
    # The kernel knows nothing of this connection: keep it from resetting
    # it (the namespace and the rule go with the testbed).
    os.system("nft add table ip fragtest && "
              "nft add chain ip fragtest out '{ type filter hook output priority 0 ; }' && "
              f"nft add rule ip fragtest out tcp sport {sport} tcp flags rst drop")
    synack = sr1(IP(dst=vip) / TCP(sport=sport, dport=port, flags="S", seq=1000), timeout=5, retry=4)
    if synack is None or synack[TCP].flags != "SA":
        print(json.dumps({"tcp": {"ok": False, "error": "no SYN-ACK"}}))
        return False
    ack = synack[TCP].seq + 1
    send(IP(dst=vip) / TCP(sport=sport, dport=port, flags="A", seq=1001, ack=ack))
    request = b"GET / HTTP/1.0\r\nX-Pad: " + b"f" * 3000 + b"\r\n\r\n"
    seg = IP(dst=vip, id=random.randint(1, 65535)) / TCP(sport=sport, dport=port, flags="PA", seq=1001, ack=ack) / Raw(request)
    frags = fragment(seg, fragsize=512)
    answer = []

    def from_vip(p):
        return IP in p and TCP in p and p[IP].src == vip and p[TCP].sport == port and p[TCP].dport == sport

    listening = threading.Event()
    sniffer = AsyncSniffer(iface="eth0", lfilter=from_vip, prn=lambda p: answer.append(bytes(p[TCP].payload)),
                           store=False, started_callback=listening.set)
    sniffer.start()
    listening.wait(10)
    for f in reversed(frags):
        send(f)
    # The backend resends its answer until acknowledged (never, here).
    deadline = time.time() + 20
    while time.time() < deadline and not any(b"backend=" in a for a in answer):
        time.sleep(0.1)
    sniffer.stop()
    body = b"".join(answer)
    ok = b"backend=" in body and f"client=10.0.0.2:{sport}".encode() in body
    print(json.dumps({"tcp": {"ok": ok, "fragments": len(frags), "sport": sport,
                              "answer": body[-80:].decode(errors="replace")}}))
    return ok


def hostile(vip, port):
    from scapy.all import IP, UDP, Raw, conf, send

    conf.verb = 0
    first = UDP(sport=5555, dport=port, len=200, chksum=0) / Raw(b"a" * 16)
    # Each datagram's fragments in one send() (one socket), well inside
    # lbd's fragment timeout: only the lone fragment below may expire.
    # Overlap: bytes 16..32 again over a first fragment of 24.
    send([IP(dst=vip, id=1001, flags="MF", proto=17) / first,
          IP(dst=vip, id=1001, flags="MF", frag=2, proto=17) / Raw(b"b" * 16)])
    # Six fragments of 24 and 8 bytes, all with more to follow.
    send([IP(dst=vip, id=1002, flags="MF", proto=17) / first]
         + [IP(dst=vip, id=1002, flags="MF", frag=3 + n, proto=17) / Raw(b"c" * 8) for n in range(5)])
    # A middle fragment whose datagram never comes.
    send(IP(dst=vip, id=1003, flags="MF", frag=10, proto=17) / Raw(b"d" * 8))
    print(json.dumps({"hostile": {"ok": True}}))
    return True


def main():
    mode, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "udp":
        ok = udp(vip, port, [int(n) for n in sys.argv[4:]])
    elif mode == "tcp":
        ok = tcp(vip, port)
    else:
        ok = hostile(vip, port)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
