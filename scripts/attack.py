#!/usr/bin/env python3
"""Floods a tilld hub the way a client on the shop's guest Wi-Fi could, and prints what each
flood did to it: memory (VmRSS), whether others were still served, what was refused.

    scripts/attack.py path/to/tilld

Starts its own hub on 127.0.0.1 with a fresh data directory; every flood is bounded in count
and time and only targets 127.0.0.x. Used to measure the hardening issue's before/after.
"""
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def connect(port, src="127.0.0.1", timeout=5, rcvbuf=None):
    s = socket.socket()
    s.settimeout(timeout)
    if rcvbuf:
        # A reader that never reads: a small window, so the node's side fills quickly.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def ws_open(port, src, query="", rcvbuf=None):
    s = connect(port, src, timeout=2, rcvbuf=rcvbuf)
    s.sendall(
        f"GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return s, head.startswith(b"HTTP/1.1 101")


def frame(opcode, fin, payload):
    out = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        out.append(0x80 | n)
    elif n < 65536:
        out.append(0x80 | 126)
        out += n.to_bytes(2, "big")
    else:
        out.append(0x80 | 127)
        out += n.to_bytes(8, "big")
    mask = b"\x01\x02\x03\x04"
    out += mask
    out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out)


def status_ms(port, src="127.0.0.200"):
    start = time.time()
    try:
        s = connect(port, src, timeout=10)
        s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = s.recv(100)
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError as e:
        return f"failed ({e})"
    return f"{(time.time() - start) * 1000:.1f} ms" if ok else f"answered {data[:30]!r}"


def main():
    binary = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    data = tempfile.mkdtemp()
    # The node inherits a 1,024 open-file limit, as a default systemd service or shell has.
    hub = subprocess.Popen(
        ["prlimit", "--nofile=1024:1024", binary, "--role", "hub", "--listen", "127.0.0.1:0", "--data", data],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    url = hub.stdout.readline().strip().removeprefix("listening on ")
    port = int(url.rsplit(":", 1)[1])
    pid = int(subprocess.check_output(["pgrep", "-P", str(hub.pid)]).split()[0]) if False else hub.pid
    results = []

    def note(what, outcome):
        results.append((what, outcome))
        print(f"- {what}: {outcome}", flush=True)

    base = rss_mib(pid)
    note("idle hub", f"RSS {base:.1f} MiB; /api/status {status_ms(port)}")

    # 1. Unfinished fragmented /ws messages.
    socks = []
    cut = 0
    for i in range(40):
        s, ok = ws_open(port, f"127.0.0.{10 + i % 4}")
        socks.append(s)
        chunk = frame(1, False, b"x" * 65000)
        more = frame(0, False, b"x" * 65000)
        try:
            s.sendall(chunk)
            for _ in range(1000):  # up to 64 MB per connection
                s.sendall(more)
        except OSError:
            cut += 1
    time.sleep(1)
    note("40 connections each sending an unfinished 64 MB /ws message",
         f"{cut} cut off; RSS {rss_mib(pid):.1f} MiB; /api/status {status_ms(port)}")
    for s in socks:
        s.close()

    # 2. Idle /ws subscribers from 20 addresses.
    socks = []
    held = 0
    misses = 0
    for i in range(2000):
        try:
            s, ok = ws_open(port, f"127.0.1.{1 + i % 20}")
            socks.append(s)
            held += ok
            misses = 0 if ok else misses + 1
        except OSError:
            misses += 1
        if misses >= 20:
            break  # the node stopped answering handshakes
    time.sleep(1)
    note("2,000 idle /ws subscribers from 20 addresses",
         f"{held} held; RSS {rss_mib(pid):.1f} MiB; /api/status {status_ms(port)}")
    for s in socks:
        s.close()
    time.sleep(1)

    # 3. Idle TCP connections from one address under the 1,024 file limit.
    socks = []
    for i in range(1100):
        try:
            socks.append(connect(port, "127.0.2.1"))
        except OSError:
            pass
    time.sleep(1)
    note("1,100 idle TCP connections from one address",
         f"RSS {rss_mib(pid):.1f} MiB; /api/status from another address {status_ms(port)}")
    for s in socks:
        s.close()
    time.sleep(1)

    # 4. Half-sent headers: how many are still open after 15 s.
    socks = []
    for i in range(500):
        try:
            s = connect(port, f"127.0.3.{1 + i % 10}")
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        except OSError:
            pass
    time.sleep(15)
    still = 0
    for s in socks:
        s.setblocking(False)
        try:
            still += s.recv(1) != b""
        except BlockingIOError:
            still += 1
        except OSError:
            pass
        s.close()
    note("500 half-sent request heads", f"{still} still open after 15 s")

    # 5. A subscriber that never reads while the hub writes.
    s, ok = ws_open(port, "127.0.4.1", "?node=stalled&role=till", rcvbuf=4096)
    shift = "shift-attack"
    post = lambda body: urllib.request.urlopen(urllib.request.Request(
        f"{url}/api/mutations", data=json.dumps(body).encode(), headers={"content-type": "application/json"}), timeout=30).read()
    mid = lambda: __import__("uuid").uuid4().__str__()
    post({"mutations": [{"mid": mid(), "table": "pos_shift", "action": "save", "row": {"id": shift, "node_id": "x", "cashier": "x", "opened_at": "2026-11-24T12:00:00Z"}}]})
    orders = [f"o{i}" for i in range(150)]
    post({"mutations": [{"mid": mid(), "table": "order_header", "action": "insert", "row": {"id": o, "shift_id": shift, "opened_at": "2026-11-24T12:00:00Z"}} for o in orders]})
    started = time.time()
    gone_after = None
    lag = 0
    writes = 0
    while time.time() - started < 40:
        post({"mutations": [{"mid": mid(), "table": "order_header", "action": "merge", "row": {"id": o, "note": "n" * 400 + str(time.time())}} for o in orders]})
        writes += len(orders)
        m = json.loads(urllib.request.urlopen(f"{url}/api/metrics", timeout=10).read())
        subs = [x for x in m.get("subscribers", []) if x.get("node_id") == "stalled"]
        if not subs:
            gone_after = time.time() - started
            break
        lag = max(lag, m.get("seq", 0) - subs[0].get("seq", 0)) if "seq" in m else lag
    note("a /ws subscriber that stops reading while the hub writes 150 changes per request",
         f"dropped after {gone_after:.1f} s ({writes} changes written)" if gone_after
         else f"still registered after 40 s and {writes} changes")
    s.close()
    hub.kill()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
