#!/usr/bin/env python3
"""Faulty callback endpoint for the chaos run (issue 7). Python stdlib only.

usage: endpoint.py PORT LOGFILE SEED LATE_SECONDS

Threaded HTTP/1.1 server on 127.0.0.1:PORT. Each POST draws a kind:
  e500       HTTP 500 "error"
  timeout    sleeps LATE_SECONDS (past the daemons' timeoutMs), then HTTP 500 "late"
  reset      closes the connection with a TCP RST, no response
  slow       HTTP 200 "success", trickled in pieces over ~0.4 s (within the timeout)
  nosuccess  HTTP 200 "ok" (no `success`: a failed attempt)
  ok         HTTP 200 "success"
A request to a path starting with /fail always gets HTTP 500 (kind alwaysfail): such jobs
carry "maxRetry":1 and must end in the fail list.
Shares come from FAULT_SHARES below. Log lines (tab separated, flushed per line):
  A seq arrival_unix job_id attempt kind     at arrival
  S seq done_unix job_id attempt             after a success answer was fully written
"""
import http.server
import random
import socket
import struct
import sys
import threading
import time

FAULT_SHARES = [("e500", 0.04), ("timeout", 0.02), ("reset", 0.03),
                ("slow", 0.03), ("nosuccess", 0.03)]

port, logpath, seed, late = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(seed)
lock = threading.Lock()
log = open(logpath, "a", buffering=1)
seq = [0]


def record(line):
    with lock:
        log.write(line + "\n")


def draw():
    with lock:
        seq[0] += 1
        r = rng.random()
        n = seq[0]
    acc = 0.0
    for kind, share in FAULT_SHARES:
        acc += share
        if r < acc:
            return n, kind
    return n, "ok"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, status, body, close=False):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_POST(self):
        t = time.time()
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        jid = self.headers.get("X-Delayqs-Job-Id", "-")
        att = self.headers.get("X-Delayqs-Attempt", "-")
        s, kind = draw()
        if self.path.startswith("/fail"):
            kind = "alwaysfail"   # a job meant to end in the fail list, not a fault share
        record(f"A\t{s}\t{t:.6f}\t{jid}\t{att}\t{kind}")
        try:
            if kind == "alwaysfail":
                self.answer(500, b"refused for good")
            elif kind == "e500":
                self.answer(500, b"error")
            elif kind == "timeout":
                time.sleep(late)
                self.answer(500, b"late", close=True)
            elif kind == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
            elif kind == "nosuccess":
                self.answer(200, b"ok")
            elif kind == "slow":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.flush()
                for piece in (b"su", b"cc", b"ess"):
                    time.sleep(0.13)
                    self.wfile.write(piece)
                    self.wfile.flush()
                record(f"S\t{s}\t{time.time():.6f}\t{jid}\t{att}")
            else:
                self.answer(200, b"success")
                record(f"S\t{s}\t{time.time():.6f}\t{jid}\t{att}")
        except OSError:
            self.close_connection = True


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass


if __name__ == "__main__":
    srv = Server(("127.0.0.1", port), Handler)
    record(f"R\t0\t{time.time():.6f}\tready\t-\t-")
    srv.serve_forever(poll_interval=0.2)
