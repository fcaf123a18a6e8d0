#!/usr/bin/python3
"""A real FTP transfer through the ALG's Jool mapping, with a third IPv4 host
trying to use that mapping before, during and after it.

    thirdparty.py transfer KIND SERVER --third-ns NS --pool4 A [--range LO-HI]
                  [--user U --password P] --file NAME --sha256 HEX
                  [--c6 ADDR --server6 ADDR] [--announced jool|eprt] [--timeout S]
    thirdparty.py probe HOST TIMEOUT PORT...

transfer KIND 46 (run in the IPv4 client's namespace): logs in to SERVER (the
pool4 address of the IPv6 server), sends PASV, and connects to the 227
reply's address and port, which must be on the pool4 address A. KIND 64 (run
in the IPv6 client's namespace): listens on its IPv6 address ADDR, sends
EPRT |2|ADDR|port| (the ALG maps it to a PORT with a Jool static BIB entry on
the pool4 address) and reads the mapped port from Jool's BIB (namespace nat,
instance lab); with --announced eprt (Tayga, which keeps ports) the mapped
port is the client's own, on address A. Either way the data port announced on the IPv4 side is then
tried from namespace NS (the third party) "before" the data connection,
"during" the transfer (the client holds the connection open after the first
64 KiB with a small receive buffer; with it, every port of the ALG's range
LO-HI at once, when given) and "after" it (226 received, connection closed). The file must
arrive with the given SHA-256, and in 64 the accepted data connection must
come from the IPv4 server.

Prints "probe PHASE PORTS: tried N, through M" lines and one result line
"result KIND pass|fail announced=P probes=N through=M detail=..."; exits 0
when the transfer was verified and nothing got through.

probe: connects to each PORT of HOST at once (non-blocking) and waits up to
TIMEOUT seconds; prints "through PORT" for each connection that was
established and "tried N through M".
"""

import argparse
import ftplib
import hashlib
import re
import select
import socket
import subprocess
import sys
import time

CHUNK = 64 * 1024
RCVBUF = 16 * 1024


def one_line(s):
    return " ".join(str(s).split())


def probe_main(host, timeout, ports):
    through = []
    for i in range(0, len(ports), 400):  # keep below the open-files limit
        batch = ports[i:i + 400]
        pending = {}
        for p in batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((host, p))
            if err == 0:
                through.append(p)
                s.close()
                continue
            pending[s] = p
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _, w, _ = select.select([], list(pending), [], left)
            for s in w:
                p = pending.pop(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    through.append(p)
                s.close()
        for s in pending:
            s.close()
    for p in through:
        print(f"through {p}")
    print(f"tried {len(ports)} through {len(through)}")


class Run:
    def __init__(self, a):
        self.a = a
        self.probes = 0
        self.through = 0
        self.notes = []

    def probe(self, phase, ports, timeout=2.0):
        cmd = ["ip", "netns", "exec", self.a.third_ns, sys.executable, __file__,
               "probe", self.a.pool4, str(timeout)] + [str(p) for p in ports]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 4 + 30).stdout
        m = re.search(r"tried (\d+) through (\d+)", out)
        if not m:
            raise RuntimeError(f"probe {phase}: no result: {one_line(out)}")
        n = int(m.group(1))
        got = [int(p) for p in re.findall(r"^through (\d+)$", out, re.M)]
        if len(ports) > 1 and got:
            # A sweep of the whole range: a port that is neither the one
            # announced nor a static BIB entry of the ALG right after the
            # sweep is no mapping of the ALG (the router's own stack
            # answered, one port in one of 5 runs): reported, not counted.
            static = static_ports(self.a.pool4)
            other = [p for p in got if p != self.announced and p not in static]
            if other:
                self.notes.append(f"{phase}: reachable without an ALG mapping (not counted): " +
                                  ",".join(map(str, other)))
            got = [p for p in got if p not in other]
        t = len(got)
        self.probes += n
        self.through += t
        shown = ports[0] if len(ports) == 1 else f"{ports[0]}-{ports[-1]}"
        print(f"probe {phase} {shown}: tried {n}, through {t}", flush=True)
        if t:
            self.notes.append(f"{phase}: " + ",".join(map(str, got)))

    def range_ports(self):
        lo, hi = (int(x) for x in self.a.range.split("-"))
        return list(range(lo, hi + 1))


def static_ports(pool4):
    """The IPv4 ports of the static TCP BIB entries on pool4 (the ALG's
    mappings, and the server's control port)."""
    out = subprocess.run(["ip", "netns", "exec", "nat", "jool", "-i", "lab", "bib", "display",
                          "--tcp", "--numeric"], capture_output=True, text=True).stdout
    ports = set()
    for line in out.splitlines():
        m = re.search(re.escape(pool4) + r"#(\d+)", line)
        if m and "Static" in line:
            ports.add(int(m.group(1)))
    return ports


