#!/usr/bin/env python3
"""One FTP control connection across a router failover, for the ftpalg
failover test (test/e2e/failover_test.go).

  failover.py HOST NAME SHA256 [--before N] [--after N] [--timeout S]

Logs in anonymously, downloads NAME N times (passive on even, active on odd
transfers: ftplib sends PASV or PORT on IPv4, EPSV or EPRT on IPv6) and
checks each copy's SHA-256; prints "switch" and waits for a line on stdin
(the test moves the router meanwhile); then does the transfers of --after
on the same control connection. Prints one JSON line: {"before": ...,
"after": ..., "port": ..., "error": ...}; exits 0 when all were verified.
"""

import argparse
import ftplib
import hashlib
import json
import sys


def transfers(ftp, a, n, done):
    for i in range(n):
        ftp.set_pasv(i % 2 == 0)
        h = hashlib.sha256()
        ftp.retrbinary("RETR " + a.name, h.update)
        if h.hexdigest() != a.sha:
            raise RuntimeError("transfer %d (%s): checksum differs" % (i, "passive" if i % 2 == 0 else "active"))
        done[0] += 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("name")
    p.add_argument("sha")
    p.add_argument("--before", type=int, default=2)
    p.add_argument("--after", type=int, default=4)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    before, after, port, err = [0], [0], 0, None
    try:
        ftp = ftplib.FTP(timeout=a.timeout)
        ftp.connect(a.host, 21)
        port = ftp.sock.getsockname()[1]
        ftp.login()
        transfers(ftp, a, a.before, before)
        print("switch", flush=True)
        sys.stdin.readline()
        transfers(ftp, a, a.after, after)
        ftp.quit()
    except Exception as e:  # noqa: BLE001 (reported, not swallowed)
        err = "%s: %s" % (type(e).__name__, e)
    print(json.dumps({"before": before[0], "after": after[0], "port": port, "error": err}), flush=True)
    sys.exit(1 if err else 0)


main()
