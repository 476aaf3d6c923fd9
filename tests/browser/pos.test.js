// End-to-end: a real hub (--demo) and two tills, driven through Debian's chromium.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { REPO, UI_DIST, startNode, stopNode } from './nodes.js';

const SHOTS = join(REPO, 'test-artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const VIEWPORT = { width: 1366, height: 820 };
const T = 15000; // per-step wait

// playwright-core gives chromium a fresh temporary profile (--user-data-dir) of its own.
let hub, tillA, tillB, browser;
let pageA, pageB, pageHub;
let orderNo;

async function shot(page, name, fullPage = false) {
  await page.waitForTimeout(150);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}

async function setLang(page, lang) {
  const cur = await page.evaluate(() => document.documentElement.lang);
  // a DOM click: the toggle must work even under an open dialog's backdrop
  if (cur !== lang) await page.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
  await page.waitForFunction((l) => document.documentElement.lang === l, lang);
}

/** Screenshot the current screen in English, then Arabic (RTL), and back to English. */
async function shotBoth(page, name, fullPage = false) {
  await setLang(page, 'en');
  await shot(page, `${name}-en`, fullPage);
  await setLang(page, 'ar');
  assert.equal(await page.evaluate(() => document.documentElement.dir), 'rtl');
  await shot(page, `${name}-ar-rtl`, fullPage);
  await setLang(page, 'en');
}

async function openShift(page, cashier, float) {
  const form = page.getByTestId('open-shift-form');
  await form.waitFor({ timeout: T });
  await form.locator('input[name=cashier]').fill(cashier);
  await form.locator('input[name=float]').fill(float);
  await form.getByRole('button').click();
  await page.getByTestId('open-orders').waitFor({ timeout: T });
}

/** On a failure: what each node holds, so a CI log says why a screen did not show a value. */
async function dumpState(what, nodes, tables) {
  for (const [name, n] of Object.entries(nodes)) {
    for (const path of [...tables.map((t) => `/api/tables/${t}`), '/api/outbox', '/api/status']) {
      const body = await fetch(`${n.url}${path}`).then((r) => r.text(), (e) => String(e));
      console.error(`[${what}] ${name} ${path}: ${body.slice(0, 4000)}`);
    }
  }
}

function watchErrors(page, label) {
  page.on('pageerror', (e) => console.error(`[${label}] page error: ${e.message}`));
}

describe('Capsule POS in a browser', { timeout: 170000 }, () => {
  before(async () => {
    assert.ok(existsSync(join(UI_DIST, 'index.html')), `built UI missing at ${UI_DIST}: run npm run build in ui/`);
    mkdirSync(SHOTS, { recursive: true });
    // The test's printer listens on this computer, which a manager must allow.
    hub = await startNode('hub', ['--role', 'hub', '--demo', '--allow-printer', '127.0.0.1']);
    [tillA, tillB] = await Promise.all([
      startNode('till-a', ['--role', 'till', '--hub', hub.url]),
      startNode('till-b', ['--role', 'till', '--hub', hub.url]),
    ]);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    const ctx = () => browser.newContext({ viewport: VIEWPORT, locale: 'en-US', timezoneId: 'Asia/Riyadh' });
    pageA = await (await ctx()).newPage();
    pageB = await (await ctx()).newPage();
    pageHub = await (await ctx()).newPage();
    watchErrors(pageA, 'till A');
    watchErrors(pageB, 'till B');
    watchErrors(pageHub, 'hub');
  });

  after(async () => {
    await browser?.close().catch(() => {});
    for (const n of [tillA, tillB, hub]) stopNode(n);
  });

  it('shows the home screen and the connection state on every screen', async () => {
    await pageA.goto(`${tillA.url}/#/home`);
    await pageA.getByRole('link', { name: 'Till' }).first().waitFor({ timeout: T });
    await pageA.waitForSelector('[data-testid=conn-state][data-state=online]', { timeout: T });
    const info = await pageA.getByTestId('node-info').innerText();
    assert.match(info, /till/i);
    assert.match(info, new RegExp(new URL(hub.url).host.replace(/\./g, '\\.')));
    await shotBoth(pageA, 'home');
  });

  it('defaults to the till on a till and the dashboard on the hub', async () => {
    await pageHub.goto(`${hub.url}/`);
    await pageHub.getByTestId('day').waitFor({ timeout: T });
    await pageA.goto(`${tillA.url}/`);
    await pageA.getByTestId('open-shift-form').waitFor({ timeout: T });
    await shotBoth(pageA, 'till-open-shift');
  });

  it('opens a shift on till A and rings up an order', async () => {
    await openShift(pageA, 'Aisha', '500');
    const ticket = pageA.getByTestId('ticket');
    await pageA.getByTestId('table-input').fill('T9');
    await pageA.locator('[data-code=G05]').click();
    await ticket.locator('[data-line=G05]').waitFor({ timeout: T });
    await pageA.locator('[data-code=C01]').click();
    await ticket.locator('[data-line=C01]').waitFor({ timeout: T });
    await pageA.locator('[data-code=G05]').click(); // same plain item: qty 2
    await ticket.locator('[data-line=G05] .lqty', { hasText: '2' }).waitFor({ timeout: T });

    // modifiers and a note on the hummus
    await ticket.locator('[data-line=C01]').click();
    const editor = pageA.getByTestId('line-editor');
    await editor.getByRole('button', { name: 'no garlic' }).click();
    await ticket.locator('[data-line=C01] .lmods', { hasText: 'no garlic' }).waitFor({ timeout: T });
    await pageA.getByTestId('line-note').fill('extra oil');
    await pageA.getByTestId('line-note').press('Enter');
    await ticket.locator('[data-line=C01] .lnote', { hasText: 'extra oil' }).waitFor({ timeout: T });

    // totals come from the core: 2 x 18.50 + 15.00 = 52.00, +10% service +15% VAT = 65.78
    await pageA.waitForFunction(
      () => /65\.78/.test(document.querySelector('[data-testid=order-total]')?.textContent ?? ''),
      null,
      { timeout: T },
    );
    const title = await ticket.locator('.ticket-title').innerText();
    orderNo = Number(/#(\d+)/.exec(title)[1]);
    assert.ok(orderNo > 100, `order number ${orderNo}`);
    await shotBoth(pageA, 'till-order');
  });

  it('sends the order to the kitchen', async () => {
    await pageA.getByTestId('send-kitchen').click();
    await pageA.getByTestId('toast-ok').waitFor({ timeout: T });
    const row = pageA.locator(`[data-testid=open-orders] [data-order-no="${orderNo}"]`);
    await row.getByTestId('kitchen-state').filter({ hasText: /queued/ }).waitFor({ timeout: T });
  });

  it('shows the jobs on the KDS of till B and bumps them to ready', async () => {
    await pageB.goto(`${tillB.url}/#/kds`);
    const cards = pageB.locator(`article[data-job-order="${orderNo}"]`);
    await cards.first().waitFor({ timeout: T });
    const stations = await cards.evaluateAll((els) => els.map((e) => e.getAttribute('data-station')).sort());
    assert.deepEqual(stations, ['cold', 'grill']);
    await pageB.locator('.job-items', { hasText: 'no garlic' }).first().waitFor({ timeout: T });
    await shotBoth(pageB, 'kds');

    // station filter
    await pageB.locator('[data-station=grill].station-btn').click();
    await pageB.locator(`article[data-job-order="${orderNo}"][data-station=grill]`).waitFor({ timeout: T });
    assert.equal(await pageB.locator('article[data-station=cold]').count(), 0);
    await shot(pageB, 'kds-grill-en');

    // bump grill: queued -> cooking -> ready; then recall it and bump again
    const grill = pageB.locator(`article[data-job-order="${orderNo}"][data-station=grill]`);
    await grill.getByTestId('bump').click();
    await grill.locator('.job-cooking').or(pageB.locator(`article.job-cooking[data-job-order="${orderNo}"]`)).first().waitFor({ timeout: T });
    await grill.getByTestId('bump').click();
    await grill.waitFor({ state: 'detached', timeout: T });
    await pageB.getByTestId('recall').click();
    await grill.waitFor({ timeout: T });
    await grill.getByTestId('bump').click();
    await grill.waitFor({ state: 'detached', timeout: T });

    // the cold job on the all-stations view
    await pageB.locator('[data-station=all].station-btn').click();
    const cold = pageB.locator(`article[data-job-order="${orderNo}"][data-station=cold]`);
    await cold.getByTestId('bump').click();
    await pageB.locator(`article.job-cooking[data-job-order="${orderNo}"][data-station=cold]`).waitFor({ timeout: T });
    await cold.getByTestId('bump').click();
    await cold.waitFor({ state: 'detached', timeout: T });
  });

  it('shows "ready" live on till A and on till B', async () => {
    const rowA = pageA.locator(`[data-testid=open-orders] [data-order-no="${orderNo}"]`);
    await rowA.getByTestId('kitchen-state').filter({ hasText: /^ready$/ }).waitFor({ timeout: T });
    await pageB.goto(`${tillB.url}/#/till`);
    await openShift(pageB, 'Bilal', '300');
    const rowB = pageB.locator(`[data-testid=open-orders] [data-order-no="${orderNo}"]`);
    await rowB.getByTestId('kitchen-state').filter({ hasText: /^ready$/ }).waitFor({ timeout: T });
    await shotBoth(pageB, 'till-b-open-orders');
  });

  it('runs the expo on the hub: assembled, served, gone after reload', async () => {
    await pageHub.goto(`${hub.url}/#/expo`);
    const card = pageHub.locator(`article[data-batch-order="${orderNo}"]`);
    await card.locator('.bstatus-ready').waitFor({ timeout: T });
    await shotBoth(pageHub, 'expo');
    await card.getByTestId('assembled').click();
    await card.locator('.bstatus-assembled').waitFor({ timeout: T });
    await card.getByTestId('served').click();
    await card.waitFor({ state: 'detached', timeout: T });
    await pageHub.reload();
    await pageHub.locator('article.batch, .big-empty').first().waitFor({ timeout: T });
    await pageHub.waitForTimeout(500);
    assert.equal(await pageHub.locator(`article[data-batch-order="${orderNo}"]`).count(), 0);
  });

  it('takes a cash payment on till A and shows the change from the core', async () => {
    const row = pageA.locator(`[data-testid=open-orders] [data-order-no="${orderNo}"]`);
    await row.click();
    await pageA.getByTestId('pay').click();
    const dlg = pageA.getByTestId('payment-dialog');
    await dlg.waitFor({ timeout: T });
    await pageA.keyboard.type('100');
    await dlg.getByTestId('tendered').filter({ hasText: '100.00' }).waitFor({ timeout: T });
    await shotBoth(pageA, 'till-payment');
    await pageA.keyboard.press('Enter');
    // 100.00 - 65.78 = 34.22, computed by the core as order_payment.change_due
    await pageA.getByTestId('change-due').filter({ hasText: '34.22' }).waitFor({ timeout: T });
    await shot(pageA, 'till-payment-done-en');
    await pageA.keyboard.press('Enter');
    await row.waitFor({ state: 'detached', timeout: T });
    // A copy for a customer who comes back: no printer set up yet, and the till says so.
    const paid = pageA.getByTestId('paid-orders');
    await paid.locator('summary').click();
    await paid.getByTestId('receipt-copy').first().click();
    await pageA.getByTestId('toast-error').filter({ hasText: /no receipt printer/ }).waitFor({ timeout: T });
  });

  it('closes the shift on till A with the expected cash from the core', async () => {
    // The hub derives the shift's totals from the payment and till A merges them: first in
    // till A's data (a sync failure says so here), then on its screen.
    const deadline = Date.now() + T;
    let held = null;
    while (Date.now() < deadline) {
      const { rows } = await fetch(`${tillA.url}/api/tables/pos_shift`).then((r) => r.json());
      held = rows.find((r) => r.status === 'open' && r.cashier === 'Aisha');
      if (held?.expected_cash === 56578) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (held?.expected_cash !== 56578) {
      await dumpState('expected cash in the data', { tillA, hub }, ['pos_shift', 'order_payment']);
      assert.fail(`till A's data holds expected cash ${held?.expected_cash}, not 56578`);
    }
    await pageA.getByTestId('close-shift').click();
    const form = pageA.getByTestId('close-shift-form');
    // opening float 500.00 + cash sales 65.78
    await form
      .getByTestId('expected-cash')
      .filter({ hasText: '565.78' })
      .waitFor({ timeout: T })
      .catch(async (e) => {
        console.error(`[expected cash] till A shows: ${await form.innerText().catch(String)}`);
        await dumpState('expected cash', { tillA, hub }, ['pos_shift', 'order_payment']);
        throw e;
      });
    await shotBoth(pageA, 'till-close-shift');
    await form.locator('input').fill('565.78');
    await form.locator('button[type=submit]').click();
    await pageA.getByTestId('open-shift-form').waitFor({ timeout: T });
  });

  it('finds the paid order on the dashboard by its number and by its amount, and shows its lines', async () => {
    await pageHub.goto(`${hub.url}/#/dashboard`);
    const finder = pageHub.getByTestId('find-orders');
    await finder.locator('input[name=number]').fill(String(orderNo));
    await finder.getByTestId('find-orders-go').click();
    const hit = finder.locator(`[data-testid=found-order][data-order-no="${orderNo}"]`);
    await hit.waitFor({ timeout: T });
    assert.equal(await finder.getByTestId('found-order').count(), 1);
    await hit.locator('button').first().click();
    await hit.getByTestId('found-detail').filter({ hasText: 'Hummus' }).waitFor({ timeout: T });
    await hit.scrollIntoViewIfNeeded();
    await shotBoth(pageHub, 'dashboard-find-order');
    // By amount instead: 65.78, the same order.
    await finder.locator('input[name=number]').fill('');
    await finder.locator('input[name=amount]').fill('65.78');
    await finder.getByTestId('find-orders-go').click();
    await finder.locator(`[data-testid=found-order][data-order-no="${orderNo}"]`).waitFor({ timeout: T });
    // A number nobody has: said plainly.
    await finder.locator('input[name=amount]').fill('');
    await finder.locator('input[name=number]').fill('999999');
    await finder.getByTestId('find-orders-go').click();
    await finder.getByTestId('find-orders-none').waitFor({ timeout: T });
  });

  it('edits the menu on the dashboard: sold out greys out on till B, a new price shows there', async () => {
    await pageHub.goto(`${hub.url}/#/dashboard`);
    const editor = pageHub.getByTestId('menu-editor');
    const kunafa = editor.locator('[data-testid=menu-row][data-code=D01]');
    await kunafa.waitFor({ timeout: T });
    await pageB.locator('[data-code=D01][data-available=true]').waitFor({ timeout: T });
    const t0 = Date.now();
    await kunafa.getByTestId('toggle-available').click();
    await pageB.locator('[data-code=D01][data-available=false]').waitFor({ timeout: T });
    console.log(`# sold out on the dashboard -> greyed out on till B: ${Date.now() - t0} ms`);
    assert.ok(await pageB.locator('[data-code=D01]').isDisabled(), 'a sold-out item cannot be rung up');

    // Reprice the mixed grill: the till's button shows the new price.
    const grill = editor.locator('[data-testid=menu-row][data-code=G01]');
    await grill.locator('[data-field=price]').fill('75');
    await grill.getByTestId('save-item').click();
    await pageB.locator('[data-code=G01] .mprice', { hasText: '75.00' }).waitFor({ timeout: T });
    await pageHub.setViewportSize({ width: VIEWPORT.width, height: 1100 });
    await editor.evaluate((el) => {
      // Top of the editor just under the app's sticky header.
      el.scrollIntoView({ block: 'start' });
      for (let p = el.parentElement; p; p = p.parentElement) {
        if (p.scrollHeight > p.clientHeight && /auto|scroll/.test(getComputedStyle(p).overflowY)) {
          p.scrollTop -= 70;
          break;
        }
      }
    });
    await shot(pageHub, 'menu-editor-en');
    await pageHub.setViewportSize(VIEWPORT);
    // A price that is not an amount is refused on the spot, and nothing changes.
    await grill.locator('[data-field=price]').fill('-3');
    await grill.getByTestId('save-item').click();
    await pageHub.getByTestId('toast-error').first().waitFor({ timeout: T });
    await pageB.locator('[data-code=G01] .mprice', { hasText: '75.00' }).waitFor({ timeout: T });
    await pageB.locator('.cats .cat', { hasText: 'Desserts' }).click();
    await shot(pageB, 'till-sold-out-en');
    await pageB.locator('.cats .cat', { hasText: 'All' }).click();

    // The kitchen says the hummus is gone, from the KDS on till A.
    await pageA.goto(`${tillA.url}/#/kds`);
    await pageA.getByTestId('soldout-panel').click();
    await pageA.locator('[data-testid=soldout-list] [data-code=C01]').click();
    await pageB.locator('[data-code=C01][data-available=false]').waitFor({ timeout: T });
    await pageA.locator('[data-testid=soldout-list] [data-code=C01]').click();
    await pageB.locator('[data-code=C01][data-available=true]').waitFor({ timeout: T });
  });

  it('renders the hub dashboard with the day, and the diagnostics with status and counters', async () => {
    // The dashboard opens on the day: sales so far, what is open, alerts.
    await pageHub.goto(`${hub.url}/#/dashboard`);
    await pageHub.getByTestId('day').waitFor({ timeout: T });
    await pageHub.getByTestId('stat-open-orders').filter({ hasText: /[1-9]/ }).waitFor({ timeout: T });
    await pageHub.getByTestId('day-sales').filter({ hasText: /[1-9]/ }).waitFor({ timeout: T });
    // An unpaired shop says it is open to anyone on its network, and offers to add a device.
    await pageHub.getByTestId('devices').filter({ hasText: /No device is paired yet/i }).waitFor({ timeout: T });
    await pageHub.getByTestId('add-device').waitFor({ timeout: T });
    await pageHub.getByTestId('open-diagnostics').click();
    const st = pageHub.getByTestId('node-status');
    await st.waitFor({ timeout: T });
    assert.match(await st.innerText(), /hub/i);
    await pageHub.waitForFunction(() => Number(document.querySelector('[data-testid=status-seq]')?.textContent?.replace(/\D/g, '') || 0) > 0, null, { timeout: T });
    await pageHub.getByTestId('server-metrics').waitFor({ timeout: T });
    // the connected nodes table: the hub first, then both tills (as they report every 2 s)
    const tillIds = await Promise.all([tillA, tillB].map(async (n) => (await (await fetch(`${n.url}/api/status`)).json()).node_id));
    const rows = pageHub.getByTestId('nodes-table').getByTestId('node-row');
    for (const id of tillIds) await rows.and(pageHub.locator(`[data-node-id="${id}"][data-role=till]`)).waitFor({ timeout: T });
    assert.equal(await rows.first().getAttribute('data-role'), 'hub');
    for (const id of tillIds) assert.equal(await pageHub.locator(`[data-testid=node-row][data-node-id="${id}"]`).getAttribute('data-state'), 'online');
    await pageHub.getByTestId('screens-count').filter({ hasText: /screens? connected/ }).waitFor({ timeout: T });
    await pageHub.waitForTimeout(4500); // a few samples for the charts
    // the screen scrolls inside the app shell: a tall viewport shows every chart
    await pageHub.setViewportSize({ width: VIEWPORT.width, height: 1400 });
    await shotBoth(pageHub, 'diagnostics');
    await pageHub.goto(`${hub.url}/#/dashboard`);
    await pageHub.getByTestId('day').waitFor({ timeout: T });
    await shotBoth(pageHub, 'dashboard');
  });

  it('shows the X report and closes the day with a Z report on the hub dashboard', async () => {
    await pageHub.setViewportSize({ width: VIEWPORT.width, height: 1400 });
    await pageHub.goto(`${hub.url}/#/dashboard`);
    const card = pageHub.getByTestId('reports');
    await card.getByTestId('x-report').click();
    await card.locator('[data-testid=report-view][data-kind=X]').waitFor({ timeout: T });
    const x = await (await fetch(`${hub.url}/api/reports/x`)).json();
    assert.ok(x.orders >= 2 && x.total > 0, JSON.stringify(x).slice(0, 300));
    const decimal = (v) => `${Math.floor(v / 100).toLocaleString('en-US')}.${String(v % 100).padStart(2, '0')}`;
    await card.getByTestId('report-total').filter({ hasText: decimal(x.total) }).waitFor({ timeout: T });

    await card.getByTestId('take-z').click();
    const form = pageHub.getByTestId('take-z-form');
    // What is still open is said before the day is closed.
    if (x.open_orders > 0) {
      const warn = form.getByTestId('z-still-open');
      await warn.waitFor({ timeout: T });
      assert.match(await warn.innerText(), new RegExp(`${x.open_orders} orders are still open`));
    }
    await form.locator('input').fill('Karim');
    await form.locator('button[type=submit]').click();
    const z = card.locator('[data-testid=report-view][data-kind=Z]');
    await z.waitFor({ timeout: T });
    await card.getByTestId('report-total').filter({ hasText: decimal(x.total) }).waitFor({ timeout: T });
    await card.getByTestId('z-item').first().waitFor({ timeout: T });
    const list = await (await fetch(`${hub.url}/api/reports/z`)).json();
    assert.equal(list.reports.length, 1);
    assert.equal(list.reports[0].total, x.total, 'the Z holds what the X showed');
    await card.screenshot({ path: join(SHOTS, 'z-report-en.png') });
    await setLang(pageHub, 'ar');
    await card.screenshot({ path: join(SHOTS, 'z-report-ar-rtl.png') });
    await setLang(pageHub, 'en');
    await pageHub.setViewportSize(VIEWPORT);
  });

  it("shows times in the shop's time zone, whatever the device's clock is set to", async () => {
    // A dashboard on a machine set to New York, in a shop in Riyadh (the demo's settings).
    const ctx = await browser.newContext({ viewport: VIEWPORT, timezoneId: 'America/New_York' });
    const page = await ctx.newPage();
    try {
      await page.goto(`${hub.url}/#/dashboard`);
      const card = page.getByTestId('reports');
      const clock = (zone) => new Date().toLocaleTimeString('en-SA', { hour: '2-digit', minute: '2-digit', timeZone: zone });
      const before = clock('Asia/Riyadh');
      await card.getByTestId('x-report').click();
      const when = await card.locator('[data-testid=report-view][data-kind=X] header .muted').innerText();
      const after = clock('Asia/Riyadh');
      assert.ok(when.includes(before) || when.includes(after), `Riyadh's ${before}: ${when}`);
      assert.ok(!when.includes(clock('America/New_York')), `not the device's own: ${when}`);
    } finally {
      await ctx.close();
    }
  });

  it('adds a receipt printer on the dashboard and prints the X report on it', async () => {
    // A virtual ESC/POS printer: a TCP server on 127.0.0.1 that keeps what it is sent.
    const received = [];
    const printer = createServer((sock) => {
      const chunks = [];
      sock.on('data', (c) => chunks.push(c));
      sock.on('end', () => received.push(Buffer.concat(chunks)));
    });
    await new Promise((r) => printer.listen(0, '127.0.0.1', r));
    try {
      await pageHub.goto(`${hub.url}/#/dashboard`);
      const card = pageHub.getByTestId('printers');
      const form = card.getByTestId('add-printer');
      await form.locator('input').first().fill('Counter');
      await form.locator('select').selectOption('receipt');
      await form.locator('input[dir=ltr]').fill(`127.0.0.1:${printer.address().port}`);
      await form.locator('button[type=submit]').click();
      await card.getByTestId('printer-row').filter({ hasText: 'Counter' }).waitFor({ timeout: T });
      const reports = pageHub.getByTestId('reports');
      await reports.getByTestId('x-report').click();
      await reports.getByTestId('report-print').click();
      await card.locator('[data-testid=print-job][data-state=done]').first().waitFor({ timeout: T });
      assert.equal(received.length, 1);
      const text = received[0].toString('latin1');
      assert.match(text, /X REPORT/);
      assert.match(text, /TOTAL/);
      await card.screenshot({ path: join(SHOTS, 'printers-en.png') });
    } finally {
      printer.close();
    }
  });
});
