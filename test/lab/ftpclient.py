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
address unless --port-host names the address to announce), or DEFAULT
(RFC 959 section 3.2 default data port, RFC 6384 section 8: no PORT/PASV at
all; the client listens on its control connection's own address and port
and the server connects to it, from its port 20 (L-1); the client also
listens on its control port minus 1, where proftpd connects).
--check-origin (active modes): the data connection must come from the
control connection's peer address (as ncftp checks).
Prints the data-channel reply and exits 0 when every transfer completed;
exits 1 with the reason on stderr otherwise.
"""

import argparse
import ftplib
import ipaddress
import re
import select
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


def reusable(fam):
    """A TCP socket that can share its local port with another one."""
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return s


def connect_control(host, timeout):
    """Opens the control connection on a socket whose local port a
    listener can share (default active mode, RFC 959 section 3.2)."""
    ftp = ftplib.FTP(timeout=timeout)
    fam = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    s = reusable(fam)
    s.settimeout(timeout)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
    s.connect((host, 21))
    ftp.host, ftp.port, ftp.sock, ftp.af = host, 21, s, fam
    ftp.file = s.makefile("r", encoding=ftp.encoding)
    ftp.welcome = ftp.getresp()
    return ftp


def accept_data(ftp, ls, check_origin):
    try:
        conn, peer = ls.accept()
    except OSError as e:
        fail("no data connection from the server: %s" % e)
    ls.close()
    want = ftp.sock.getpeername()[0]
    if check_origin and ipaddress.ip_address(peer[0]) != ipaddress.ip_address(want):
        conn.close()
        fail("data connection from %s port %d, not from the control connection's peer %s" % (peer[0], peer[1], want))
    print("data connection from %s port %d" % (peer[0], peer[1]))
    return conn


def transfer(ftp, mode, cmd, timeout, port_host, pasv_control, sink=None, source=None, check_origin=False):
    """Runs one transfer command (RETR/STOR) over a fresh data channel."""
    if mode == "DEFAULT":
        # RFC 959 section 3.2: without PORT the server connects to the
        # user's default data port, the control connection's own port U.
        # proftpd connects to U-1 instead: listen there too when free.
        local = ftp.sock.getsockname()[:2]
        listeners = []
        for port in (local[1], local[1] - 1):
            ls = reusable(ftp.af)
            try:
                ls.bind((local[0], port))
            except OSError:
                if port == local[1]:
                    fail("default data port %d: cannot listen" % port)
                ls.close()
                continue
            ls.listen(1)
            listeners.append(ls)
        try:
            resp = ftp.sendcmd(cmd)
        except ftplib.Error as e:
            resp = str(e)
        print(resp)
        if not resp.startswith("1"):
            # Log out before failing: pure-ftpd answers a close without
            # QUIT with an unsolicited "425 Logout.".
            try:
                ftp.quit()
            except (OSError, ftplib.Error, EOFError):
                pass
            fail(cmd + ": " + resp)
        ready, _, _ = select.select(listeners, [], [], timeout)
        if not ready:
            fail("no data connection from the server to port %s" %
                 " or ".join(str(ls.getsockname()[1]) for ls in listeners))
        for ls in listeners:
            if ls is not ready[0]:
                ls.close()
        ls = ready[0]
        ls.settimeout(timeout)
        print("data connection to port %d (control connection's port %d)" % (ls.getsockname()[1], local[1]))
        conn = accept_data(ftp, ls, check_origin)
    elif mode in ("PORT", "EPRT 1", "EPRT 2", "LPRT"):
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
        conn = accept_data(ftp, ls, check_origin)
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
    ap.add_argument("--check-origin", action="store_true",
                    help="active modes: the data connection must come from the control connection's peer")
    ap.add_argument("--timeout", type=float, default=5)
    a = ap.parse_args()
    mode = a.mode.upper()
    if mode not in ("NONE", "REPLY", "PASV", "EPSV", "EPSV 1", "EPSV 2", "LPSV", "PORT", "EPRT 1", "EPRT 2", "LPRT", "DEFAULT"):
        fail("unknown mode " + a.mode)
    try:
        if mode == "DEFAULT":
            ftp = connect_control(a.host, a.timeout)
        else:
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
                transfer(ftp, mode, "RETR " + a.get, a.timeout, a.port_host, a.pasv_control, sink=f, check_origin=a.check_origin)
        if a.put and mode not in ("NONE", "REPLY"):
            with open(a.put, "rb") as f:
                transfer(ftp, mode, "STOR " + a.as_name, a.timeout, a.port_host, a.pasv_control, source=f, check_origin=a.check_origin)
        try:
            ftp.quit()
        except (OSError, ftplib.Error):
            pass
    except (OSError, ftplib.Error, EOFError) as e:
        fail("%s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    main()
