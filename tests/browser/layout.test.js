// The screens people use all day, at the sizes they run at: a small till (800x480), 1024x768,
// 1280x800 and a 1920x1080 kitchen TV, in English and Arabic. Nothing of the till, the payment
// dialog, a kitchen card, the dashboard or the menu editor is cut off or off-screen (bounding
// boxes within the viewport or a scroll area the user can scroll, no text cut short), the
// ticket and Pay are always on screen on the till, and axe-core finds no serious
// accessibility violation. Screenshots: test-artifacts/screenshots/layout-*.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { REPO, startNode, stopNode } from './nodes.js';

const SHOTS = join(REPO, 'test-artifacts', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const T = 15000;
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const SIZES = [
  [800, 480],
  [1024, 768],
  [1280, 800],
  [1920, 1080],
];

let hub, browser;

async function setLang(page, lang) {
  const cur = await page.evaluate(() => document.documentElement.lang);
  if (cur !== lang) await page.evaluate(() => document.querySelector('[data-testid=lang-toggle]').click());
  await page.waitForFunction((l) => document.documentElement.lang === l, lang);
}

/**
 * What a person would see wrong under `root`: controls and labelled parts outside the
 * viewport (and not in an area that scrolls to them), cut by an ancestor that hides what
 * overflows, or text cut short (an ellipsis, or text wider than its box).
 */
async function problems(page, root) {
  return page.evaluate((rootSel) => {
    const vw = innerWidth;
    const vh = innerHeight;
    const out = [];
    const rootEl = document.querySelector(rootSel);
    if (!rootEl) return [`${rootSel} is not on the page`];
    const name = (e) =>
      `${e.tagName.toLowerCase()}${e.dataset.testid ? `[${e.dataset.testid}]` : ''} "${(e.innerText || e.value || e.getAttribute('aria-label') || '').trim().slice(0, 40)}"`;
    const scrolls = (a, axis) => {
      const s = getComputedStyle(a);
      const o = axis === 'x' ? s.overflowX : s.overflowY;
      return (o === 'auto' || o === 'scroll') && (axis === 'x' ? a.scrollWidth > a.clientWidth : a.scrollHeight > a.clientHeight);
    };
    const hides = (a) => {
      const s = getComputedStyle(a);
      return [s.overflowX, s.overflowY].some((o) => o === 'hidden' || o === 'clip');
    };
    const scrollers = [...rootEl.querySelectorAll('*')].filter((a) => {
      const s = getComputedStyle(a);
      return [s.overflowX, s.overflowY].some((o) => o === 'auto' || o === 'scroll');
    });
    const els = [
      ...rootEl.querySelectorAll('button, input, select, textarea, a[href], [data-testid], h1, h2, h3, th, td, label, .job-head > *'),
      ...scrollers,
    ];
    for (const e of els) {
      const r = e.getBoundingClientRect();
      const st = getComputedStyle(e);
      if (r.width === 0 || r.height === 0 || st.visibility === 'hidden' || st.display === 'none') continue;
      // Inside something the user scrolls: reachable, judged against that area instead.
      let scrollX = false;
      let scrollY = false;
      let inScroller = false;
      for (let a = e.parentElement; a && a !== document.documentElement; a = a.parentElement) {
        if (scrolls(a, 'x')) scrollX = true;
        if (scrolls(a, 'y')) scrollY = true;
        // Beyond the nearest area that scrolls, that area is what is judged (it is in the list).
        inScroller ||= scrollX || scrollY;
        if (!inScroller && hides(a)) {
          const b = a.getBoundingClientRect();
          if (r.left < b.left - 1 || r.right > b.right + 1 || r.top < b.top - 1 || r.bottom > b.bottom + 1) {
            out.push(`cut by its container: ${name(e)}`);
            break;
          }
        }
      }
      const docScrollsY = document.scrollingElement.scrollHeight > vh;
      if (!scrollX && (r.left < -1 || r.right > vw + 1)) out.push(`off-screen sideways: ${name(e)} (${Math.round(r.left)}..${Math.round(r.right)} of ${vw})`);
      if (!scrollY && !docScrollsY && (r.top < -1 || r.bottom > vh + 1)) out.push(`off-screen: ${name(e)} (${Math.round(r.top)}..${Math.round(r.bottom)} of ${vh})`);
      // Text cut short: an ellipsis doing its job, or text wider than a box that hides it.
      if (['hidden', 'clip'].includes(st.overflowX) && e.scrollWidth > e.clientWidth + 1 && (e.innerText || '').trim())
        out.push(`text cut: ${name(e)}`);
    }
    return [...new Set(out)];
  }, root);
}

/** The elements `selectors` are wholly on screen, without scrolling. */
async function onScreen(page, selectors) {
  const missing = [];
  for (const sel of selectors) {
    const box = await page.locator(sel).first().boundingBox();
    const { width, height } = page.viewportSize();
    if (!box || box.x < -1 || box.y < -1 || box.x + box.width > width + 1 || box.y + box.height > height + 1)
      missing.push(`${sel} ${box ? `${Math.round(box.x)},${Math.round(box.y)} ${Math.round(box.width)}x${Math.round(box.height)}` : 'missing'}`);
  }
  return missing;
}

/** axe-core's serious and critical violations under `root`. */
async function axe(page, root) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: AXE });
  const found = await page.evaluate(async (sel) => {
    const r = await window.axe.run(sel, { resultTypes: ['violations'] });
    return r.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  }, root);
  return found;
}