def mapped_port64(c6, lport, deadline):
    """The IPv4 port of the ALG's static BIB entry for [c6]:lport."""
    want = f"{c6}#{lport}"
    while True:
        out = subprocess.run(["ip", "netns", "exec", "nat", "jool", "-i", "lab", "bib", "display",
                              "--tcp", "--numeric"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if want in line and "Static" in line:
                m = re.search(r"(\d+\.\d+\.\d+\.\d+)#(\d+)", line)
                if m:
                    return int(m.group(2))
        if time.monotonic() > deadline:
            raise RuntimeError(f"no static BIB entry for {want}")
        time.sleep(0.2)


def read_all(sock, h, first):
    """Reads the first CHUNK bytes (first=True) or the rest into h."""
    n = 0
    while True:
        want = CHUNK - n if first else CHUNK
        if want <= 0:
            return n
        b = sock.recv(want)
        if not b:
            return n
        h.update(b)
        n += len(b)


def transfer(a, r):
    ftp = ftplib.FTP(timeout=a.timeout)
    ftp.connect(a.server, 21)
    if a.user:
        ftp.login(a.user, a.password)
    else:
        ftp.login()
    ftp.sendcmd("TYPE I")
    h = hashlib.sha256()
    data = None
    if a.kind == "46":
        resp = ftp.sendcmd("PASV")
        m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", resp)
        if not m:
            raise RuntimeError(f"PASV: {resp}")
        host = ".".join(m.group(1, 2, 3, 4))
        port = int(m.group(5)) * 256 + int(m.group(6))
        if host != a.pool4:
            raise RuntimeError(f"227 names {host}, not the pool4 address {a.pool4}: {resp}")
        r.announced = port
        r.probe("before", [port])
        data = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        data.settimeout(a.timeout)
        data.connect((host, port))
        ftp.putcmd(f"RETR {a.file}")
        resp = ftp.getresp()
        if not resp.startswith(("125", "150")):
            raise RuntimeError(f"RETR: {resp}")
    else:
        ln = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        ln.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        ln.bind((a.c6, 0))
        ln.listen(4)
        lport = ln.getsockname()[1]
        resp = ftp.sendcmd(f"EPRT |2|{a.c6}|{lport}|")
        if a.announced == "eprt":
            port = lport
        else:
            port = mapped_port64(a.c6, lport, time.monotonic() + 5)
        r.announced = port
        r.probe("before", [port])
        ftp.putcmd(f"RETR {a.file}")
        resp = ftp.getresp()
        if not resp.startswith(("125", "150")):
            raise RuntimeError(f"RETR: {resp}")
        ln.settimeout(a.timeout)
        # The first connection must be the server's (an IPv4 address
        # embedded in the pool6 prefix); count any other as through.
        while True:
            c, peer = ln.accept()
            if peer[0] == a.server6:
                data = c
                break
            r.through += 1
            r.notes.append(f"accepted {peer[0]} before the server")
            c.close()
        ln.close()
        data.settimeout(a.timeout)
    got = read_all(data, h, True)
    r.probe("during", [r.announced])
    if a.range:
        r.probe("during-range", r.range_ports())
    # The rest at full speed: the small buffer only held the transfer open.
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    while True:
        n = read_all(data, h, False)
        got += n
        if n == 0:
            break
    data.close()
    resp = ftp.voidresp()
    if h.hexdigest() != a.sha256:
        raise RuntimeError(f"content: {got} bytes, sha256 {h.hexdigest()[:16]}..., want {a.sha256[:16]}...")
    r.probe("after", [r.announced])
    try:
        ftp.quit()
    except (OSError, ftplib.Error, EOFError):
        pass
    return got


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        probe_main(sys.argv[2], float(sys.argv[3]), [int(p) for p in sys.argv[4:]])
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["transfer"])
    p.add_argument("kind", choices=["46", "64"])
    p.add_argument("server")
    p.add_argument("--third-ns", required=True)
    p.add_argument("--pool4", required=True)
    p.add_argument("--range", default="", help="the ALG's reserved port range LO-HI (Jool)")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--file", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--c6", default="")
    p.add_argument("--server6", default="", help="64: the IPv4 server as the IPv6 client sees it")
    p.add_argument("--announced", choices=["jool", "eprt"], default="jool",
                   help="64: where the mapped port comes from: Jool's BIB, or the EPRT port itself (Tayga)")
    p.add_argument("--timeout", type=float, default=15.0)
    a = p.parse_args()
    r = Run(a)
    r.announced = 0
    verified, detail = False, ""
    t0 = time.monotonic()
    try:
        got = transfer(a, r)
        verified = True
        detail = f"{got} bytes verified"
    except Exception as e:  # report every failure as a result line
        detail = one_line(f"{type(e).__name__}: {e}")
    ok = verified and r.through == 0
    if r.notes:
        detail += "; through: " + "; ".join(r.notes)
    print(f"result {a.kind} {'pass' if ok else 'fail'} announced={r.announced} probes={r.probes} "
          f"through={r.through} seconds={time.monotonic() - t0:.1f} detail={detail}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
