#!/usr/bin/env python3
"""Many concurrent FTP control connections, each doing a series of verified
downloads, alternating passive and active data channels; for the ftpalg
chaos test (test/e2e/chaos_test.go), which restarts the ALG meanwhile.

  chaos.py HOST CONNS TRANSFERS NAME SHA256 [--pause S] [--timeout S]

Each connection logs in anonymously, then downloads NAME TRANSFERS times
(passive on even, active on odd transfers: ftplib sends PASV or PORT on
IPv4, EPSV or EPRT on IPv6) and checks each copy's SHA-256. Prints one
JSON line: {"conns": N, "ok_conns": ..., "transfers": ..., "failures":
[...]} and exits 0 when every connection did every transfer.
"""

import argparse
import ftplib
import hashlib
import json
import random
import sys
import threading
import time


def session(i, a, out):
    done = 0
    port = 0
    try:
        ftp = ftplib.FTP(timeout=a.timeout)
        ftp.connect(a.host, 21)
        port = ftp.sock.getsockname()[1]
        ftp.login()
        for n in range(a.transfers):
            ftp.set_pasv(n % 2 == 0)
            h = hashlib.sha256()
            ftp.retrbinary("RETR " + a.name, h.update)
            if h.hexdigest() != a.sha:
                raise RuntimeError("transfer %d: checksum differs" % n)
            done += 1
            time.sleep(a.pause * (0.5 + random.random()))
        ftp.quit()
        out[i] = (done, None)
    except Exception as e:  # noqa: BLE001 (reported, not swallowed)
        out[i] = (done, "conn %d (port %d) after %d transfers: %s: %s" % (
            i, port, done, type(e).__name__, e))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("conns", type=int)
    p.add_argument("transfers", type=int)
    p.add_argument("name")
    p.add_argument("sha")
    p.add_argument("--pause", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    out = [(0, "never ran")] * a.conns
    threads = []
    for i in range(a.conns):
        t = threading.Thread(target=session, args=(i, a, out), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(0.02)  # do not open every connection in the same instant
    for t in threads:
        t.join()
    fails = [err for _, err in out if err]
    print(json.dumps({"conns": a.conns, "ok_conns": a.conns - len(fails),
                      "transfers": sum(d for d, _ in out), "failures": fails}))
    sys.exit(1 if fails else 0)


main()
