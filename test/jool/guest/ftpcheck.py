#!/usr/bin/python3
"""One FTP transfer with an exactly chosen data-channel command.

    ftpcheck.py HOST MODE [--advertise ADDR] [--file NAME] [--expect TEXT] [--timeout S]

MODE is pasv, epsv, port, eprt1 or eprt2. Logs in anonymously, sends TYPE I,
the data-channel command (RFC 959 PASV/PORT, RFC 2428 EPSV/EPRT) and RETR FILE,
and checks that the data received equals TEXT. ftplib's sendcmd is used
because curl and lftp never send PASV or PORT on an IPv6 control connection.

For PASV the client connects to the literal address in the 227 reply (that is
what breaks across a NAT64); for EPSV to the control connection's peer. For
the active modes it listens on its own address (IPv4 for port/eprt1, IPv6 for
eprt2, whatever the control connection uses when that family is missing) and
advertises ADDR (default: the control connection's local address).

Prints one line: "pass ..." or "fail <step>: ...", with every server reply,
and exits 0 on pass, 1 on fail.
"""

import argparse
import ftplib
import socket
import sys


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("mode", choices=["pasv", "epsv", "port", "eprt1", "eprt2"])
    p.add_argument("--port", type=int, default=21)
    p.add_argument("--advertise", default="")
    p.add_argument("--file", default="hello.txt")
    p.add_argument("--expect", default="")
    p.add_argument("--timeout", type=float, default=4.0)
    return p.parse_args()


class Failed(Exception):
    def __init__(self, step, detail):
        super().__init__(f"{step}: {detail}")
        self.step = step


def one_line(s):
    return " ".join(str(s).split())


def run(a, replies):
    ftp = ftplib.FTP(timeout=a.timeout)
    try:
        replies.append(one_line(ftp.connect(a.host, a.port)))
        replies.append(one_line(ftp.login()))
    except (OSError, ftplib.Error, EOFError) as e:
        raise Failed("control", one_line(e))
    replies.append(one_line(ftp.sendcmd("TYPE I")))
    local = ftp.sock.getsockname()[0]
    data = None
    listener = None
    try:
        if a.mode in ("pasv", "epsv"):
            cmd = "PASV" if a.mode == "pasv" else "EPSV"
            try:
                resp = ftp.sendcmd(cmd)
            except ftplib.Error as e:
                raise Failed(cmd, one_line(e))
            replies.append(one_line(resp))
            try:
                if cmd == "PASV":
                    host, port = ftplib.parse227(resp)
                else:
                    host, port = ftplib.parse229(resp, ftp.sock.getpeername())
            except ftplib.Error as e:
                raise Failed(cmd, "unparsable reply: " + one_line(e))
            try:
                data = socket.create_connection((host, port), timeout=a.timeout)
            except OSError as e:
                raise Failed("data", f"connect [{host}]:{port}: {one_line(e)}")
            try:
                ftp.putcmd("RETR " + a.file)
                resp = ftp.getresp()
            except ftplib.Error as e:
                raise Failed("RETR", one_line(e))
            replies.append(one_line(resp))
        else:
            family = socket.AF_INET6 if a.mode == "eprt2" else socket.AF_INET
            try:
                listener = socket.socket(family, socket.SOCK_STREAM)
                listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            except OSError:
                # The client has no address of that family (an IPv6-only
                # client asked to send PORT): listen on the control family and
                # advertise what we were told to.
                family = ftp.sock.family
                listener = socket.socket(family, socket.SOCK_STREAM)
                listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            listener.listen(1)
            listener.settimeout(a.timeout)
            port = listener.getsockname()[1]
            adv = a.advertise or local
            if a.mode == "port":
                cmd = "PORT " + ",".join(adv.split(".") + [str(port >> 8), str(port & 0xFF)])
            else:
                cmd = f"EPRT |{1 if a.mode == 'eprt1' else 2}|{adv}|{port}|"
            try:
                replies.append(one_line(ftp.sendcmd(cmd)))
            except ftplib.Error as e:
                raise Failed(cmd.split()[0], f"{cmd!r} -> {one_line(e)}")
            try:
                ftp.putcmd("RETR " + a.file)
                resp = ftp.getresp()
            except ftplib.Error as e:
                raise Failed("RETR", one_line(e))
            replies.append(one_line(resp))
            try:
                data, _ = listener.accept()
            except OSError as e:
                raise Failed("data", f"no connection to {adv} port {port}: {one_line(e)}")
        data.settimeout(a.timeout)
        chunks = []
        try:
            while True:
                b = data.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except OSError as e:
            raise Failed("data", "read: " + one_line(e))
        data.close()
        data = None
        try:
            replies.append(one_line(ftp.voidresp()))
        except (ftplib.Error, EOFError, OSError) as e:
            raise Failed("transfer", one_line(e))
        got = b"".join(chunks).decode(errors="replace")
        if a.expect and got.strip() != a.expect.strip():
            raise Failed("content", f"got {got[:60]!r}")
    finally:
        if data is not None:
            data.close()
        if listener is not None:
            listener.close()
        try:
            ftp.close()
        except OSError:
            pass


def main():
    a = parse_args()
    replies = []
    try:
        run(a, replies)
    except Failed as e:
        print(f"fail {e} | replies: {' / '.join(replies)}")
        return 1
    except (OSError, ftplib.Error, EOFError) as e:
        print(f"fail other: {one_line(e)} | replies: {' / '.join(replies)}")
        return 1
    print(f"pass | replies: {' / '.join(replies)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
