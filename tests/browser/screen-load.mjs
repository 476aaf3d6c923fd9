// Opens each screen of a running node in Debian's chromium and prints, as one JSON line per
// screen, how long until it is usable (the UI marks <html data-ready>), the API bytes it
// downloaded (as sent, compressed) and its JS heap. Used by `scripts/bench --only history`.
//   node tests/browser/screen-load.mjs http://127.0.0.1:PORT
import { chromium } from 'playwright-core';

const url = process.argv[2];
if (!url) {
  console.error('usage: node screen-load.mjs NODE_URL');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
try {
  for (const screen of ['till', 'kds', 'expo', 'dashboard']) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Network.enable');
    const api = new Set();
    let bytes = 0;
    cdp.on('Network.requestWillBeSent', (e) => {
      if (new URL(e.request.url).pathname.startsWith('/api/')) api.add(e.requestId);
    });
    cdp.on('Network.loadingFinished', (e) => {
      if (api.has(e.requestId)) bytes += e.encodedDataLength;
    });
    const t0 = Date.now();
    await page.goto(`${url}/#/${screen}`);
    await page.waitForSelector('html[data-ready=true]', { timeout: 120000 });
    // One frame painted with the data.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
    const ms = Date.now() - t0;
    const heap = await cdp.send('Runtime.getHeapUsage');
    console.log(JSON.stringify({ screen, ms, api_bytes: bytes, heap_mib: heap.usedSize / 1048576 }));
    await ctx.close();
  }
} finally {
  await browser.close();
}
