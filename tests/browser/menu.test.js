// The dashboard's menu editor on a real demo hub, as a manager runs the menu with it: an
// item's every field (price and tax class here), sold out and back with a switch, modifiers
// added, repriced and deleted, categories added, renamed, moved and deleted (one that still
// has items is refused, with how many), an item deleted after a confirmation; each write
// checked on the hub's API. Then screenshots at 1280x800 and 1024x768 in English and Arabic,
// and nothing of the editor sticks out sideways at 1024x768.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
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

/** An entity as the hub has it now (its payload), or null when it is gone (404). */
async function entity(kind, id) {
  const r = await fetch(`${hub.url}/api/entities/${kind}/${encodeURIComponent(id)}`);
  if (r.status === 404) return null;
  const body = await r.text();
  assert.equal(r.status, 200, `${kind} ${id}: ${body}`);
  return JSON.parse(body).payload;
}

/** Waits until `check(payload)` holds for the entity on the hub. */
async function until(kind, id, check, what) {
  const end = Date.now() + T;
  let last;
  for (;;) {
    last = await entity(kind, id);
    if (check(last)) return last;
    if (Date.now() > end) assert.fail(`${kind} ${id}: ${what}; hub has ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Puts `locator`'s element at the top of the screen's scroller. */
async function scrollTop(locator) {
  await locator.evaluate((el) => el.scrollIntoView({ block: 'start' }));
}

/** Buttons, inputs and selects of the editor that lie outside the viewport sideways. */
async function offScreen(p) {
  return p.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    return [...document.querySelectorAll('[data-testid=menu-editor] :is(button, input, select, textarea, [role=alert])')]
      .map((e) => [e.dataset.testid || e.dataset.field || e.getAttribute('name') || e.textContent.trim() || e.tagName, e.getBoundingClientRect()])
      .filter(([, r]) => r.width > 0 && (r.left < -1 || r.right > vw + 1))
      .map(([n, r]) => `${n} [${Math.round(r.left)}..${Math.round(r.right)}]`);
  });
}

/** Toasts dismissed, so they cover nothing in a screenshot. */
async function clearToasts(p) {
  for (const x of await p.locator('.toasts .toast').all()) await x.click({ timeout: 1000 }).catch(() => {});
}

describe('menu editor', () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    hub = await startNode('hub', ['--role', 'hub', '--demo']);
    browser = await chromium.launch({ executablePath: CHROMIUM });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${hub.url}/#/dashboard`);
    await setLang(page, 'en');
    await page.getByTestId('menu-editor').locator('[data-testid=menu-row][data-code=G02]').waitFor({ timeout: T });
  });

  after(async () => {
    await browser?.close();
    stopNode(hub);
  });

  it("edits an item's price and tax class, and marks it sold out and back with a switch", async () => {
    const row = page.locator('[data-testid=menu-row][data-code=G02]');
    const save = row.getByTestId('save-item');
    // Nothing typed: nothing to save.
    assert.ok(await save.isDisabled(), 'save is off until something is edited');
    await row.locator('[data-field=price]').fill('39.50');
    await row.locator('[data-field=tax_class]').selectOption('zero');
    await row.getByTestId('item-unsaved').waitFor({ timeout: T });
    await save.click();
    await until('item', 'item-G02', (p) => p.price === 3950 && p.tax_class === 'zero', 'price 39.50, zero-rated');
    await row.getByTestId('item-unsaved').waitFor({ state: 'detached', timeout: T });
    // The other fields as they were.
    const g02 = await entity('item', 'item-G02');
    assert.equal(g02.name_en, 'Chicken shish tawook');
    assert.equal(g02.station, 'grill');

    // Sold out is a state: the switch is on while it sells, a pill shows only when sold out.
    const sw = row.getByTestId('toggle-available');
    assert.equal(await sw.getAttribute('role'), 'switch');
    assert.equal(await sw.getAttribute('aria-checked'), 'true');
    assert.equal(await row.getByTestId('sold-out-pill').count(), 0);
    await sw.click();
    await until('item', 'item-G02', (p) => p.available === false, 'sold out');
    await row.getByTestId('sold-out-pill').waitFor({ timeout: T });
    await page.waitForFunction(() => document.querySelector('[data-code=G02] [data-testid=toggle-available]').getAttribute('aria-checked') === 'false');
    await sw.click();
    await until('item', 'item-G02', (p) => p.available === true, 'available again');
    await row.getByTestId('sold-out-pill').waitFor({ state: 'detached', timeout: T });
    // Price and tax class stay what they were made.
    const after = await entity('item', 'item-G02');
    assert.equal(after.price, 3950);
    assert.equal(after.tax_class, 'zero');

    // The code too, and another item's code is refused on the spot.
    await row.locator('[data-field=code]').fill('G01');
    await save.click();
    await page.getByTestId('toast-error').filter({ hasText: 'G01' }).waitFor({ timeout: T });
    assert.equal((await entity('item', 'item-G02')).code, 'G02');
    await row.locator('[data-field=code]').fill('G02');
  });

  it("adds a modifier to an item, changes its price, deletes another", async () => {
    const row = page.locator('[data-testid=menu-row][data-code=G02]');
    await row.getByTestId('item-modifiers').click();
    const panel = row.getByTestId('modifiers');
    await panel.waitFor({ timeout: T });
    assert.equal(await panel.getByTestId('modifier-row').count(), 3);
    const add = panel.getByTestId('add-modifier');
    await add.locator('input[name=name_en]').fill('extra bread');
    await add.locator('input[name=name_ar]').fill('خبز إضافي');
    await add.locator('input[name=price]').fill('1.50');
    await add.getByRole('button').click();
    const bread = panel.locator('[data-testid=modifier-row][data-name="extra bread"]');
    await bread.waitFor({ timeout: T });
    let mods = (await until('item', 'item-G02', (p) => p.modifiers.some((m) => m.name_en === 'extra bread'), 'the new modifier')).modifiers;
    const added = mods.find((m) => m.name_en === 'extra bread');
    assert.equal(added.price, 150);
    assert.equal(added.name_ar, 'خبز إضافي');

    await bread.locator('[data-mfield=price]').fill('2.25');
    await bread.getByTestId('save-modifier').click();
    await until('item', 'item-G02', (p) => p.modifiers.find((m) => m.id === added.id)?.price === 225, 'the modifier at 2.25');

    await panel.locator('[data-testid=modifier-row][data-name=spicy]').getByTestId('delete-modifier').click();
    mods = (await until('item', 'item-G02', (p) => !p.modifiers.some((m) => m.name_en === 'spicy'), 'spicy gone')).modifiers;
    assert.deepEqual(mods.map((m) => m.name_en).sort(), ['extra bread', 'extra garlic sauce', 'no onion']);
    await panel.locator('[data-testid=modifier-row][data-name=spicy]').waitFor({ state: 'detached', timeout: T });
    assert.match(await row.getByTestId('item-modifiers').textContent(), /\(3\)/);
  });

  it('still saves the shop settings (now a part of its own)', async () => {
    const form = page.getByTestId('shop-settings');
    assert.equal(await form.getByRole('button').count(), 1);
    await form.locator('label', { hasText: 'Receipt title' }).first().locator('input').fill('Tax Invoice');
    await form.getByRole('button').click();
    const r = await until('settings', 'shop', (p) => p.receipt_title === 'Tax Invoice', 'the new receipt title');
    assert.equal(r.name, 'Capsule Grill House');
  });

  it('adds a category, renames it, moves it, refuses to delete one with items, deletes the empty one', async () => {
    const cats = page.getByTestId('categories');
    const add = cats.getByTestId('add-category');
    await add.locator('input[name=name_en]').fill('Breakfast');
    await add.locator('input[name=name_ar]').fill('فطور');
    await add.getByRole('button').click();
    const row = cats.locator('[data-testid=category-row][data-name=Breakfast]');
    await row.waitFor({ timeout: T });
    const id = await row.getAttribute('data-id');
    const made = await until('category', id, (p) => p?.name_en === 'Breakfast', 'added');
    assert.equal(made.name_ar, 'فطور');
    // Last on the tills: after Desserts.
    const desserts = await entity('category', 'cat-desserts');
    assert.ok(made.sort > desserts.sort, `new ${made.sort} after desserts ${desserts.sort}`);
    // The new item form offers it straight away.
    await page.locator('[data-testid=add-item] select[name=category] option', { hasText: 'Breakfast' }).waitFor({ state: 'attached', timeout: T });

    await row.locator('[data-cfield=name_en]').fill('Brunch');
    await row.locator('[data-cfield=name_ar]').fill('فطور متأخر');
    await row.getByTestId('save-category').click();
    await until('category', id, (p) => p.name_en === 'Brunch' && p.name_ar === 'فطور متأخر', 'renamed');
    const brunch = cats.locator(`[data-testid=category-row][data-id="${id}"]`);
    await brunch.locator('[data-testid=category-count]', { hasText: '0 items' }).waitFor({ timeout: T });

    // One place up: before Desserts now.
    await brunch.getByTestId('category-up').click();
    const sortOf = async (c) => (await entity('category', c)).sort;
    const end = Date.now() + T;
    while ((await sortOf(id)) >= (await sortOf('cat-desserts'))) {
      assert.ok(Date.now() < end, 'moved before Desserts');
      await new Promise((r) => setTimeout(r, 100));
    }
    await page.waitForFunction(
      (cid) => document.querySelector('[data-testid=category-row][data-id=cat-desserts]')?.previousElementSibling?.dataset.id === cid,
      id,
      { timeout: T },
    );
    const order = await cats.getByTestId('category-row').evaluateAll((rs) => rs.map((r) => r.dataset.id));
    assert.equal(order.indexOf(id), order.indexOf('cat-desserts') - 1, order.join(','));
    // Each category has its own place (sort) after the move.
    const sorts = await Promise.all(order.map(async (c) => (await entity('category', c)).sort));
    assert.deepEqual([...sorts].sort((a, b) => a - b), sorts, `sorts ${sorts}`);

    // Desserts still has its three items: refused here, saying how many.
    const dRow = cats.locator('[data-testid=category-row][data-id=cat-desserts]');
    await dRow.getByTestId('delete-category').click();
    const refusal = dRow.getByTestId('category-not-empty');
    await refusal.waitFor({ timeout: T });
    assert.match(await refusal.textContent(), /3 items/);
    assert.equal(await page.getByTestId('confirm-delete').count(), 0, 'no confirmation for a refused delete');
    assert.ok(await entity('category', 'cat-desserts'));

    // The empty one goes, after a confirmation.
    await brunch.getByTestId('delete-category').click();
    const dialog = page.getByTestId('confirm-delete');
    await dialog.waitFor({ timeout: T });
    assert.match(await dialog.textContent(), /Brunch/);
    await dialog.getByTestId('confirm-ok').click();
    await until('category', id, (p) => p === null, 'deleted');
    await brunch.waitFor({ state: 'detached', timeout: T });
    await dialog.waitFor({ state: 'detached', timeout: T });
  });

  it('deletes an item after a confirmation that orders keep their lines', async () => {
    const row = page.locator('[data-testid=menu-row][data-code=F04]');
    assert.equal((await entity('item', 'item-F04')).modifiers.length, 2);
    await row.getByTestId('delete-item').click();
    const dialog = page.getByTestId('confirm-delete');
    await dialog.waitFor({ timeout: T });
    const text = await dialog.textContent();
    assert.match(text, /F04/);
    assert.match(text, /keep their lines/);
    assert.match(text, /modifiers \(2\)/);
    await clearToasts(page);
    await scrollTop(page.getByTestId('menu-items'));
    await page.screenshot({ path: join(SHOTS, 'menu-delete-item-1280-en.png') });
    // Cancel leaves it; then delete.
    await dialog.getByTestId('confirm-cancel').click();
    await dialog.waitFor({ state: 'detached', timeout: T });
    assert.ok(await entity('item', 'item-F04'));
    await row.getByTestId('delete-item').click();
    await dialog.getByTestId('confirm-ok').click();
    await until('item', 'item-F04', (p) => p === null, 'deleted');
    await row.waitFor({ state: 'detached', timeout: T });
    // Its category says one item fewer.
    await page
      .locator('[data-testid=category-row][data-id=cat-fried] [data-testid=category-count]', { hasText: '3 items' })
      .waitFor({ timeout: T });
  });

  it('screenshots at 1280x800 and 1024x768 in English and Arabic; nothing sticks out sideways', async () => {
    // A sold-out item with its modifiers open in view; the other lists closed.
    for (const code of ['G01', 'G02']) {
      const b = page.locator(`[data-testid=menu-row][data-code=${code}] [data-testid=item-modifiers]`);
      if ((await b.getAttribute('aria-expanded')) === 'true') await b.click();
    }
    const g03 = page.locator('[data-testid=menu-row][data-code=G03]');
    await g03.getByTestId('toggle-available').click();
    await until('item', 'item-G03', (p) => p.available === false, 'sold out');
    await g03.getByTestId('sold-out-pill').waitFor({ timeout: T });
    await g03.getByTestId('item-modifiers').click();
    await g03.getByTestId('modifiers').waitFor({ timeout: T });

    for (const [w, h] of [
      [1280, 800],
      [1024, 768],
    ]) {
      await page.setViewportSize({ width: w, height: h });
      for (const lang of ['en', 'ar']) {
        await setLang(page, lang);
        await page.waitForTimeout(200);
        const tag = `${w}-${lang === 'ar' ? 'ar-rtl' : 'en'}`;
        if (w === 1024) {
          const out = await offScreen(page);
          assert.deepEqual(out, [], `off screen at ${w}x${h} (${lang}): ${out.join(', ')}`);
          const boxes = await page.locator('[data-testid=menu-row][data-code=G01] :is(button, input, select)').all();
          for (const b of boxes) {
            const box = await b.boundingBox();
            assert.ok(box && box.x >= 0 && box.x + box.width <= w, `G01 control at ${JSON.stringify(box)}`);
          }
          // Every control a finger can hit: 44 px tall at least.
          const small = await page.evaluate(() =>
            [...document.querySelectorAll('[data-testid=menu-editor] :is(button, input, select)')]
              .map((e) => [e.dataset.testid || e.dataset.field || e.getAttribute('name') || e.textContent.trim(), e.getBoundingClientRect().height])
              .filter(([, hh]) => hh > 0 && hh < 43.5)
              .map(([n, hh]) => `${n}:${hh}`),
          );
          assert.deepEqual(small, [], `controls under 44 px: ${small.join(', ')}`);
        }
        await clearToasts(page);
        await scrollTop(page.getByTestId('menu-editor'));
        await page.screenshot({ path: join(SHOTS, `menu-editor-${tag}.png`) });
        await scrollTop(page.getByTestId('categories'));
        await page.screenshot({ path: join(SHOTS, `menu-categories-${tag}.png`) });
        await scrollTop(page.locator('[data-testid=menu-section][data-category=cat-grill]'));
        await page.screenshot({ path: join(SHOTS, `menu-items-${tag}.png`) });
      }
    }
    await setLang(page, 'en');
    await page.setViewportSize({ width: 1280, height: 800 });
  });
});
