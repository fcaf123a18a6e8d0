#!/usr/bin/python3
"""Many FTP data connections in a row over one control connection.

    churn.py HOST MODE COUNT [--delay S] [--timeout S] [--progress K]
    churn.py --make-files DIR

MODE is pasv (the client connects to the literal address of each 227 reply,
which must be the control connection's peer: across a NAT64 only an ALG makes
it so) or eprt2 (the client listens on a new IPv6 port for each transfer and
sends EPRT |2|its-address|port|). Logs in anonymously once, sends TYPE I, then
COUNT times the data-channel command and RETR of one of the files that
--make-files wrote into the server's root (chunk-K.txt, K = transfer number
modulo 8), and checks that the bytes received are exactly that file's. After
a failed transfer it logs in again on a new control connection (the old one
may be out of step) and goes on; it gives up after 20 failures in a row.

--delay S waits S seconds between the data-channel command's reply and the
data connection (pasv: before connecting; eprt2: before RETR), as a slow
client would.

--make-files DIR writes the files (different sizes and contents) and exits.

Prints one line per failure ("fail N <step>: ..."), a progress line every K
transfers, and at the end "churn MODE: P passed, F failed"; exits 0 when
every transfer passed.
"""

import argparse
import ftplib
import os
import socket
import sys
import time

NFILES = 8


def file_content(k):
    line = f"chunk {k} through the ftpalg and a real jool\n".encode()
    return line * (3 + 5 * k)


def make_files(d):
    os.makedirs(d, exist_ok=True)
    for k in range(NFILES):
        with open(os.path.join(d, f"chunk-{k}.txt"), "wb") as f:
            f.write(file_content(k))
        os.chmod(os.path.join(d, f"chunk-{k}.txt"), 0o644)


def one_line(s):
    return " ".join(str(s).split())


class Failed(Exception):
    pass


class Client:
    def __init__(self, host, timeout, delay):
        self.host, self.timeout, self.delay = host, timeout, delay
        self.ftp = None

    def connect(self):
        self.close()
        ftp = ftplib.FTP(timeout=self.timeout)
        try:
            ftp.connect(self.host, 21)
            ftp.login()
            ftp.sendcmd("TYPE I")
        except (OSError, ftplib.Error, EOFError) as e:
            try:
                ftp.close()
            except OSError:
                pass
            raise Failed("control: " + one_line(e))
        self.ftp = ftp

    def close(self):
        if self.ftp is not None:
            try:
                self.ftp.quit()
            except (OSError, ftplib.Error, EOFError):
                pass
            try:
                self.ftp.close()
            except OSError:
                pass
            self.ftp = None

    def cmd(self, c):
        try:
            return self.ftp.sendcmd(c)
        except ftplib.Error as e:
            raise Failed(f"{c.split()[0]}: {one_line(e)}")

    def retr_reply(self, name):
        try:
            self.ftp.putcmd("RETR " + name)
            return self.ftp.getresp()
        except ftplib.Error as e:
            raise Failed("RETR: " + one_line(e))

    def transfer(self, mode, name):
        """One data connection; returns the bytes received."""
        ftp = self.ftp
        data = listener = None
        try:
            if mode == "pasv":
                resp = self.cmd("PASV")
                try:
                    host, port = ftplib.parse227(resp)
                except ftplib.Error as e:
                    raise Failed("PASV: unparsable: " + one_line(e))
                peer = ftp.sock.getpeername()[0]
                if host != peer:
                    raise Failed(f"PASV: {one_line(resp)} names {host}, not the server {peer}")
                time.sleep(self.delay)
                try:
                    data = socket.create_connection((host, port), timeout=self.timeout)
                except OSError as e:
                    raise Failed(f"data: connect {host}:{port}: {one_line(e)}")
                self.retr_reply(name)
            else:
                local = ftp.sock.getsockname()[0]
                listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                listener.bind((local, 0))
                listener.listen(1)
                listener.settimeout(self.timeout)
                port = listener.getsockname()[1]
                self.cmd(f"EPRT |2|{local}|{port}|")
                time.sleep(self.delay)
                self.retr_reply(name)
                try:
                    data, _ = listener.accept()
                except OSError as e:
                    raise Failed(f"data: no connection to [{local}]:{port}: {one_line(e)}")
            data.settimeout(self.timeout)
            chunks = []
            try:
                while True:
                    b = data.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
            except OSError as e:
                raise Failed("data: read: " + one_line(e))
            data.close()
            data = None
            try:
                ftp.voidresp()
            except (ftplib.Error, EOFError, OSError) as e:
                raise Failed("transfer: " + one_line(e))
            return b"".join(chunks)
        finally:
            if data is not None:
                data.close()
            if listener is not None:
                listener.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host", nargs="?")
    p.add_argument("mode", nargs="?", choices=["pasv", "eprt2"])
    p.add_argument("count", nargs="?", type=int)
    p.add_argument("--make-files", default="")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--progress", type=int, default=100)
    a = p.parse_args()
    if a.make_files:
        make_files(a.make_files)
        return 0
    if not a.host or not a.mode or a.count is None:
        p.error("HOST MODE COUNT are required")

    c = Client(a.host, a.timeout, a.delay)
    passed = failed = in_row = 0
    t0 = time.monotonic()
    for i in range(a.count):
        k = i % NFILES
        try:
            if c.ftp is None:
                c.connect()
            got = c.transfer(a.mode, f"chunk-{k}.txt")
            want = file_content(k)
            if got != want:
                raise Failed(f"content: {len(got)} bytes {got[:40]!r}, want {len(want)} bytes")
            passed += 1
            in_row = 0
        except (Failed, OSError, ftplib.Error, EOFError) as e:
            failed += 1
            in_row += 1
            print(f"fail {i + 1} {one_line(e)}", flush=True)
            # The control connection may be out of step now: start over.
            c.close()
            if in_row >= 20:
                print(f"giving up after {in_row} failures in a row", flush=True)
                failed += a.count - i - 1
                break
        if a.progress and (i + 1) % a.progress == 0:
            print(f"  {a.mode}: {i + 1}/{a.count} in {time.monotonic() - t0:.1f} s, {failed} failed", flush=True)
    c.close()
    print(f"churn {a.mode}: {passed} passed, {failed} failed, {time.monotonic() - t0:.1f} s", flush=True)
    return 0 if failed == 0 and passed == a.count else 1


if __name__ == "__main__":
    sys.exit(main())
