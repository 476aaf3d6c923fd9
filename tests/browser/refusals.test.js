// The manager sees the truth about refused writes: grouped by what can be done about them, in
// words a manager understands, with "Discard all" where nothing is lost (issue 22). A till's
// outbox holds writes a hub refused as a replay after a hub change leaves them.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { REPO, startNode, stopNode } from './nodes.js';

const SHOTS = join(REPO, 'test-artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** Puts refused writes in a stopped node's outbox, each with the hub's own words. */
function seedRefusals(data) {
  const py = `
import json, sqlite3, sys, time, uuid
c = sqlite3.connect(sys.argv[1] + "/node.sqlite3")
def add(tbl, err):
    mid = str(uuid.uuid4())
    c.execute("INSERT INTO _outbox(mid, request, tbl, action, mutation, queued_at, state, attempts, error) VALUES (?,?,?,?,?,?,?,?,?)",
      (mid, str(uuid.uuid4()), tbl, "insert", json.dumps({"mid": mid, "table": tbl, "action": "insert", "row": {"id": mid}}), int(time.time() * 1000), "rejected", 1, err))
for i in range(80): add("menu_item", "409: mutation 0: menu_item 'item-%d' already exists" % i)
for i in range(4): add("menu_modifier", "409: mutation 0: menu_modifier 'mod-%d' already exists" % i)
for i in range(3): add("order_header", "409: mutation 0: order 'o%d' was counted in Z report #1: a closed day's orders cannot change" % i)
add("order_line", "400: mutation 0: 'qty' must be between 1 and 10000, got 0")
c.commit()
`;
  const r = spawnSync('python3', ['-c', py, data], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

describe('refused writes on the dashboard', { timeout: 90000 }, () => {
  let hub, till, browser;
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    hub = await startNode('hub', ['--role', 'hub', '--demo']);
    const first = await startNode('till', ['--role', 'till', '--hub', hub.url]);
    const data = first.data;
    first.proc.kill('SIGKILL');
    await new Promise((ok) => first.proc.once('exit', ok));
    seedRefusals(data);
    till = await startNode('till', ['--role', 'till', '--hub', hub.url], { data });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    stopNode(till);
    stopNode(hub);
  });

  for (const [width, height] of [[800, 480], [1280, 800]]) {
    for (const lang of ['en', 'ar']) {
      it(`explains them in groups at ${width}x${height} in ${lang}`, async () => {
        const page = await browser.newPage({ viewport: { width, height } });
        await page.addInitScript((l) => localStorage.setItem('capsule.lang', l), lang);
        await page.goto(`${till.url}/#/dashboard`);
        await page.waitForSelector('[data-testid=refusal-group]', { timeout: 15000 });
        const kinds = await page.$$eval('[data-testid=refusal-group]', (g) => g.map((x) => x.dataset.kind));
        assert.deepEqual(kinds, ['closed_day', 'already', 'other']);
        const already = await page.textContent('[data-kind=already]');
        assert.match(already, lang === 'en' ? /Already at the hub: 84 \(80 menu items, 4 modifiers\)/ : /٨٤/);
        assert.match(await page.textContent('[data-kind=closed_day]'), /#1|#١/);
        // Only the one refused for another reason is listed on its own, with its buttons.
        assert.equal(await page.locator('[data-testid=outbox-rejected-entry]').count(), 1);
        await page.locator('[data-testid=outbox]').scrollIntoViewIfNeeded();
        await page.screenshot({ path: join(SHOTS, `refusals-${width}x${height}-${lang}.png`) });
        await page.close();
      });
    }
  }

  it('discards all 84 writes already at the hub at once, and only those', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${till.url}/#/dashboard`);
    await page.click('[data-kind=already] [data-testid=discard-all]');
    await page.waitForFunction(() => !document.querySelector('[data-kind=already]'), null, { timeout: 20000 });
    const kinds = await page.$$eval('[data-testid=refusal-group]', (g) => g.map((x) => x.dataset.kind));
    assert.deepEqual(kinds, ['closed_day', 'other']);
    const status = await (await fetch(`${till.url}/api/status`)).json();
    assert.equal(status.rejected, 4);
    await page.close();
  });
});
