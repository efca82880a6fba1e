// Opening the demo page as a bare host for gotalk.js, for the specs that drive the client
// themselves.

import type { Page } from '@playwright/test';

// The client's global, as gotalk.d.ts declares it (types only: nothing is imported).
declare const gotalk: typeof import('../crates/gateway/client/gotalk').default;

/** An empty script, in place of one the page would load. */
export const EMPTY_SCRIPT = { contentType: 'text/javascript; charset=utf-8', body: '' };

/**
 * Opens the demo page on `origin` with its own script (demo.js) held back, so the page's only
 * socks are the test's. The page itself comes from the server: Chromium lets a page open
 * WebSockets to 127.0.0.1 only when it came from a local address too, which a page made up
 * by the test (route.fulfill) did not.
 */
export async function openQuiet(page: Page, origin: string): Promise<void> {
  await page.route(new URL('/demo.js', origin).href, (route) => route.fulfill(EMPTY_SCRIPT));
  await page.goto(origin);
}

/** The demo page on `origin`, quiet (see `openQuiet`), with gotalk.js's wasm ready. */
export async function load(page: Page, origin: string): Promise<void> {
  await openQuiet(page, origin);
  await page.evaluate(() => gotalk.ready);
}
