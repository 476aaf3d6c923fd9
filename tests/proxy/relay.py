#!/usr/bin/env python3
"""A relaying man in the middle for the pairing tests: forwards HTTP between a joining device
and the device showing the code. With a device id argument it puts that id in place of the
joiner's in every message that names one (trying to get itself paired with the joiner's code);
without, it relays as is. Prints "listening on PORT" once ready."""
import http.server
import json
import sys
import urllib.error
import urllib.request

TARGET = sys.argv[1].rstrip("/")
ATTACKER = sys.argv[2] if len(sys.argv) > 2 else None


class Relay(http.server.BaseHTTPRequestHandler):
    def relay(self, body=None):
        req = urllib.request.Request(
            TARGET + self.path,
            data=body,
            method=self.command,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                code, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            code, data = e.code, e.read()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.relay()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if ATTACKER and "joiner" in body:
            body["joiner"] = ATTACKER
        self.relay(json.dumps(body).encode())

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Relay)
print("listening on", server.server_port, flush=True)
server.serve_forever()
