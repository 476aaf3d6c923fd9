#!/usr/bin/env python3
"""Measures hub failover with real `tilld --role auto` processes on 127.0.0.1.

Three nodes (the manager's PC with priority 10, two tills) sell continuously through the
tills while the hub is SIGKILLed again and again (default 20 times); each killed node is
restarted and must catch up before the next kill. Prints, per kill, the time from the kill
until another node serves as hub and the surviving till follows it online, then the median
and maximum, and the sales written versus found at the hub (lost, doubled).

With --freeze S the hub is frozen instead (SIGSTOP for S seconds, then SIGCONT, as a PC that
hangs and wakes), 4 writers sell (three through the tills, one straight to whichever node it
last saw as hub, as a screen still pointed at the old hub would), and it also prints the writes
the woken hub accepted while another node served as hub (must be 0) and how long after each
thaw every outbox was empty again.

Usage: scripts/failover.py [--kills N] [--freeze S] [--bin target/release/tilld]
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

T = "2026-11-25T12:00:00Z"
LOGS = os.environ.get("FAILOVER_LOGS") is not None


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def call(url, body=None, timeout=2.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (OSError, ValueError):
        return None, None


class Node:
    def __init__(self, binary, data, port, peers, name, extra):
        self.url = f"http://127.0.0.1:{port}"
        self.args = [binary, "--role", "auto", "--name", name, "--data", data,
                     "--listen", f"127.0.0.1:{port}", "--no-mdns", *extra]
        for p in peers:
            self.args += ["--peer", f"http://127.0.0.1:{p}"]
        self.proc = None
        self.start()

    def start(self):
        log = open(self.args[self.args.index("--data") + 1] + ".log", "a") if LOGS else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=log)
        self.proc.stdout.readline()  # "listening on ..."

    def kill(self):
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def pause(self, on):
        self.proc.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def status(self):
        return call(self.url + "/api/status", timeout=1.0)[1] or {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--freeze", type=float, default=0.0,
                    help="freeze the hub this many seconds instead of killing it")
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--bin", default=f"{target}/release/tilld")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="capsule-failover-")
    ports = [free_port() for _ in range(3)]
    names = ["Manager PC", "Till 1", "Till 2"]
    nodes = []
    for i, name in enumerate(names):
        extra = ["--priority", "10"] if i == 0 else []
        # No handback during the measurement: every kill is of a hub that is serving.
        extra += ["--handback-quiet-ms", "3600000"]
        peers = [p for p in ports if p != ports[i]]
        nodes.append(Node(args.bin, os.path.join(tmp, f"n{i}"), ports[i], peers, name, extra))

    def hub():
        for n in nodes:
            if n.status().get("role") == "hub":
                return n
        return None

    def wait(cond, what, limit=60):
        start = time.time()
        while not cond():
            if time.time() - start > limit:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.02)

    wait(lambda: hub() is not None and all(
        n.status().get("state") == "online" for n in nodes), "a first hub")
    shift = str(uuid.uuid4())
    h = hub()
    call(h.url + "/api/mutations", {"mutations": [{"mid": str(uuid.uuid4()), "table": "pos_shift",
         "action": "save", "row": {"id": shift, "node_id": "till-1", "cashier": "Mona", "opened_at": T}}]})

    sold, refused, stop = [], [0], threading.Event()
    # Per node: when it answered a write 200 (the woken hub's answers are checked below).
    answered = {n.url: [] for n in nodes}
    lock = threading.Lock()

    def sale(n):
        order = str(uuid.uuid4())
        code, body = call(n.url + "/api/mutations", {"mutations": [
            {"mid": str(uuid.uuid4()), "table": "order_header", "action": "insert",
             "row": {"id": order, "shift_id": shift, "opened_at": T}},
            {"mid": str(uuid.uuid4()), "table": "order_line", "action": "insert",
             "row": {"id": str(uuid.uuid4()), "order_id": order, "name_en": "Coffee",
                     "qty": 1, "unit_price": 1200, "created_at": T}}]})
        with lock:
            if code in (200, 202):
                sold.append(order)
                if code == 200:
                    # The version it was given says which term's hub took it.
                    seq = ((body or {}).get("results") or [{}])[0].get("seq") or 0
                    answered[n.url].append((time.time(), seq))
                if LOGS:
                    print(f"  sold {order[:8]} at {n.url} -> {code}", flush=True)
            elif code is not None:
                refused[0] += 1

    def sell(w):
        k = w
        while not stop.is_set():
            sale(nodes[1 + k % 2])
            k += 1
            time.sleep(0.05)

    def sell_to_hub():
        # A client pointed at the node it last saw as hub, as a browser tab would be.
        target = hub() or nodes[0]
        while not stop.is_set():
            sale(target)
            st = target.status()
            if st and st.get("role") != "hub":
                target = hub() or target
            time.sleep(0.05)

    writers = [threading.Thread(target=sell, args=(w,), daemon=True) for w in range(3 if args.freeze else 1)]
    if args.freeze:
        writers.append(threading.Thread(target=sell_to_hub, daemon=True))
    for w in writers:
        w.start()
    times, double, settle = [], 0, []
    for k in range(args.kills):
        h = hub()
        while h is None:
            time.sleep(0.02)
            h = hub()
        others = [n for n in nodes if n is not h]
        t0 = time.time()
        if args.freeze:
            h.pause(True)
        else:
            h.kill()

        def taken():
            s = [n.status() for n in others]
            hubs = [n for n, st in zip(others, s) if st.get("role") == "hub"]
            if len(hubs) != 1:
                return False
            follower = [st for n, st in zip(others, s) if n is not hubs[0]][0]
            return follower.get("hub_url") == hubs[0].url and follower.get("state") == "online"

        wait(taken, f"failover {k + 1}")
        ms = (time.time() - t0) * 1000
        times.append(ms)
        what = "freeze" if args.freeze else "kill"
        print(f"{what} {k + 1:2}: {h.args[h.args.index('--name') + 1]:<10} failover {ms:7.0f} ms",
              end="", flush=True)
        if args.freeze:
            new_hub = hub()
            time.sleep(max(0.0, args.freeze - (time.time() - t0)))
            thawed = time.time()
            h.pause(False)
            # Writes the woken node accepted while the new hub still served as hub.
            wait(lambda: h.status().get("role") != "hub" or new_hub.status().get("role") != "hub",
                 f"{h.url} to settle after waking")
            new_term = new_hub.status().get("term", 0)
            with lock:
                # Taken after the thaw at a term older than the new hub's: by two hubs at once.
                woke = [t for t, seq in answered[h.url]
                        if t >= thawed and 0 < seq < new_term * 2**32]
            double += len(woke)
            wait(lambda: all(n.status().get("pending") == 0 and n.status().get("state") == "online"
                             or n.status().get("role") == "hub" for n in nodes),
                 "every outbox to drain after the thaw", 60)
            settle.append((time.time() - thawed) * 1000)
            print(f"   outboxes empty {settle[-1]:6.0f} ms after the thaw, "
                  f"{len(woke)} writes taken by the woken node at its old term", flush=True)
        else:
            print(flush=True)
            h.start()
            wait(lambda: h.status().get("state") == "online" and h.status().get("role") != "hub"
                 and h.status().get("pending") == 0, f"{h.url} to rejoin")
    stop.set()
    for w in writers:
        w.join()
    h = hub()
    wait(lambda: all(n.status().get("pending") == 0 for n in nodes), "every outbox to drain", 120)
    set_aside = sum(n.status().get("rejected", 0) for n in nodes)
    _, table = call(h.url + "/api/tables/order_header", timeout=10)
    ids = [r["id"] for r in table["rows"]]
    found = set(ids)
    lost = [o for o in sold if o not in found]
    if lost:
        print(f"lost: {lost} (data in {tmp})")
    print()
    terms = max(n.status().get("term", 0) for n in nodes)
    print("| faults | failover median | failover max | sales written | found at hub | lost | doubled "
          "| refused at the till | set aside later | last term |" + (
              " taken by two hubs | outboxes empty after a thaw (max) |" if args.freeze else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.freeze else ""))
    print(f"| {len(times)} {'freezes' if args.freeze else 'kills'} | {statistics.median(times):.0f} ms "
          f"| {max(times):.0f} ms | {len(sold)} | "
          f"{len(found & set(sold))} | {len(lost)} | {len(ids) - len(found)} | {refused[0]} | {set_aside} "
          f"| {terms} |" + (f" {double} | {max(settle):.0f} ms |" if args.freeze else ""))
    for n in nodes:
        n.kill()


if __name__ == "__main__":
    main()
