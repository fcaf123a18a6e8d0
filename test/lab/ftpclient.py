#!/usr/bin/env python3
"""A strict FTP client for the ftpalg lab: sends exactly the data-channel
command it is told to (python's ftplib for the control connection, the data
connection by hand) and uses the address the server's reply names, unlike
clients that fall back to the control connection's address.

  ftpclient.py HOST MODE [--user U] [--password P] [--get NAME --out FILE]
               [--put FILE --as NAME] [--port-host ADDR] [--pasv-control]
               [--pre CMD] [--cmd CMD --expect CODE] [--timeout S]

--pre sends a command after logging in (e.g. "EPSV ALL") and requires a 2xx.

MODE is one of: NONE (log in, PWD, no data channel), REPLY (send --cmd,
exit 0 when the reply's code starts with --expect), PASV, EPSV, "EPSV 1", "EPSV 2", LPSV (passive) or PORT,
"EPRT 1", "EPRT 2", LPRT (active; the client listens on its own control
address unless --port-host names the address to announce).
Prints the data-channel reply and exits 0 when every transfer completed;
exits 1 with the reason on stderr otherwise.
"""

import argparse
import ftplib
import ipaddress
import re
import socket
import sys


def fail(msg):
    print("ftpclient: " + msg, file=sys.stderr)
    sys.exit(1)


def parse_227(resp):
    # RFC 1123 4.1.2.6: scan for the first digit; six numbers.
    m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", resp)
    if not m:
        fail("malformed 227 reply: " + resp)
    n = [int(x) for x in m.groups()]
    if any(x > 255 for x in n):
        fail("malformed 227 reply: " + resp)
    return "%d.%d.%d.%d" % tuple(n[:4]), n[4] * 256 + n[5]


def parse_228(resp):
    # RFC 1639: 228 Entering Long Passive Mode (af,hal,h1,...,pal,p1,p2)
    m = re.search(r"\(([\d,]+)\)", resp)
    if not m:
        fail("malformed 228 reply: " + resp)
    n = [int(x) for x in m.group(1).split(",")]
    if len(n) < 2 or any(x > 255 for x in n):
        fail("malformed 228 reply: " + resp)
    af, hal = n[0], n[1]
    addr = bytes(n[2:2 + hal])
    rest = n[2 + hal:]
    if len(rest) < 1 or len(rest) != rest[0] + 1 or rest[0] != 2:
        fail("malformed 228 reply: " + resp)
    if af == 4 and hal == 4:
        host = str(ipaddress.IPv4Address(addr))
    elif af == 6 and hal == 16:
        host = str(ipaddress.IPv6Address(addr))
    else:
        fail("unsupported 228 address: " + resp)
    return host, rest[1] * 256 + rest[2]


def parse_229(resp):
    # RFC 2428: (<d><d><d>port<d>), any delimiter 33-126.
    m = re.search(r"\((.)\1\1(\d+)\1\)", resp)
    if not m:
        fail("malformed 229 reply: " + resp)
    return int(m.group(2))


def passive(ftp, mode, timeout, pasv_control=False):
    resp = ftp.sendcmd(mode)
    print(resp)
    peer = ftp.sock.getpeername()[0]
    if mode == "PASV":
        if not resp.startswith("227"):
            fail("PASV refused: " + resp)
        host, port = parse_227(resp)
        if pasv_control:
            host = peer
    elif mode == "LPSV":
        if not resp.startswith("228"):
            fail("LPSV refused: " + resp)
        host, port = parse_228(resp)
    else:
        if not resp.startswith("229"):
            fail(mode + " refused: " + resp)
        host, port = peer, parse_229(resp)
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        fail("data connection to %s port %d: %s" % (host, port, e))


def active_command(mode, host, port):
    a = ipaddress.ip_address(host)
    if mode == "PORT":
        if a.version != 4:
            fail("PORT needs an IPv4 address, have " + host)
        return "PORT " + ",".join(host.split(".") + [str(port >> 8), str(port & 255)])
    if mode in ("EPRT 1", "EPRT 2"):
        return "EPRT |%d|%s|%d|" % (a.version == 6 and 2 or 1, host, port)
    if mode == "LPRT":
        raw = a.packed
        nums = [6 if a.version == 6 else 4, len(raw)] + list(raw) + [2, port >> 8, port & 255]
        return "LPRT " + ",".join(str(x) for x in nums)
    fail("unknown mode " + mode)


