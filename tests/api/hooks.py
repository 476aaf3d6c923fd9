"""Schemathesis hooks for the Capsule POS API fuzz run (loaded by scripts/api-fuzz).

Adds two checks to schemathesis' own: every error answer is JSON `{"error": "..."}`, and a
refused request leaves the node's synced data exactly as it was (a digest of every synced
table, read straight from the node's SQLite file before and after the call); and, in the run
without credentials (CAPSULE_ANONYMOUS=1), every route but the public ones answers 401."""

import hashlib
import json
import os
import sqlite3

import schemathesis

DB = os.environ["CAPSULE_DB"]
TABLES = json.loads(os.environ["CAPSULE_TABLES"])
_before = {"digest": None}


def digest() -> str:
    con = sqlite3.connect(f"file:{DB}?mode=ro", uri=True, timeout=10)
    try:
        h = hashlib.sha256()
        for t in TABLES:
            h.update(t.encode())
            for row in con.execute(f'SELECT * FROM "{t}" ORDER BY id'):
                h.update(repr(row).encode())
        return h.hexdigest()
    finally:
        con.close()


@schemathesis.hook
def before_call(context, case, kwargs):
    _before["digest"] = digest()


@schemathesis.check
def errors_are_json_and_change_nothing(ctx, response, case):
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError as e:
        raise AssertionError(f"{response.status_code} answer is not JSON: {response.content[:200]!r}") from e
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        raise AssertionError(f"{response.status_code} answer has no error text: {body!r}")
    before = _before["digest"]
    if before is not None and digest() != before:
        raise AssertionError(f"a refused request ({response.status_code}) changed the stored data")
    return None


# What a caller without credentials may reach on a paired node (crates/server/src/access.rs),
# besides every path outside /api, /ws and /metrics.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/api/pair"),
    ("POST", "/api/pair/hello"),
    ("POST", "/api/pair/finish"),
}


@schemathesis.check
def refused_without_credentials(ctx, response, case):
    if os.environ.get("CAPSULE_ANONYMOUS") != "1":
        return None
    api = case.path.startswith(("/api", "/ws")) or case.path == "/metrics"
    if not api or (case.method.upper(), case.path) in PUBLIC:
        # The UI's files (and /healthz) are public whatever the method.
        return None
    if response.status_code != 401:
        raise AssertionError(
            f"{case.method.upper()} {case.path} answered {response.status_code} without credentials"
        )
    return None
