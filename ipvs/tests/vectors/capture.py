#!/usr/bin/env python3
"""Capture the IPVS generic netlink traffic of real ipvsadm runs as byte vectors.

    sudo netns-lab/vm-run --rwdir ipvs/tests/vectors \\
        ipvs/tests/vectors/capture.py ipvs/tests/vectors/new.txt
    ipvs/tests/vectors/capture.py --compare ipvs/tests/vectors/ipvsadm-6.1.txt \\
        ipvs/tests/vectors/new.txt

The first form runs every case below under strace, in a network namespace of its own
(so it never touches the table of the namespace it is started from), inside a kernel that
has IPVS (netns-lab/vm-run boots one), and writes one line per datagram: '>' sent by
ipvsadm, '<' received from the kernel, the bytes in hex. Family resolution (nlctrl) and
its ACKs, and the MSG_PEEK reads libnl makes before each real read, are left out. '#|'
lines are what ipvsadm printed, '# rc=N' its exit status. tests/vectors.rs reads the file.

The second form compares two captures with each netlink header's sequence number and
port id zeroed (libnl takes them from the clock and the pid), and takes the same messages
in another order as the same (dumps list services in the kernel's hash order, which
differs from one network namespace to the next): after a kernel or ipvsadm upgrade it
shows which cases now speak other bytes. Exit 0 same, 1 different.
"""

import datetime
import os
import re
import subprocess
import sys
import tempfile

# (name, ipvsadm arguments), run in this order on one table.
CASES = [
    ("svc_add_v4", "-A -t 192.0.2.1:80 -s wrr"),
    ("svc_add_v6", "-A -u [2001:db8::1]:53 -s rr -p 300 -M 64"),
    ("svc_add_fwmark", "-A -f 7 -s sh -b sh-fallback,sh-port"),
    ("svc_add_sctp", "-A --sctp-service 192.0.2.2:9 -s mh -b mh-port"),
    ("svc_add_ops", "-A -u 192.0.2.4:514 -s rr -o"),
    ("svc_add_fwmark6", "-A -f 8 -6 -s wrr -p"),
    ("svc_add_bad_sched", "-A -t 192.0.2.9:80 -s nosuch"),
    ("svc_add_dup", "-A -t 192.0.2.1:80 -s wrr"),
    ("svc_add_pe", "-A -u 192.0.2.3:5060 -s rr -p 60 -M 255.255.255.0 --pe sip"),
    ("dest_add_dr", "-a -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 1"),
    ("dest_add_masq", "-a -t 192.0.2.1:80 -r 198.51.100.6:8080 -m -w 5 -x 100 -y 10"),
    ("dest_add_gue", "-a -f 7 -r 198.51.100.7 -i --tun-type gue --tun-port 6080 --tun-csum"),
    ("dest_add_gre", "-a -f 8 -6 -r 2001:db8:2::7 -i --tun-type gre --tun-nocsum -w 0"),
    ("dest_add_nosvc", "-a -t 192.0.2.99:80 -r 198.51.100.5:80 -g"),
    ("dest_add_v6", "-a -u [2001:db8::1]:53 -r [2001:db8:1::5]:53 -g -w 2"),
    ("dest_edit", "-e -t 192.0.2.1:80 -r 198.51.100.5:80 -g -w 3"),
    ("svc_edit", "-E -t 192.0.2.1:80 -s rr"),
    ("dump", "-Sn"),
    ("info", "-Ln --stats"),
    ("daemon_start", "--start-daemon master --mcast-interface lo --syncid 5"),
    ("daemon_list", "-L --daemon"),
    ("daemon_stop", "--stop-daemon master"),
    ("dest_del", "-d -t 192.0.2.1:80 -r 198.51.100.6:8080"),
    ("svc_del", "-D -t 192.0.2.1:80"),
    ("flush", "-C"),
]

STRACE = ["strace", "-f", "-e", "trace=sendmsg,recvmsg,sendto,recvfrom",
          "-e", "write=all", "-e", "read=all", "-xx", "-s", "65535"]

