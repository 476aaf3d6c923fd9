#!/usr/bin/env python3
"""End-to-end test of the Capsule POS desktop app (Tauri) under Xvfb, over W3C WebDriver.

Builds the app (debug) and tilld, starts Xvfb and tauri-driver (which drives Debian's
WebKitWebDriver), then:
  1. the app as a demo hub: the window shows the dashboard, the header says HUB;
  2. the app as a till following a headless tilld hub: the window shows the till screen, the
     header says TILL and online; opening a shift through the UI goes node_request -> till ->
     hub, the till's /ws frames arrive in the page as `node_frame` events, and the open-orders
     list and the menu grid appear;
  3. the app as a new till of a paired shop: its first screen asks for a pairing code (en and
     ar), and the code the manager PC shows makes it the shop's till, online, with no restart.
Measures launch-to-usable time (WebDriver new-session, which launches the app, until the
screen is usable), saves screenshots (X display and webview) to
test-artifacts/screenshots/desktop-*.png and checks they are not blank.

Standard library only. Needs: Xvfb, WebKitWebDriver (webkit2gtk-driver), tauri-driver
(cargo install tauri-driver --locked), ImageMagick `import`. scripts/desktop --test installs
them. Options: --no-build (use binaries already built), --keep (keep temp data dirs).
Prints `N passed, M failed` last; exits 1 if anything failed.
"""

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
if not os.path.isabs(TARGET):
    TARGET = os.path.join(ROOT, TARGET)
APP = os.path.join(TARGET, "debug", "capsule-pos")
TILLD = os.path.join(TARGET, "debug", "tilld")
SHOTS = os.path.join(ROOT, "test-artifacts", "screenshots")
TIMEOUT = 60  # seconds for any one wait

results = []  # (name, ok, detail)
procs = []


def log(msg):
    print(f"[desktop] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, **kw):
    p = subprocess.Popen(args, start_new_session=True, **kw)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# ---------------------------------------------------------------- W3C WebDriver over HTTP


class WebDriver:
    def __init__(self, url):
        self.url = url
        self.sid = None
        self.retries = 0

    def call(self, method, path, body=None, timeout=120):
        # tauri-driver keeps a pool of connections to WebKitWebDriver, which closes idle ones;
        # a request sent on a closed one fails at once ("client error (SendRequest)" in its
        # log) and we see the connection dropped without an answer. The request never reached
        # WebKitWebDriver, so sending it again is safe. (About 1 call in 30 under load.)
        for attempt in range(4):
            t = time.time()
            try:
                return self._call(method, path, body, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError) as e:
                if attempt == 3 or time.time() - t > 2:
                    raise
                self.retries += 1
                log(f"retrying {method} {path} after {type(e).__name__}")
                time.sleep(0.2)

    def _call(self, method, path, body, timeout):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                v = json.loads(raw)["value"]
                raise RuntimeError(f"WebDriver {method} {path}: {v.get('error')}: {v.get('message')}")
            except (ValueError, KeyError, AttributeError):
                raise RuntimeError(f"WebDriver {method} {path}: HTTP {e.code} {raw[:300]!r}")

    def s(self, method, path, body=None, timeout=120):
        return self.call(method, f"/session/{self.sid}{path}", body, timeout)["value"]

    def new_session(self, app, args):
        caps = {"capabilities": {"alwaysMatch": {
            "tauri:options": {"application": app, "args": args}}}}
        self.sid = self.call("POST", "/session", caps)["value"]["sessionId"]

    def end(self):
        if self.sid:
            try:
                self.call("DELETE", f"/session/{self.sid}", timeout=30)
            except Exception as e:  # the app may be gone already
                log(f"ending session: {e}")
            self.sid = None

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        return self.s("POST", "/execute/async", {"script": script, "args": list(args)})

    def find(self, css):
        v = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(v.values()))

    def type(self, css, text):
        el = self.find(css)
        self.s("POST", f"/element/{el}/clear", {})
        self.s("POST", f"/element/{el}/value", {"text": text})

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def wait(self, what, script, *args, timeout=TIMEOUT):
        """Polls `script` until it returns something truthy; returns it."""
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                last = self.js(script, *args)
                if last:
                    return last
            except RuntimeError as e:
                last = str(e)
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# ---------------------------------------------------------------- checks