def transfer(ftp, mode, cmd, timeout, port_host, pasv_control, sink=None, source=None):
    """Runs one transfer command (RETR/STOR) over a fresh data channel."""
    if mode in ("PORT", "EPRT 1", "EPRT 2", "LPRT"):
        local = ftp.sock.getsockname()[0]
        fam = socket.AF_INET6 if ":" in local else socket.AF_INET
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.bind((local, 0))
        ls.listen(1)
        ls.settimeout(timeout)
        port = ls.getsockname()[1]
        host = str(ipaddress.ip_address(port_host or local))
        if mode == "EPRT 1" and ipaddress.ip_address(host).version != 4:
            fail("EPRT |1| needs an IPv4 address, have " + host)
        if mode == "EPRT 2" and ipaddress.ip_address(host).version != 6:
            fail("EPRT |2| needs an IPv6 address, have " + host)
        resp = ftp.sendcmd(active_command(mode, host, port))
        print(resp)
        if not resp.startswith("2"):
            fail(mode + " refused: " + resp)
        resp = ftp.sendcmd(cmd)
        if not resp.startswith("1"):
            fail(cmd + ": " + resp)
        try:
            conn, _ = ls.accept()
        except OSError as e:
            fail("no data connection from the server: %s" % e)
        ls.close()
    else:
        conn = passive(ftp, mode, timeout, pasv_control)
        resp = ftp.sendcmd(cmd)
        if not resp.startswith("1"):
            fail(cmd + ": " + resp)
    conn.settimeout(timeout)
    try:
        if sink is not None:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                sink.write(b)
        else:
            while True:
                b = source.read(65536)
                if not b:
                    break
                conn.sendall(b)
    except OSError as e:
        fail("data transfer: %s" % e)
    conn.close()
    resp = ftp.voidresp()
    print(resp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("mode")
    ap.add_argument("--user", default="anonymous")
    ap.add_argument("--password", default="test@example.com")
    ap.add_argument("--get")
    ap.add_argument("--out")
    ap.add_argument("--put")
    ap.add_argument("--as", dest="as_name")
    ap.add_argument("--port-host")
    ap.add_argument("--pasv-control", action="store_true",
                    help="PASV: connect to the control connection's peer, not the 227 address")
    ap.add_argument("--pre")
    ap.add_argument("--cmd")
    ap.add_argument("--expect")
    ap.add_argument("--timeout", type=float, default=5)
    a = ap.parse_args()
    mode = a.mode.upper()
    if mode not in ("NONE", "REPLY", "PASV", "EPSV", "EPSV 1", "EPSV 2", "LPSV", "PORT", "EPRT 1", "EPRT 2", "LPRT"):
        fail("unknown mode " + a.mode)
    try:
        ftp = ftplib.FTP(timeout=a.timeout)
        ftp.connect(a.host, 21)
        ftp.login(a.user, a.password)
        ftp.voidcmd("TYPE I")
        if a.pre:
            resp = ftp.sendcmd(a.pre)
            print(resp)
            if not resp.startswith("2"):
                fail(a.pre + " refused: " + resp)
        if mode == "NONE":
            print(ftp.sendcmd("PWD"))
        elif mode == "REPLY":
            try:
                resp = ftp.sendcmd(a.cmd)
            except ftplib.Error as e:
                resp = str(e)
            print(resp)
            if not resp.startswith(a.expect):
                fail("%s: want a %s reply, got %s" % (a.cmd, a.expect, resp))
        elif a.get:
            with open(a.out, "wb") as f:
                transfer(ftp, mode, "RETR " + a.get, a.timeout, a.port_host, a.pasv_control, sink=f)
        if a.put and mode not in ("NONE", "REPLY"):
            with open(a.put, "rb") as f:
                transfer(ftp, mode, "STOR " + a.as_name, a.timeout, a.port_host, a.pasv_control, source=f)
        try:
            ftp.quit()
        except (OSError, ftplib.Error):
            pass
    except (OSError, ftplib.Error, EOFError) as e:
        fail("%s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    main()