NLCTRL = 0x10
NLMSG_ERROR = 0x02
# With -o and -f, strace starts each line with the pid ("123 sendmsg(...").
SYSCALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(sendmsg|recvmsg|sendto|recvfrom)\(")
# " | 00010  xx xx xx xx xx xx xx xx  xx xx xx xx xx xx xx xx  ascii |": the hex sits in
# the fixed columns 10..59.
HEXLINE = re.compile(r"^ \| [0-9a-f]{5}  ")


def datagrams(trace):
    """(direction, bytes) for each sent or received datagram in strace's output."""
    out = []
    current = None
    for line in trace.splitlines():
        m = SYSCALL.match(line)
        if m:
            if current and current[1]:
                out.append((current[0], bytes(current[1])))
            # The flags argument; the kernel never reports MSG_PEEK back in msg_flags.
            peek = m.group(1).startswith("recv") and "MSG_PEEK" in line
            current = None if peek else (">" if m.group(1).startswith("send") else "<", bytearray())
            continue
        if current is not None and HEXLINE.match(line):
            current[1].extend(bytes.fromhex("".join(line[10:59].split())))
    if current and current[1]:
        out.append((current[0], bytes(current[1])))
    return out


def nl_type(data, at=0):
    return int.from_bytes(data[at + 4:at + 6], "little") if len(data) >= at + 6 else None


def is_nlctrl(data):
    """A datagram of family resolution: an nlctrl request or reply, or the ACK of one."""
    t = nl_type(data)
    if t == NLCTRL:
        return True
    # NLMSG_ERROR: 16-byte header, 4-byte errno, then the request's header.
    return t == NLMSG_ERROR and nl_type(data, 20) == NLCTRL


def run_case(args):
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as trace:
        cmd = STRACE + ["-o", trace.name, "ipvsadm"] + args.split()
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        kept = [(d, b) for d, b in datagrams(trace.read()) if not is_nlctrl(b)]
    printed = (p.stdout + p.stderr).splitlines()
    return kept, printed, p.returncode


def capture(path):
    if os.geteuid() != 0:
        sys.exit("capture.py: run as root, in a kernel with IPVS (netns-lab/vm-run)")
    if os.environ.get("CAPTURE_IN_NETNS") != "1":
        # Own network namespace: the table of the caller's namespace is never touched.
        env = dict(os.environ, CAPTURE_IN_NETNS="1")
        os.execvpe("unshare", ["unshare", "--net", sys.executable, __file__, path], env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ipvsadm", "-C"], check=True, capture_output=True)
    version = subprocess.run(["ipvsadm", "--version"], capture_output=True, text=True).stdout.strip()
    body = []
    family = None
    for name, args in CASES:
        kept, printed, rc = run_case(args)
        body.append("")
        body.append(f"# case {name}: ipvsadm {args}")
        for d, b in kept:
            if family is None and d == ">":
                family = nl_type(b)
            body.append(f"{d} {b.hex()}")
        body.extend(f"#| {line}" if line else "#|" for line in printed)
        body.append(f"# rc={rc}")
    head = [
        "# IPVS generic netlink traffic of",
        f"#   {version}",
        f"# against Linux {os.uname().release}, captured on {datetime.date.today()} by",
        "# ipvs/tests/vectors/capture.py (see its docstring), with",
        f"#   {' '.join(STRACE)} ipvsadm ARGS",
        "# one line per datagram ('>' sent by ipvsadm, '<' received from the kernel). The IPVS",
        f"# family id was {family:#x} ({family}). Family resolution (nlctrl, type 0x10) and its ACKs,",
        "# and MSG_PEEK duplicates, are left out. '#|' lines are what ipvsadm printed. Commands",
        "# ran in this order on one table, see '# case' lines.",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(head + body) + "\n")
    print(f"capture.py: {len(CASES)} cases written to {path}")


def messages(data):
    """The netlink messages of a datagram, each with its sequence number and port id
    zeroed (also in the request header an NLMSG_ERROR carries)."""
    out = []
    at = 0
    while at + 16 <= len(data):
        length = int.from_bytes(data[at:at + 4], "little")
        if length < 16:
            break
        m = bytearray(data[at:at + length])
        m[8:16] = bytes(8)
        if nl_type(m) == NLMSG_ERROR and len(m) >= 36:
            m[28:36] = bytes(8)
        out.append(bytes(m))
        at += (length + 3) & ~3
    return out


def read_cases(path):
    cases, name = {}, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# case "):
                name = line[len("# case "):].split(":")[0]
                cases[name] = []
            elif name and line[:2] in ("> ", "< "):
                cases[name].append((line[0], tuple(messages(bytes.fromhex(line[2:])))))
            elif name and (line.startswith("#|") or line.startswith("# rc=")):
                cases[name].append(("#", line))
    return cases


def in_any_order(lines):
    """A case's lines as a sorted list of single netlink messages and printed lines."""
    out = []
    for d, v in lines:
        out.extend((d, m) for m in (v if isinstance(v, tuple) else [v]))
    return sorted(out, key=repr)


def show(line):
    """A line as read: a datagram's messages (normalized) in hex, or the printed text."""
    d, v = line
    return f"{d} {b''.join(v).hex() if isinstance(v, tuple) else v}"


def compare(old_path, new_path):
    old, new = read_cases(old_path), read_cases(new_path)
    differ = reordered = 0
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            print(f"{name}: only in {old_path if name in old else new_path}")
            differ += 1
        elif old[name] == new[name]:
            continue
        elif in_any_order(old[name]) == in_any_order(new[name]):
            # Dumps list services in the kernel's hash order, which depends on the
            # network namespace: the same messages in another order are the same answer.
            print(f"{name}: the same messages in another order")
            reordered += 1
        else:
            print(f"{name}: differs")
            pairs = list(zip(old[name], new[name]))
            first = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
            if first < len(pairs):
                print(f"  line {first}:\n    - {show(pairs[first][0])}\n    + {show(pairs[first][1])}")
            else:
                print(f"  {len(old[name])} lines against {len(new[name])}")
            differ += 1
    total = len(set(old) | set(new))
    print(f"{total - differ} of {total} cases the same (sequence numbers and port ids aside), "
          f"{reordered} of them in another order")
    return 1 if differ else 0


def main():
    argv = sys.argv[1:]
    if len(argv) == 3 and argv[0] == "--compare":
        sys.exit(compare(argv[1], argv[2]))
    if len(argv) == 1 and not argv[0].startswith("-"):
        capture(argv[0])
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