PAGE_STATE = """
const q = (s) => document.querySelector(s);
const shell = q('.shell');
return {
  screen: shell ? shell.dataset.screen : null,
  role: (q('[data-testid=node-info] .role-badge') || {}).textContent || null,
  conn: (q('[data-testid=conn-state]') || { dataset: {} }).dataset.state || null,
  tauri: !!window.__TAURI_INTERNALS__,
  text: document.body ? document.body.innerText.slice(0, 2000) : '',
};
"""

# Registers a `node_frame` listener the way @tauri-apps/api does, counting frames in the page.
LISTEN_FRAMES = """
const done = arguments[arguments.length - 1];
const T = window.__TAURI_INTERNALS__;
window.__frames = [];
const handler = T.transformCallback((e) => {
  const p = e.payload;
  window.__frames.push(typeof p === 'string' ? JSON.parse(p) : p);
});
T.invoke('plugin:event|listen', { event: 'node_frame', target: { kind: 'Any' }, handler })
  .then(() => done('ok'), (err) => done('error: ' + err));
"""

NODE_INFO = """
const done = arguments[arguments.length - 1];
window.__TAURI_INTERNALS__.invoke('node_info').then((x) => done(x), (e) => done('error: ' + e));
"""


def not_blank(path):
    """The image has real content: many distinct colours, not one flat fill."""
    out = subprocess.run(["identify", "-format", "%k %w %h", path],
                         capture_output=True, text=True, check=True).stdout.split()
    colors, w, h = int(out[0]), int(out[1]), int(out[2])
    assert colors >= 64, f"{path} looks blank: {colors} distinct colours ({w}x{h})"
    return colors


def shoot(wd, display, name, t0=None):
    """Screenshots of the X display and of the webview; both must show content. The X display
    lags the DOM a little (WebKit paints asynchronously), so capture until it shows content
    and is stable. Returns seconds since t0 (launch) when the display showed it, if given."""
    os.makedirs(SHOTS, exist_ok=True)
    root = os.path.join(SHOTS, f"desktop-{name}.png")
    view = os.path.join(SHOTS, f"desktop-{name}-webview.png")
    wd.screenshot(view)
    c2 = not_blank(view)
    end = time.time() + 20
    prev = None
    while True:
        subprocess.run(["import", "-display", display, "-window", "root", root],
                       check=True, capture_output=True, timeout=30)
        t = time.time()
        with open(root, "rb") as f:
            cur = f.read()
        try:
            c1 = not_blank(root)
            if cur == prev:
                break
        except AssertionError:
            if t > end:
                raise
        if t > end:
            break
        prev = cur
        time.sleep(0.3)
    log(f"screenshots: {root} ({c1} colours), {view} ({c2} colours)")
    return None if t0 is None else t - t0


def launch(wd, args):
    """New WebDriver session = launch the app; returns (seconds to first page state, state)."""
    t0 = time.time()
    wd.new_session(APP, args)
    t_session = time.time() - t0
    return t0, t_session


