#!/usr/bin/env python3
"""Capture raw BGP messages sent by gobgpd (reproduces bgp/testdata/gobgp-*.hex).

Runs inside a network namespace as a minimal BGP peer: accepts gobgpd's connections on :179,
answers with a hand-made OPEN + KEEPALIVE, and records every message gobgpd sends, framed by
the header length, one hex line per message ("<local-addr> <hex>"). Bounded by --seconds.
Run by capture.sh; not part of the test suite.
"""
import argparse, select, socket, struct, time

def open_msg(asn, hold, bgp_id, hold_override=None):
    caps = b""
    for afi in (1, 2):
        caps += bytes([2, 6, 1, 4]) + struct.pack("!HBB", afi, 0, 1)
    caps += bytes([2, 2, 2, 0])                           # route refresh
    caps += bytes([2, 12, 64, 10]) + struct.pack("!HHBBHBB", 120, 1, 1, 0x80, 2, 1, 0x80)  # GR
    caps += bytes([2, 6, 65, 4]) + struct.pack("!I", asn)   # 4-octet AS
    body = struct.pack("!BHH4sB", 4, asn if asn < 65536 else 23456,
                       hold if hold_override is None else hold_override,
                       socket.inet_aton(bgp_id), len(caps)) + caps
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 1) + body

KEEPALIVE = b"\xff" * 16 + struct.pack("!HB", 19, 4)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--peer", action="append", default=[],
                    help="LOCALADDR,ASN,HOLD  (HOLD 1 sends an unacceptable hold time)")
    a = ap.parse_args()
    conf = {}
    socks = []
    for p in a.peer:
        addr, asn, hold = p.split(",")
        conf[addr] = (int(asn), int(hold))
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, 179)); s.listen(4); socks.append(s)
    bufs = {}
    out = open(a.out, "w")
    deadline = time.time() + a.seconds
    while time.time() < deadline:
        r, _, _ = select.select(socks + list(bufs), [], [], 0.2)
        for s in r:
            if s in socks:
                c, _ = s.accept()
                local = c.getsockname()[0]
                asn, hold = conf[local]
                c.sendall(open_msg(asn, 90, "203.0.113.9", hold_override=hold))
                if hold != 1:
                    c.sendall(KEEPALIVE)
                bufs[c] = b""
                continue
            data = s.recv(65536)
            if not data:
                del bufs[s]; s.close(); continue
            bufs[s] += data
            b = bufs[s]
            while len(b) >= 19:
                n = struct.unpack("!H", b[16:18])[0]
                if len(b) < n:
                    break
                msg, b = b[:n], b[n:]
                out.write(f"{s.getsockname()[0]} {msg.hex()}\n"); out.flush()
                if msg[18] == 4:
                    s.sendall(KEEPALIVE)
            bufs[s] = b
    out.close()

main()
