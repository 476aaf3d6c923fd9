// Staff at the screens of a real hub and till: the owner is added on the dashboard and the
// dashboard then opens with a PIN; a cashier logs in on the till (at a small till's 800x480
// too), a void of an item the kitchen has asks for a manager's PIN on the spot, staff switch,
// and wrong PINs lock the pad; in English and Arabic, with screenshots.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { REPO, startNode, stopNode } from './nodes.js';

const SHOTS = join(REPO, 'test-artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const T = 15000;

let hub, till, browser, dash, pos;

async function setLang(page, lang) {
  const cur = await page.evaluate(() => document.documentElement.lang);
  if (cur !== lang) await page.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
  await page.waitForFunction((l) => document.documentElement.lang === l, lang);
}

async function shotBoth(page, name) {
  for (const lang of ['en', 'ar']) {
    await setLang(page, lang);
    await page.waitForTimeout(150);
    await page.screenshot({ path: join(SHOTS, `${name}-${lang === 'ar' ? 'ar-rtl' : 'en'}.png`) });
  }
  await setLang(page, 'en');
}

/** Taps a member of staff's name and their PIN on the pad `pad` (a locator). */
async function enterPin(pad, staffName, pin) {
  await pad.getByRole('radio', { name: staffName }).click();
  for (const d of pin) await pad.locator(`[data-key="${d}"]`).click();
  await pad.getByTestId('pin-ok').click();
}

/** Every element of `root` lies within the viewport (nothing cut off at a small till). */
async function assertOnScreen(page, selector) {
  const out = await page.evaluate((sel) => {
    const vw = innerWidth;
    const vh = innerHeight;
    return [...document.querySelectorAll(`${sel} button`)]
      .map((e) => [e.textContent.trim(), e.getBoundingClientRect()])
      .filter(([, r]) => r.width > 0 && (r.left < -1 || r.right > vw + 1 || r.top < -1 || r.bottom > vh + 1))
      .map(([t]) => t);
  }, selector);
  assert.deepEqual(out, [], `off screen: ${out.join(', ')}`);
}

describe('staff', () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    hub = await startNode('hub', ['--role', 'hub', '--name', 'Manager PC', '--demo']);
    till = await startNode('till', ['--role', 'till', '--name', 'Till A', '--hub', hub.url]);
    browser = await chromium.launch({ executablePath: CHROMIUM });
    dash = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    pos = await browser.newPage({ viewport: { width: 800, height: 480 } });
  });

  after(async () => {
    await browser?.close();
    stopNode(till);
    stopNode(hub);
  });

  it('adds the owner on the dashboard, which then opens with a PIN, and adds the staff', async () => {
    const key = readFileSync(join(hub.data, 'local.key'), 'utf8').trim();
    await dash.goto(`${hub.url}/?key=${key}`);
    await dash.goto(`${hub.url}/#/dashboard`);
    const card = dash.getByTestId('staff-card');
    await card.waitFor({ timeout: T });
    const add = async (name, nameAr, role, pin) => {
      const form = dash.getByTestId('add-staff');
      await form.scrollIntoViewIfNeeded();
      await form.locator('input').nth(0).fill(name);
      await form.locator('input').nth(1).fill(nameAr);
      await form.getByTestId('staff-role').selectOption(role);
      await form.locator('input[type=password]').fill(pin);
      await form.getByRole('button').click();
    };
    await add('Huda', 'هدى', 'owner', '1111');
    // The owner's PIN exists: nobody is logged in here, so the dashboard asks who is there.
    const pad = dash.getByTestId('staff-login');
    await pad.waitFor({ timeout: T });
    await shotBoth(dash, 'staff-login-1280');
    await enterPin(pad, 'Huda', '1111');
    await dash.getByTestId('staff-who').filter({ hasText: 'Huda' }).waitFor({ timeout: T });
    await dash.getByTestId('staff-card').waitFor({ timeout: T });
    await add('Karim', 'كريم', 'manager', '2222');
    await dash.getByTestId('staff-row').filter({ hasText: 'Karim' }).waitFor({ timeout: T });
    await add('Mona', 'منى', 'cashier', '3333');
    await dash.getByTestId('staff-row').filter({ hasText: 'Mona' }).waitFor({ timeout: T });
    // The owner lets waiters take payments (a role is data, like Toast's jobs).
    const roles = dash.getByTestId('roles');
    await roles.locator('tr[data-role=waiter]').getByRole('button').click();
    const form = dash.getByTestId('role-form');
    await form.locator('[data-perm="order.pay"]').check();
    await form.getByTestId('role-save').click();
    await form.waitFor({ state: 'detached', timeout: T });
    const waiter = await dash.evaluate(async () => {
      const r = await fetch('/api/staff/roles').then((x) => x.json());
      return r.roles.find((x) => x.id === 'waiter').permissions;
    });
    assert.ok(waiter.includes('order.pay'), JSON.stringify(waiter));
    await dash.getByTestId('staff-card').scrollIntoViewIfNeeded();
    await shotBoth(dash, 'staff-card-1280');
    // The shop wants a reason for every void of something the kitchen has.
    const settings = dash.getByTestId('shop-settings');
    await settings.getByTestId('void-reasons').fill('Wrong item\nCustomer changed mind');
    await settings.getByRole('button').click();
    await dash.waitForFunction(async () => {
      const r = await fetch('/api/entities/settings/shop').then((x) => x.json());
      return (r.payload?.void_reasons ?? '').includes('Wrong item');
    });
  });

  it('a cashier logs in at a small till, a manager approves a void on the spot, staff switch', async () => {
    await pos.goto(`${till.url}/#/till`);
    const pad = pos.getByTestId('staff-login');
    // The till has the staff (synced from the hub) and asks who is there.
    await pad.getByRole('radio', { name: 'Mona' }).waitFor({ timeout: T });
    await assertOnScreen(pos, '[data-testid=staff-login]');
    await shotBoth(pos, 'staff-login-800x480');
    await enterPin(pad, 'Mona', '3333');
    await pos.getByTestId('staff-who').filter({ hasText: 'Mona' }).waitFor({ timeout: T });
    // Her shift opens in her name.
    const form = pos.getByTestId('open-shift-form');
    await form.waitFor({ timeout: T });
    assert.equal(await form.locator('input[name=cashier]').inputValue(), 'Mona');
    await form.getByRole('button').click();
    // A small till keeps its open orders in a panel over the menu.
    await pos.getByTestId('orders-toggle').click();
    await pos.getByTestId('new-order').click();
    const ticket = pos.getByTestId('ticket');
    await pos.locator('[data-code=G05]').click();
    await ticket.locator('[data-line=G05]').waitFor({ timeout: T });
    await pos.getByTestId('send-kitchen').click();
    await pos.getByTestId('toast-ok').first().waitFor({ timeout: T });
    // Void the grill the kitchen has: Mona may not alone; the till asks for a manager's PIN.
    await ticket.locator('[data-line=G05]').click();
    await pos.getByTestId('line-editor').getByRole('button', { name: /void/i }).click();
    // Why: the shop's reasons, then the manager's PIN.
    await pos.getByTestId('reasons').locator('[data-reason="Wrong item"]').click();
    const approval = pos.getByTestId('approval');
    await approval.waitFor({ timeout: T });
    assert.equal(await approval.getAttribute('data-permission'), 'order.void');
    await assertOnScreen(pos, '[data-testid=approval]');
    await shotBoth(pos, 'staff-approval-800x480');
    await enterPin(pos.getByTestId('approval-pad'), 'Karim', '2222');
    await approval.waitFor({ state: 'detached', timeout: T });
    await ticket.locator('[data-line=G05].void').waitFor({ timeout: T });
    // The void is on the hub with who did it and who approved it.
    const journal = await (await fetch(`${hub.url}/api/journal?after=0`)).json();
    const text = JSON.stringify(journal);
    assert.ok(/"by":\{"staff":"st-[0-9a-f]+","approver":"st-[0-9a-f]+"/.test(text), 'the approver is recorded');
    assert.ok(text.includes('"void_reason":"Wrong item"'), 'the reason is recorded');

    // The order's history: who added, sent and voided it, and who approved the void.
    await pos.getByTestId('order-history').click();
    const timeline = pos.getByTestId('timeline');
    await timeline.locator('li[data-what="line.void"]').waitFor({ timeout: T }).catch(async (e) => {
      console.error('TIMELINE:', await timeline.innerText());
      throw e;
    });
    const voided = await timeline.locator('li[data-what="line.void"]').innerText();
    assert.match(voided, /Mona/);
    assert.match(voided, /approved by\s+Karim/);
    await shotBoth(pos, 'staff-timeline-800x480');
    await pos.keyboard.press('Escape');
    await timeline.waitFor({ state: 'detached', timeout: T });

    // Mona clocks in (her time counts on the Z).
    await pos.getByTestId('clock-in').click();
    await pos.getByTestId('clock-out').waitFor({ timeout: T });

    // Switch: Mona locks the till, Karim logs in.
    await pos.getByTestId('staff-lock').click();
    await pad.waitFor({ timeout: T });
    await enterPin(pad, 'Karim', '2222');
    await pos.getByTestId('staff-who').filter({ hasText: 'Karim' }).waitFor({ timeout: T });
    await shotBoth(pos, 'staff-header-800x480');
  });

  it('the audit trail on the dashboard names who voided and who approved', async () => {
    const card = dash.getByTestId('audit');
    await card.waitFor({ timeout: T });
    await card.scrollIntoViewIfNeeded();
    await card.getByTestId('audit-show').click();
    const row = card.locator('tr[data-what="line.void"]');
    await row.waitFor({ timeout: T });
    assert.match(await row.innerText(), /Mona.*approved by.*Karim/s);
    await card.scrollIntoViewIfNeeded();
    await shotBoth(dash, 'staff-audit-1280');
  });

  it('wrong PINs lock the pad for a while and say so', async () => {
    await pos.getByTestId('staff-lock').click();
    const pad = pos.getByTestId('staff-login');
    await pad.waitFor({ timeout: T });
    for (let i = 0; i < 5; i++) {
      await enterPin(pad, 'Mona', '9999');
      await pad.getByTestId('pin-error').waitFor({ timeout: T });
    }
    await enterPin(pad, 'Mona', '3333');
    await pad.getByTestId('pin-error').filter({ hasText: /30|2\d/ }).waitFor({ timeout: T });
    await shotBoth(pos, 'staff-locked-800x480');
    // The till told the shop: the manager's dashboard lists Mona locked out at Till A.
    const locked = dash.getByTestId('lockouts').locator('tr', { hasText: 'Mona' });
    await locked.waitFor({ timeout: T });
    assert.match(await locked.innerText(), /Till A.*1 in a row/s);
    await locked.scrollIntoViewIfNeeded();
    await shotBoth(dash, 'staff-lockouts-1280');
  });
});