def case_hub(wd, display, tmp):
    data = os.path.join(tmp, "hub-app")
    t0, t_session = launch(wd, ["--role", "hub", "--demo", "--data", data])
    state = wd.wait("the dashboard with the demo's open orders, online",
                    PAGE_STATE.replace("return {", "const r = {") +
                    "return r.screen === 'dashboard' && document.querySelector("
                    "'[data-testid=day]') && /[1-9]/.test((document.querySelector("
                    "'[data-testid=stat-open-orders]') || {}).textContent || '') && "
                    "r.conn === 'online' ? r : null;")
    usable = time.time() - t0
    assert state["tauri"], "the page does not see the Tauri IPC"
    assert state["role"] and state["role"].strip().upper() == "HUB", f"header role: {state['role']!r}"
    open_orders = wd.js("return document.querySelector('[data-testid=stat-open-orders]').textContent")
    assert re.search(r"[1-9]", open_orders or ""), f"demo hub shows no open orders: {open_orders!r}"
    # The node's details (the stream's transport among them) are on the Diagnostics page.
    wd.js("location.hash = '#/diagnostics';")
    wd.wait("the diagnostics page reporting the tauri transport",
            "const s = document.querySelector('[data-testid=node-status]');"
            "return s && /tauri/.test(s.innerText) ? true : null;")
    wd.js("location.hash = '#/dashboard';")
    info = wd.js_async(NODE_INFO)
    assert isinstance(info, dict) and info.get("role") == "hub", f"node_info: {info!r}"
    assert info["url"].startswith("http://127.0.0.1:"), f"node_info url: {info!r}"
    assert os.path.isfile(os.path.join(data, "node.sqlite3")), "no database in --data dir"
    pixels = shoot(wd, display, "hub-dashboard", t0)
    return {"session_s": t_session, "usable_s": usable, "on_screen_s": pixels,
            "open_orders": open_orders.strip()}


def case_till(wd, display, tmp):
    hub_dir = os.path.join(tmp, "hub-headless")
    hub = spawn([TILLD, "--role", "hub", "--demo", "--listen", "127.0.0.1:0", "--data", hub_dir],
                stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "tilld.log"), "w"),
                text=True, cwd=tmp)
    line = hub.stdout.readline()
    m = re.search(r"listening on (http://\S+)", line)
    assert m, f"tilld did not print its URL: {line!r}"
    hub_url = m.group(1)
    log(f"headless hub at {hub_url}")

    data = os.path.join(tmp, "till-app")
    t0, t_session = launch(wd, ["--role", "till", "--hub", hub_url, "--data", data])
    state = wd.wait("the till screen, online",
                    PAGE_STATE.replace("return {", "const r = {") +
                    "return r.screen === 'till' && r.conn === 'online' && document.querySelector("
                    "'[data-testid=open-shift-form], [data-testid=open-orders]') ? r : null;")
    usable = time.time() - t0
    assert state["role"] and state["role"].strip().upper() == "TILL", f"header role: {state['role']!r}"
    assert hub_url.replace("http://", "") in state["text"], "header does not show the hub"
    info = wd.js_async(NODE_INFO)
    assert isinstance(info, dict) and info.get("role") == "till", f"node_info: {info!r}"
    pixels = shoot(wd, display, "till-start", t0)

    # Frames: listen like the UI does, then write through the UI.
    assert wd.js_async(LISTEN_FRAMES) == "ok", "cannot listen to node_frame"
    if wd.js("return !!document.querySelector('[data-testid=open-shift-form]')"):
        wd.type("[data-testid=open-shift-form] input[name=cashier]", "Desktop Test")
        wd.type("[data-testid=open-shift-form] input[name=float]", "100")
        wd.click("[data-testid=open-shift-form] button[type=submit]")
    wd.wait("the open-orders list", "return !!document.querySelector('[data-testid=open-orders]')")
    frames = wd.wait("node_frame events after opening a shift",
                     "return (window.__frames || []).length ? window.__frames : null")
    kinds = sorted({f.get("type") for f in frames if isinstance(f, dict)})
    assert kinds and set(kinds) <= {"hello", "capsule", "capsules", "rows", "lagged", "too_old", "reset"}, \
        f"unexpected frames: {frames[:3]!r}"
    # The shift reached the hub (the till forwards its writes).
    with urllib.request.urlopen(hub_url + "/api/tables/pos_shift", timeout=10) as r:
        shifts = json.loads(r.read())["rows"]
    assert any("Desktop Test" in json.dumps(s) for s in shifts), "the shift did not reach the hub"
    # A new order shows the menu grid.
    wd.click("[data-testid=new-order]")
    grid = wd.wait("the menu grid",
                   "const g = document.querySelector('.menu-grid');"
                   "return g && g.querySelectorAll('button').length > 3 ? g.querySelectorAll('button').length : null;",
                   timeout=20)
    shoot(wd, display, "till-order")
    return {"session_s": t_session, "usable_s": usable, "on_screen_s": pixels, "frames": len(frames), "frame_types": kinds,
            "menu_buttons": grid}


