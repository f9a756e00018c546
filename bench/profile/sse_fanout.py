#!/usr/bin/env python3
"""bench/profile/sse_fanout.py — SSE subscribers of one stream, driven in lock step.

Why lock step: a subscriber that falls behind receives several appends in one event, so the
work per delivery would depend on how fast the machine is. Here every append waits until every
subscriber has received it (its control event names the append's next offset) before the next
one is sent, so each append is one event to each subscriber, on any machine and under valgrind.

    sse_fanout.py BASE PATH --subscribers N [--warmup W] [--appends M]
                  [--on CMD] [--off CMD] [--pid PID] [--burst]

Creates PATH as a text/plain stream, opens N `live=sse` readers from offset -1 (128 at a time),
waits for each one's first `upToDate` control, sends W appends in lock step, runs CMD of --on,
sends M appends in lock step, runs CMD of --off. With --pid, prints the server's VmRSS before
the readers, with them idle, and after the appends (KiB), one `rss_*` line each. --burst
sends the M appends without waiting and reads the readers only after the last one: each
reader's backlog then queues in the server (what a slow subscriber costs it).
Prints `deliveries D` (M × N) at the end. Standard library only.
"""

import argparse
import http.client
import selectors
import socket
import subprocess
import sys
import time
import urllib.parse

BATCH = 128
TIMEOUT_S = 600


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Reader:
    def __init__(self, host, port, path):
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(
            f"GET {path}?offset=-1&live=sse HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.sock.setblocking(False)
        self.buf = b""

    def saw(self, needle):
        """True once `needle` arrived; forgets what came before it."""
        at = self.buf.find(needle)
        if at < 0:
            # Keep a tail long enough to hold a needle cut in two by a read.
            self.buf = self.buf[-256:]
            return False
        self.buf = self.buf[at + len(needle):]
        return True


def wait_all(sel, readers, needle):
    """Reads every reader until each has received `needle`."""
    pending = {r for r in readers if not r.saw(needle)}
    deadline = time.monotonic() + TIMEOUT_S
    while pending:
        if time.monotonic() > deadline:
            sys.exit(f"sse_fanout: {len(pending)} readers never received {needle!r}")
        for key, _ in sel.select(timeout=1):
            r = key.data
            data = r.sock.recv(65536)
            if not data:
                sys.exit("sse_fanout: the server closed a reader")
            r.buf += data
            if r in pending and r.saw(needle):
                pending.discard(r)


def append(conn, path, i):
    conn.request("POST", path, body=f"append {i:08d} of the fan-out run",
                 headers={"Content-Type": "text/plain"})
    resp = conn.getresponse()
    resp.read()
    if resp.status // 100 != 2:
        sys.exit(f"sse_fanout: append answered {resp.status}")
    return resp.getheader("Stream-Next-Offset")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("path")
    p.add_argument("--subscribers", type=int, required=True)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--appends", type=int, default=0)
    p.add_argument("--on")
    p.add_argument("--off")
    p.add_argument("--pid", type=int)
    p.add_argument("--burst", action="store_true")
    a = p.parse_args()
    u = urllib.parse.urlparse(a.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT_S)
    conn.request("PUT", a.path, headers={"Content-Type": "text/plain"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 201:
        sys.exit(f"sse_fanout: stream create answered {resp.status}")
    if a.pid:
        print(f"rss_before_kib {rss_kib(a.pid)}", flush=True)
    sel = selectors.DefaultSelector()
    readers = []
    for start in range(0, a.subscribers, BATCH):
        batch = [Reader(u.hostname, u.port, a.path)
                 for _ in range(min(BATCH, a.subscribers - start))]
        for r in batch:
            sel.register(r.sock, selectors.EVENT_READ, r)
        wait_all(sel, batch, b'"upToDate":true')
        readers += batch
    if a.pid:
        time.sleep(1)  # RSS settles (the last batch's freed buffers); not a synchronization
        print(f"rss_idle_kib {rss_kib(a.pid)}", flush=True)

    def run(first, count):
        offset = None
        for i in range(first, first + count):
            offset = append(conn, a.path, i)
            if not a.burst:
                wait_all(sel, readers, f'"streamNextOffset":"{offset}"'.encode())
        if a.burst and offset:
            if a.pid:
                print(f"rss_backlog_kib {rss_kib(a.pid)}", flush=True)
            wait_all(sel, readers, f'"streamNextOffset":"{offset}"'.encode())

    run(0, a.warmup)
    if a.on:
        subprocess.run(a.on, shell=True, check=True, stdout=subprocess.DEVNULL)
    run(a.warmup, a.appends)
    if a.off:
        subprocess.run(a.off, shell=True, check=True, stdout=subprocess.DEVNULL)
    if a.pid:
        print(f"rss_after_kib {rss_kib(a.pid)}", flush=True)
    print(f"deliveries {a.appends * a.subscribers}", flush=True)


if __name__ == "__main__":
    main()
