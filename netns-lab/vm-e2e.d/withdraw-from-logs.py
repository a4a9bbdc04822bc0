#!/usr/bin/env python3
"""netns-lab/vm-e2e.d/withdraw-from-logs.py LOGS — the figures of vm-bench-withdraw from the
daemons' logs alone, without the quorum handler: per fin, from the arbiter's "desc changed
vip=X announce=false" line to lb1's first "withdraw on the wire vip=X" line after it (one
guest clock). The rounds are taken in order, FINS (20, or $BENCH_FINS) fins each. LOGS is the
logs/ directory a run with VM_E2E_KEEP=1 kept. Prints p50/p99/max per round."""
import datetime
import os
import re
import sys

FINS = int(os.environ.get("BENCH_FINS", "20"))


def lines(path):
    with open(path, errors="replace") as f:
        return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in f]


def stamp(line):
    return datetime.datetime.fromisoformat(line.split()[0].rstrip("Z")).timestamp()


def events(path, pred):
    return [(stamp(l), re.search(r"vip=(\S+)", l).group(1)) for l in lines(path) if pred(l)]


def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return "?"
    rank = max(1, -(-p * len(xs) // 100))
    return f"{xs[rank - 1]:.0f}"


def main(logs):
    downs = events(f"{logs}/arbiter.log", lambda l: "desc changed" in l and "announce=false" in l)
    wires = events(f"{logs}/lb1.log", lambda l: "withdraw on the wire vip=" in l)
    lat = []
    for t0, vip in downs:
        t = next((t for t, v in wires if v == vip and t >= t0), None)
        lat.append(None if t is None else (t - t0) * 1000)
    print("arbiter's desc change → withdraw on the wire (lb1), ms:")
    for i, name in enumerate(["idle", "loaded", "change"]):
        r = lat[i * FINS:(i + 1) * FINS]
        if not r:
            break
        n = sum(x is not None for x in r)
        print(f"{name:8} n={n:3} p50={pct(r, 50):>7} p99={pct(r, 99):>7} max={pct(r, 100):>7}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "logs")