def start_hub(tmp, name):
    """A headless demo hub on a free port; returns (process, url, data dir)."""
    data = os.path.join(tmp, name)
    hub = spawn([TILLD, "--role", "hub", "--demo", "--name", "Manager PC", "--listen", "127.0.0.1:0",
                 "--data", data],
                stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, f"{name}.log"), "w"),
                text=True, cwd=tmp)
    line = hub.stdout.readline()
    m = re.search(r"listening on (http://\S+)", line)
    assert m, f"tilld did not print its URL: {line!r}"
    return hub, m.group(1), data


def pair_code(hub_url, hub_data):
    """A pairing code from the hub, as its own dashboard's "Add a device" asks (launch key)."""
    with open(os.path.join(hub_data, "local.key")) as f:
        key = f.read().strip()
    req = urllib.request.Request(hub_url + "/api/pair/offer", data=b"{}", method="POST",
                                 headers={"authorization": f"Bearer {key}",
                                          "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["code"]


def case_till_joins(wd, display, tmp):
    """A new till of a paired shop: its first screen asks for a code, and pairing there makes
    it a till of the shop, online, without a restart."""
    _, hub_url, hub_data = start_hub(tmp, "hub-paired")
    # The shop is paired already: a first device joined it from the command line.
    code = pair_code(hub_url, hub_data)
    subprocess.run([TILLD, "pair", "--code", code, "--peer", hub_url, "--data",
                    os.path.join(tmp, "till-1"), "--name", "Till 1", "--role", "till"],
                   check=True, capture_output=True, timeout=60)
    t0, _ = launch(wd, ["--role", "till", "--hub", hub_url, "--data", os.path.join(tmp, "till-app-2"),
                        "--name", "Till 2"])
    wd.wait("the till's first screen asking for a pairing code",
            "return !!document.querySelector('[data-testid=till-not-paired] [data-testid=join-shop]')")
    peer = wd.js("return document.querySelector('[data-testid=join-peer]').value")
    assert peer == hub_url, f"the hub's address is not prefilled: {peer!r}"
    for lang in ("ar", "en"):
        wd.click("[data-testid=lang-toggle]")
        wd.wait(f"the page in {lang}", "return document.documentElement.lang === arguments[0] || null", lang)
        time.sleep(0.3)
        shoot(wd, display, f"till-not-paired-{'ar-rtl' if lang == 'ar' else 'en'}")
    wd.type("[data-testid=join-code]", pair_code(hub_url, hub_data))
    wd.click("[data-testid=join-button]")
    state = wd.wait("the till screen, online, once paired",
                    PAGE_STATE.replace("return {", "const r = {") +
                    "return r.screen === 'till' && r.conn === 'online' && "
                    "!document.querySelector('[data-testid=till-not-paired]') && document.querySelector("
                    "'[data-testid=open-shift-form], [data-testid=open-orders]') ? r : null;")
    paired = time.time() - t0
    shoot(wd, display, "till-paired")
    return {"paired_online_s": paired, "role": (state["role"] or "").strip()}


def run_case(name, fn, *args):
    t = time.time()
    wd = args[0]
    try:
        assert procs[0].poll() is None, "Xvfb has exited"
        info = fn(*args)
        results.append((name, True, info))
        log(f"PASS {name} ({time.time() - t:.1f}s) {json.dumps(info)}")
    except Exception as e:
        detail = f"{type(e).__name__}: {e}"
        results.append((name, False, detail))
        log(f"FAIL {name}: {detail}")
        traceback.print_exc()
        try:
            st = wd.js(PAGE_STATE)
            log(f"page state: {json.dumps(st)[:1500]}")
            os.makedirs(SHOTS, exist_ok=True)
            wd.screenshot(os.path.join(SHOTS, f"desktop-{name}-failed.png"))
        except Exception:
            pass
    finally:
        wd.end()


def start_xvfb(tmp):
    """Xvfb on the first free display from :90 (away from desktops and other tests)."""
    for n in range(90, 190):
        if os.path.exists(f"/tmp/.X{n}-lock") or os.path.exists(f"/tmp/.X11-unix/X{n}"):
            continue
        p = spawn(["Xvfb", f":{n}", "-screen", "0", "1400x860x24", "-nolisten", "tcp", "-noreset"],
                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"xvfb-{n}.log"), "w"))
        end = time.time() + 10
        while p.poll() is None and time.time() < end:
            if os.path.exists(f"/tmp/.X11-unix/X{n}"):
                time.sleep(0.2)
                if p.poll() is None:
                    return p, f":{n}"
            time.sleep(0.05)
        stop(p)  # lost a race for this display: try the next
    raise RuntimeError("cannot start Xvfb")


