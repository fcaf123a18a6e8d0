#!/usr/bin/env python3
"""A minimal FTP server for the ftpalg labs that implements RFC 959's
default data port, which none of vsftpd, proftpd and pure-ftpd does as
written: without PORT/EPRT, RETR opens the data connection from the
server's port L-1 (20) to the client's control connection address and
port U (RFC 959 section 3.2, RFC 6384 section 8). With PORT or EPRT it
connects where they say, also from port 20.

  defaultftpd.py ADDR DIR [--port 21]

Any USER/PASS is accepted; commands: USER PASS TYPE MODE STRU PWD NOOP
PORT EPRT RETR QUIT (others: 502). Anonymous read-only, for tests only.
"""

import argparse
import ipaddress
import os
import socket
import socketserver


def parse_port(arg):
    n = [int(x) for x in arg.split(",")]
    if len(n) != 6 or any(x > 255 for x in n):
        raise ValueError(arg)
    return "%d.%d.%d.%d" % tuple(n[:4]), n[4] * 256 + n[5]


def parse_eprt(arg):
    d = arg[0]
    _, proto, host, port, _ = arg.split(d)
    ipaddress.ip_address(host)
    return host, int(port)


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())

    def handle(self):
        data_to = None  # set by PORT/EPRT; None: the default data port
        self.reply("220 defaultftpd ready")
        for raw in self.rfile:
            line = raw.decode("latin-1").rstrip("\r\n")
            cmd, _, arg = line.partition(" ")
            cmd = cmd.upper()
            try:
                if cmd == "USER":
                    self.reply("331 any password")
                elif cmd == "PASS":
                    self.reply("230 logged in")
                elif cmd in ("TYPE", "MODE", "STRU", "NOOP"):
                    self.reply("200 ok")
                elif cmd == "PWD":
                    self.reply('257 "/"')
                elif cmd == "PORT":
                    data_to = parse_port(arg)
                    self.reply("200 PORT ok")
                elif cmd == "EPRT":
                    data_to = parse_eprt(arg)
                    self.reply("200 EPRT ok")
                elif cmd == "RETR":
                    self.retr(arg, data_to)
                    data_to = None
                elif cmd == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")
            except (ValueError, OSError) as e:
                self.reply("501 %s" % e)

    def retr(self, name, data_to):
        path = os.path.join(self.server.root, os.path.basename(name))
        try:
            f = open(path, "rb")
        except OSError:
            self.reply("550 no such file")
            return
        with f:
            local = self.connection.getsockname()
            peer = self.connection.getpeername()
            to = data_to or peer[:2]  # RFC 959 section 3.2: U, the control port
            s = socket.socket(self.connection.family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(10)
            try:
                s.bind((local[0], local[1] - 1))  # L-1
                self.reply("150 connecting to %s port %d" % (to[0], to[1]))
                s.connect(to)
                while True:
                    b = f.read(65536)
                    if not b:
                        break
                    s.sendall(b)
            except OSError as e:
                s.close()
                self.reply("425 data connection: %s" % e)
                return
            s.close()
            self.reply("226 transfer complete")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, default=21)
    a = ap.parse_args()
    Server.address_family = socket.AF_INET6 if ipaddress.ip_address(a.addr).version == 6 else socket.AF_INET
    srv = Server((a.addr, a.port), Handler)
    srv.root = a.dir
    srv.serve_forever()


if __name__ == "__main__":
    main()
