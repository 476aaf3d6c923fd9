// The dashboard's "Add a device" on a real hub: the code it shows pairs a real `tilld pair`, the
// device appears, and removing it marks it removed; in English and Arabic. Once paired, the hub
// serves this machine's screen (it opened the launch-key link) and refuses another browser.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { REPO, startNode, stopNode, tilldBin } from './nodes.js';

const SHOTS = join(REPO, 'test-artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const T = 15000;
const run = promisify(execFile);

let hub, browser, page, tillData, newTill;

async function setLang(lang) {
  const cur = await page.evaluate(() => document.documentElement.lang);
  if (cur !== lang) await page.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
  await page.waitForFunction((l) => document.documentElement.lang === l, lang);
}

async function shotBoth(locator, name) {
  for (const lang of ['en', 'ar']) {
    await setLang(lang);
    await page.waitForTimeout(150);
    await locator.screenshot({ path: join(SHOTS, `${name}-${lang === 'ar' ? 'ar-rtl' : 'en'}.png`) });
  }
  await setLang('en');
}

describe('devices', () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    hub = await startNode('hub', ['--role', 'hub', '--name', 'Manager PC', '--demo']);
    browser = await chromium.launch({ executablePath: CHROMIUM });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    tillData = mkdtempSync(join(tmpdir(), 'capsule-paired-till-'));
  });

  after(async () => {
    await browser?.close();
    stopNode(hub);
    stopNode(newTill);
    rmSync(tillData, { recursive: true, force: true });
  });

  it('adds a device with the code it shows and removes it', async () => {
    // This machine's own screen opens the launch-key link once: the key becomes a cookie.
    const key = readFileSync(join(hub.data, 'local.key'), 'utf8').trim();
    await page.goto(`${hub.url}/?key=${key}`);
    assert.ok(!page.url().includes('key='), 'the key leaves the address bar');
    await page.goto(`${hub.url}/#/dashboard`);
    const card = page.getByTestId('devices');
    await card.waitFor({ timeout: T });
    await card.scrollIntoViewIfNeeded();
    await card.getByTestId('add-device').click();
    const shown = await card.getByTestId('pair-code').textContent({ timeout: T });
    const code = shown.replace(/\s/g, '');
    assert.match(code, /^\d{6}$/);
    await shotBoth(card, 'devices-code');

    const paired = await run(tilldBin(), [
      'pair', '--code', code, '--peer', hub.url, '--data', tillData, '--name', 'Till 2', '--role', 'till',
    ]);
    assert.match(paired.stdout, /paired with Manager PC/);
    const row = card.getByTestId('device-row').filter({ hasText: 'Till 2' });
    await row.waitFor({ timeout: T });
    // The code was single use: it leaves the screen once a device joined with it.
    await card.getByTestId('pair-code-box').waitFor({ state: 'detached', timeout: T });

    // The hub is a paired shop now: another browser on the network gets nothing from its API.
    const stranger = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const refused = await stranger.request.get(`${hub.url}/api/status`);
    assert.equal(refused.status(), 401);
    // Its screen says so in words a manager can act on, in both languages.
    const outsider = await stranger.newPage();
    await outsider.goto(`${hub.url}/#/dashboard`);
    const notice = outsider.getByTestId('not-admitted');
    await notice.waitFor({ timeout: T });
    assert.match(await notice.textContent(), /not paired/);
    await outsider.screenshot({ path: join(SHOTS, 'not-paired-en.png') });
    await outsider.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
    await outsider.waitForFunction(() => document.documentElement.lang === 'ar');
    await outsider.waitForTimeout(150);
    await outsider.screenshot({ path: join(SHOTS, 'not-paired-ar-rtl.png') });
    await stranger.close();
    // This screen still works (its cookie), live: the till shows up without a reload.
    await shotBoth(card, 'devices-paired');

    page.once('dialog', (d) => d.accept());
    await row.getByTestId('remove-device').click();
    await card.locator('[data-testid=device-row][data-removed=yes]').waitFor({ timeout: T });
    await shotBoth(card, 'devices-removed');
  });

  it('pairs a kitchen TV browser by a code a manager approves, scoped to kitchen work', async () => {
    // Runs after the first test: the hub is a paired shop.
    const tv = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
    const screen = await tv.newPage();
    await screen.goto(`${hub.url}/#/kds`);
    const form = screen.getByTestId('pair-screen');
    await form.waitFor({ timeout: T });
    await form.locator('input').fill('Grill TV');
    await form.locator('select').selectOption('kitchen');
    await form.locator('button[type=submit]').click();
    const shown = (await screen.getByTestId('screen-code').textContent({ timeout: T })).replace(/\s/g, '');
    assert.match(shown, /^\d{6}$/);
    await screen.screenshot({ path: join(SHOTS, 'screen-asks-to-pair-en.png') });
    await screen.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
    await screen.waitForFunction(() => document.documentElement.lang === 'ar');
    await screen.waitForTimeout(150);
    await screen.screenshot({ path: join(SHOTS, 'screen-asks-to-pair-ar-rtl.png') });

    // The manager sees the same code on the dashboard and approves it.
    const card = page.getByTestId('devices');
    const asking = card.getByTestId('screen-asking').filter({ hasText: `${shown.slice(0, 3)} ${shown.slice(3)}` });
    await asking.waitFor({ timeout: T });
    await shotBoth(card, 'devices-screen-asking');
    await asking.getByTestId('approve-screen').click();

    // The TV opens by itself on the kitchen screen.
    await screen.getByTestId('not-admitted').waitFor({ state: 'detached', timeout: T });
    await screen.waitForFunction(() => document.querySelector('[data-screen=kds]') !== null, null, { timeout: T });
    await screen.screenshot({ path: join(SHOTS, 'screen-paired-kds-ar-rtl.png') });
    await screen.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
    await screen.waitForFunction(() => document.documentElement.lang === 'en');
    await screen.waitForTimeout(150);
    await screen.screenshot({ path: join(SHOTS, 'screen-paired-kds-en.png') });
    // Kitchen work only: it follows the shop, but takes no report and no Z.
    assert.equal((await tv.request.get(`${hub.url}/api/status`)).status(), 200);
    assert.equal((await tv.request.get(`${hub.url}/api/reports/x`)).status(), 403);
    assert.equal(
      (await tv.request.post(`${hub.url}/api/reports/z`, { data: { taken_by: 'tv', number: 1 } })).status(),
      403,
    );
    // Removed by the manager: its cookie opens nothing any more.
    await card.getByTestId('screen-row').filter({ hasText: 'Grill TV' }).getByTestId('remove-screen').click();
    await card.getByTestId('screen-row').filter({ hasText: 'Grill TV' }).waitFor({ state: 'detached', timeout: T });
    assert.equal((await tv.request.get(`${hub.url}/api/status`)).status(), 401);
    await tv.close();
  });

  it('a new till joins the shop from its own screen with the code the manager PC shows', async () => {
    // Runs after the first test: the hub is a paired shop. A till on its first run, unpaired:
    // the hub refuses it, and its own dashboard (this machine's screen) offers to join.
    newTill = await startNode('new-till', ['--role', 'till', '--hub', hub.url, '--name', 'Till 3']);
    const own = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const tillPage = await own.newPage();
    const key = readFileSync(join(newTill.data, 'local.key'), 'utf8').trim();
    await tillPage.goto(`${newTill.url}/?key=${key}`);
    await tillPage.goto(`${newTill.url}/#/dashboard`);
    const form = tillPage.getByTestId('join-shop');
    await form.waitFor({ timeout: T });
    await form.scrollIntoViewIfNeeded();
    for (const lang of ['en', 'ar']) {
      const cur = await tillPage.evaluate(() => document.documentElement.lang);
      if (cur !== lang) await tillPage.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
      await tillPage.waitForFunction((l) => document.documentElement.lang === l, lang);
      await tillPage.waitForTimeout(150);
      await form.screenshot({ path: join(SHOTS, `join-shop-${lang === 'ar' ? 'ar-rtl' : 'en'}.png`) });
    }
    await tillPage.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
    await tillPage.waitForFunction(() => document.documentElement.lang === 'en');

    // The manager asks for a code.
    const card = page.getByTestId('devices');
    await card.getByTestId('add-device').click();
    const code = (await card.getByTestId('pair-code').textContent({ timeout: T })).replace(/\s/g, '');
    // Prefilled with the hub this till was pointed at.
    assert.equal(await form.getByTestId('join-peer').inputValue(), hub.url);
    // A mistyped code is refused in words a cashier can act on; the right one pairs.
    const wrong = code.slice(0, 5) + String((Number(code[5]) + 1) % 10);
    await form.getByTestId('join-code').fill(wrong);
    await form.getByTestId('join-button').click();
    assert.match(await form.getByTestId('join-error').textContent({ timeout: T }), /not right/);
    await form.getByTestId('join-code').fill(`${code.slice(0, 3)} ${code.slice(3)}`);
    await form.getByTestId('join-button').click();
    await tillPage.getByText('Paired with Manager PC').waitFor({ timeout: T });
    await card.getByTestId('device-row').filter({ hasText: 'Till 3' }).waitFor({ timeout: T });
    // Joined: the form is gone, and the till follows the hub over the shop's TLS.
    await form.waitFor({ state: 'detached', timeout: T });
    const auth = { headers: { authorization: `Bearer ${key}` } };
    const deadline = Date.now() + T;
    let st;
    for (;;) {
      st = await (await own.request.get(`${newTill.url}/api/status`, auth)).json();
      if (st.paired && st.state === 'online' && !st.link_error) break;
      if (Date.now() > deadline) assert.fail(`the joined till never followed the hub: ${JSON.stringify(st)}`);
      await tillPage.waitForTimeout(100);
    }
    await own.close();
  });
});
