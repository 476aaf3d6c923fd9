// The printer-down path as a cashier lives it: the receipt printer is off when a sale is paid;
// the till says the receipt did not print, on which printer and why, while the sale stands;
// the printer comes back, the cashier taps Retry, and the receipt prints once.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { REPO, startNode, stopNode } from './nodes.js';

const SHOTS = join(REPO, 'test-artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const T = 15000;

let hub, browser, page;

async function setLang(p, lang) {
  const cur = await p.evaluate(() => document.documentElement.lang);
  if (cur !== lang) await p.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
  await p.waitForFunction((l) => document.documentElement.lang === l, lang);
}

/** A free port on 127.0.0.1 with nothing listening: a printer that is switched off. */
async function offPort() {
  const s = createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A virtual ESC/POS printer on `port`: keeps every job it is sent. */
async function printerOn(port) {
  const received = [];
  const server = createServer((sock) => {
    const chunks = [];
    sock.on('data', (c) => chunks.push(c));
    sock.on('end', () => received.push(Buffer.concat(chunks)));
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { received, close: () => new Promise((r) => server.close(r)) };
}

describe('a receipt printer that is off', () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    hub = await startNode('hub', ['--role', 'hub', '--demo', '--allow-printer', '127.0.0.1']);
    browser = await chromium.launch({ executablePath: CHROMIUM });
    page = await browser.newPage({ viewport: { width: 1024, height: 768 } });
  });
  after(async () => {
    await browser?.close();
    stopNode(hub);
  });

  it('shows the failure on the till and prints once after Retry', async () => {
    const port = await offPort();
    const r = await fetch(`${hub.url}/api/mutations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        mutations: [
          {
            mid: crypto.randomUUID(),
            table: 'printer',
            action: 'insert',
            row: { id: 'p-counter', name: 'Counter', role: 'receipt', address: `127.0.0.1:${port}` },
          },
        ],
      }),
    });
    assert.equal(r.status, 200, await r.text());

    // A sale, paid by card.
    await page.goto(`${hub.url}/#/till`);
    const form = page.getByTestId('open-shift-form');
    await form.waitFor({ timeout: T });
    await form.locator('input[name=cashier]').fill('Mona');
    await form.locator('input[name=float]').fill('100');
    await form.getByRole('button').click();
    await page.getByTestId('open-orders').waitFor({ timeout: T });
    await page.locator('[data-code=G05]').click();
    await page.getByTestId('ticket').locator('[data-line=G05]').waitFor({ timeout: T });
    // An item rung up by mistake comes off the ticket again (a new line is deleted).
    await page.locator('[data-code=C01]').click();
    const hummus = page.getByTestId('ticket').locator('[data-line=C01]');
    await hummus.waitFor({ timeout: T });
    await hummus.click();
    await page.getByTestId('line-editor').getByRole('button', { name: 'Remove' }).click();
    await hummus.waitFor({ state: 'detached', timeout: T });
    await page.getByTestId('pay').click();
    const dlg = page.getByTestId('payment-dialog');
    await dlg.waitFor({ timeout: T });
    await dlg.getByTestId('method-card').click();
    await page.keyboard.press('Enter');
    await dlg.getByTestId('payment-done').waitFor({ timeout: T });
    await page.keyboard.press('Enter');

    // The printer is off: the till says so, naming the printer, with Retry.
    const failed = page.getByTestId('print-failed');
    await failed.waitFor({ timeout: T });
    assert.match(await failed.innerText(), /receipt did not print on Counter/i);
    await page.screenshot({ path: join(SHOTS, 'print-failed-1024-en.png') });
    await setLang(page, 'ar');
    await page.screenshot({ path: join(SHOTS, 'print-failed-1024-ar-rtl.png') });
    await setLang(page, 'en');
    // The manager's dashboard opens on the day with the alert, saying what to do.
    const dash = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await dash.goto(`${hub.url}/#/dashboard`);
    const alert = dash.locator('[data-testid=alert][data-kind=printer]');
    await alert.waitFor({ timeout: T });
    assert.match(await alert.innerText(), /Printer Counter is not reached from .*\n.*Check it is switched on/s);
    await dash.getByTestId('day').screenshot({ path: join(SHOTS, 'day-printer-down-en.png') });
    const box = await failed.getByTestId('print-retry').boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 1024 && box.y + box.height <= 768, 'Retry is on screen');

    // Power back on; Retry (tapped twice, as a hurried cashier does): one receipt.
    const printer = await printerOn(port);
    try {
      await failed.getByTestId('print-retry').click();
      await failed.getByTestId('print-retry').click().catch(() => {});
      await failed.waitFor({ state: 'detached', timeout: T });
      const deadline = Date.now() + T;
      let jobs = [];
      while (Date.now() < deadline) {
        jobs = (await (await fetch(`${hub.url}/api/print/jobs`)).json()).jobs;
        if (jobs.some((j) => j.kind === 'receipt' && j.state === 'done') && printer.received.length > 0) break;
        await new Promise((ok) => setTimeout(ok, 100));
      }
      const receipts = jobs.filter((j) => j.kind === 'receipt');
      assert.equal(receipts.length, 1, JSON.stringify(receipts));
      assert.equal(receipts[0].state, 'done');
      assert.equal(printer.received.length, 1, 'the receipt printed once');
      // The printer is back: the alert goes.
      await alert.waitFor({ state: 'detached', timeout: T });
      await dash.close();
    } finally {
      await printer.close();
    }
  });
});