async function check(page, what, root, mustShow = []) {
  const bad = [...(await problems(page, root)), ...(await onScreen(page, mustShow)).map((m) => `not on screen: ${m}`)];
  const a11y = await axe(page, root);
  return [...bad.map((b) => `${what}: ${b}`), ...a11y.map((v) => `${what}: axe ${v}`)];
}

describe('layouts at the till sizes and the kitchen TV, en and ar', () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    hub = await startNode('hub', ['--role', 'hub', '--demo']);
    browser = await chromium.launch({ executablePath: CHROMIUM });
  });
  after(async () => {
    await browser?.close();
    stopNode(hub);
  });

  it('shows one digit style per language, as the shop sets it', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const set = (style) =>
      fetch(`${hub.url}/api/mutations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          mutations: [{ mid: crypto.randomUUID(), table: 'shop_settings', action: 'merge', row: { id: 'shop', arabic_digits: style } }],
        }),
      });
    try {
      await page.goto(`${hub.url}/#/kds`);
      await page.locator('article.job').first().waitFor({ timeout: T });
      await setLang(page, 'ar');
      const texts = async () => (await page.locator('article.job .job-head').allInnerTexts()).join(' ');
      // Arabic-Indic digits everywhere on the card, the age too (it once stayed Latin).
      await page.waitForFunction(() => /[٠-٩]/.test(document.querySelector('[data-testid=job-age]')?.textContent ?? ''));
      assert.doesNotMatch(await texts(), /#[0-9]|[0-9]:[0-9]/, await texts());
      assert.equal((await set('latin')).status, 200);
      await page.waitForFunction(() => /^[0-9:]+$/.test(document.querySelector('[data-testid=job-age]')?.textContent?.trim() ?? ''));
      assert.doesNotMatch(await texts(), /[٠-٩]/, await texts());
      await page.screenshot({ path: join(SHOTS, 'layout-kds-latin-digits-ar-rtl.png') });
    } finally {
      await set('arabic');
      await setLang(page, 'en');
      await page.close();
    }
  });

  it('bumps a ticket of a one-tap station straight to ready', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    try {
      await page.goto(`${hub.url}/#/kds`);
      await page.locator('article.job').first().waitFor({ timeout: T });
      // The grill station, set to one tap on this screen (the choice stays on the device).
      await page.locator('.station-btn[data-station=grill]').click();
      await page.getByTestId('one-tap').click();
      assert.equal(await page.getByTestId('one-tap').getAttribute('aria-pressed'), 'true');
      const { rows } = await (await fetch(`${hub.url}/api/tables/job_order_header`)).json();
      const queued = rows.find((r) => r.station === 'grill' && r.status === 'queued');
      assert.ok(queued, 'the demo has a queued grill ticket');
      const card = page.locator('article.job[data-station=grill]').filter({ hasText: `#${queued.order_no}` }).first();
      await card.getByTestId('bump').click();
      const deadline = Date.now() + T;
      let job;
      while (Date.now() < deadline) {
        job = (await (await fetch(`${hub.url}/api/entities/job/${queued.id}`)).json()).payload;
        if (job.status === 'ready') break;
        await new Promise((ok) => setTimeout(ok, 100));
      }
      assert.equal(job.status, 'ready', 'one tap: queued to ready');
      assert.ok(job.started_at && job.ready_at);
      await page.reload();
      await page.getByTestId('one-tap').waitFor({ timeout: T });
      assert.equal(await page.getByTestId('one-tap').getAttribute('aria-pressed'), 'true', 'kept on this screen');
      await page.getByTestId('one-tap').click();
    } finally {
      await page.close();
    }
  });

  for (const [w, h] of SIZES) {
    it(`fits ${w}x${h}`, async () => {
      const page = await browser.newPage({ viewport: { width: w, height: h } });
      const found = [];
      try {
        for (const lang of ['en', 'ar']) {
          const tag = `${w}x${h}-${lang === 'ar' ? 'ar-rtl' : 'en'}`;
          // The till, with an order of the demo open.
          await page.goto(`${hub.url}/#/till`);
          await page.locator('[data-testid=ticket], [data-testid=open-shift-form]').first().waitFor({ timeout: T });
          await setLang(page, lang);
          const form = page.getByTestId('open-shift-form');
          if (await form.isVisible()) {
            await form.locator('input[name=cashier]').fill('Mona');
            await form.locator('input[name=float]').fill('100');
            await form.getByRole('button').click();
          }
          // A small till opens its open orders as a panel over the menu.
          await page.getByTestId('ticket').waitFor({ timeout: T });
          const toggle = page.getByTestId('orders-toggle');
          if (await toggle.isVisible()) {
            await toggle.click();
            await page.locator('[data-testid=open-orders] [data-order-no]').first().waitFor({ timeout: T });
            await page.screenshot({ path: join(SHOTS, `layout-till-orders-${tag}.png`) });
            found.push(...(await check(page, `till orders ${tag}`, '[data-testid=open-orders]')));
            // The panel closes without choosing an order too.
            await page.getByTestId('orders-close').click();
            await page.getByTestId('open-orders').waitFor({ state: 'hidden', timeout: T });
            await toggle.click();
          }
          await page.locator('[data-testid=open-orders] [data-order-no]').first().click();
          await page.getByTestId('ticket').locator('[data-line]').first().waitFor({ timeout: T });
          await page.screenshot({ path: join(SHOTS, `layout-till-${tag}.png`) });
          found.push(...(await check(page, `till ${tag}`, '.shell', ['[data-testid=ticket]', '[data-testid=pay]', '[data-testid=send-kitchen]'])));
          // The payment dialog.
          await page.getByTestId('pay').click();
          await page.getByTestId('payment-dialog').waitFor({ timeout: T });
          await page.screenshot({ path: join(SHOTS, `layout-payment-${tag}.png`) });
          const dialogButtons = await page.locator('[data-testid=payment-dialog] button').count();
          const buttons = [...Array(dialogButtons).keys()].map((i) => `[data-testid=payment-dialog] button >> nth=${i}`);
          found.push(...(await check(page, `payment ${tag}`, '[data-testid=payment-dialog]', buttons)));
          await page.keyboard.press('Escape');
          await page.getByTestId('payment-dialog').waitFor({ state: 'detached', timeout: T });
          // The kitchen screen.
          await page.goto(`${hub.url}/#/kds`);
          await page.locator('article.job').first().waitFor({ timeout: T });
          await page.screenshot({ path: join(SHOTS, `layout-kds-${tag}.png`) });
          found.push(...(await check(page, `kds ${tag}`, '.shell')));
          // The dashboard, and its menu editor.
          await page.goto(`${hub.url}/#/dashboard`);
          await page.getByTestId('menu-editor').waitFor({ timeout: T });
          await page.screenshot({ path: join(SHOTS, `layout-dashboard-${tag}.png`) });
          found.push(...(await check(page, `dashboard ${tag}`, '.shell')));
          // The dashboard opens on the day; the node's details are on Diagnostics.
          await page.getByTestId('day').waitFor({ timeout: T });
          await page.goto(`${hub.url}/#/diagnostics`);
          await page.getByTestId('node-status').waitFor({ timeout: T });
          await page.screenshot({ path: join(SHOTS, `layout-diagnostics-${tag}.png`) });
          found.push(...(await check(page, `diagnostics ${tag}`, '.shell')));
          await page.goto(`${hub.url}/#/dashboard`);
          await page.getByTestId('menu-editor').waitFor({ timeout: T });
          await page.getByTestId('menu-editor').scrollIntoViewIfNeeded();
          await page.screenshot({ path: join(SHOTS, `layout-menu-${tag}.png`) });
          found.push(...(await check(page, `menu editor ${tag}`, '[data-testid=menu-editor]')));
          await setLang(page, 'en');
        }
      } finally {
        await page.close();
      }
      assert.deepEqual(found, [], `\n${found.join('\n')}`);
    });
  }
});
