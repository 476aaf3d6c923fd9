// Starts real Capsule POS nodes (a hub and tills) as child processes for the browser test.
import { spawn } from 'node:child_process';
import { mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** TILLD_BIN, else $CARGO_TARGET_DIR/debug/tilld, else <repo>/target/debug/tilld. */
export function tilldBin() {
  if (process.env.TILLD_BIN) return resolve(REPO, process.env.TILLD_BIN);
  const target = process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : join(REPO, 'target');
  return join(target, 'debug', 'tilld');
}

export const UI_DIST = join(REPO, 'ui', 'dist');

/**
 * Starts one node and resolves with { url, proc, log } once it prints its listening line.
 * @param {string[]} args role-specific arguments
 */
export function startNode(name, args, { timeoutMs = 30000, data = undefined } = {}) {
  const bin = tilldBin();
  if (!existsSync(bin)) throw new Error(`node binary not found: ${bin} (build it, or set TILLD_BIN)`);
  // A node restarted on its own disk passes the data directory it had.
  data ??= mkdtempSync(join(tmpdir(), `capsule-${name}-`));
  const full = [...args, '--data', data, '--listen', '127.0.0.1:0', '--ui', UI_DIST];
  const proc = spawn(bin, full, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
  const log = [];
  const keep = (line) => {
    log.push(line);
    if (log.length > 200) log.shift();
  };
  createInterface({ input: proc.stderr }).on('line', keep);
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${name} did not start in ${timeoutMs} ms:\n${log.join('\n')}`)), timeoutMs);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`${name} exited with ${code}:\n${log.join('\n')}`));
    });
    createInterface({ input: proc.stdout }).on('line', (line) => {
      keep(line);
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        ok({ name, url: m[1], proc, log, data });
      }
    });
  });
}

export function stopNode(n) {
  if (!n) return;
  try {
    n.proc.kill('SIGKILL');
  } catch {
    /* already gone */
  }
  try {
    rmSync(n.data, { recursive: true, force: true });
  } catch {
    /* ignore */
  }
}