def build():
    if not os.path.isfile(os.path.join(ROOT, "ui", "dist", "index.html")):
        log("building the UI")
        subprocess.run(["npm", "run", "build"], cwd=os.path.join(ROOT, "ui"), check=True)
    t = time.time()
    subprocess.run(["cargo", "build", "-p", "capsule-desktop", "--bin", "capsule-pos"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "-p", "capsule-pos", "--bin", "tilld"], cwd=ROOT, check=True)
    log(f"build took {time.time() - t:.1f}s")


def main():
    argv = sys.argv[1:]
    if "--no-build" not in argv:
        build()
    for exe in (APP, TILLD):
        assert os.path.isfile(exe), f"missing {exe} (build it or set CARGO_TARGET_DIR)"
    for tool in ("Xvfb", "WebKitWebDriver", "tauri-driver", "import", "identify"):
        if not shutil.which(tool):
            sys.exit(f"desktop test: {tool} not found; run scripts/desktop --test")
    tmp = tempfile.mkdtemp(prefix="capsule-desktop-test-")
    try:
        xvfb, display = start_xvfb(tmp)
        log(f"Xvfb on {display}")
        env = dict(os.environ, DISPLAY=display)
        env.pop("WAYLAND_DISPLAY", None)
        port, native = free_port(), free_port()
        spawn(["tauri-driver", "--port", str(port), "--native-port", str(native),
               "--native-driver", shutil.which("WebKitWebDriver")],
              env=env, stdout=open(os.path.join(tmp, "tauri-driver.log"), "w"), stderr=subprocess.STDOUT)
        wd = WebDriver(f"http://127.0.0.1:{port}")
        end = time.time() + 20
        while True:
            try:
                wd.call("GET", "/status", timeout=2)
                break
            except Exception:
                if time.time() > end:
                    raise
                time.sleep(0.2)
        run_case("hub-dashboard", case_hub, wd, display, tmp)
        run_case("till", case_till, wd, display, tmp)
        run_case("till-joins", case_till_joins, wd, display, tmp)
        _ = xvfb
    finally:
        for p in reversed(procs):
            stop(p)
        if "--keep" in argv:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    passed = sum(1 for r in results if r[1])
    failed = len(results) - passed
    for name, ok, detail in results:
        if ok and isinstance(detail, dict) and "usable_s" in detail:
            log(f"{name}: launch-to-usable {detail['usable_s']:.2f}s (DOM ready and online; "
                f"WebDriver session/app start {detail['session_s']:.2f}s; "
                f"stable on the X display {detail['on_screen_s']:.2f}s)")
    # TAP-style counts for scripts/test's closing tally, then the summary line.
    print(f"# pass {passed}\n# fail {failed}")
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not results else 0)


if __name__ == "__main__":
    main()
