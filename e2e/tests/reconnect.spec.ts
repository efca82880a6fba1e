// Many pages and one server restart: their keepalives must not all come back at the same
// moment (a thundering herd), yet each must come back within its backoff bound. Prints the
// spread of the reconnect moments.

import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';

const PAGES = 8;
/** The client's largest reconnect delay (its default `max`), ms. */
const MAX_DELAY_MS = 5_000;
/** Slack over the bound for a loaded machine: eight Chromium pages on two cores. */
const SLACK_MS = 2_500;

test('pages reconnecting after one restart come back spread out, each within its bound', async ({
  browser,
  startServer,
  browserErrors,
}) => {
  test.setTimeout(60_000);
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer();
  const contexts = await Promise.all(Array.from({ length: PAGES }, () => browser.newContext()));
  try {
    const pages: Page[] = [];
    for (const context of contexts) {
      browserErrors.watch(context);
      const page = await context.newPage();
      // Only the test's sock on each page: demo.js is held back.
      await page.route(new URL('/demo.js', server.http).href, (route) =>
        route.fulfill({ contentType: 'text/javascript', body: '' }),
      );
      await page.goto(server.http);
      await page.evaluate(async () => {
        const w = window as any;
        w.s = w.gotalk.connection();
        w.reopened = null;
        w.s.on('state', (state: string) => {
          if (state === 'open' && w.wasDown) w.reopened = Date.now();
          if (state === 'reconnecting') w.wasDown = true;
        });
        await w.s.request('greet', { name: 'herd' });
      });
      pages.push(page);
    }

    await server.kill();
    for (const page of pages) await page.waitForFunction(() => (window as any).s.state === 'reconnecting');
    // Down long enough for every page to have failed a few attempts, so the delays have grown
    // and each page's own random share of them decides when it comes back.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    await server.start();
    const restarted = Date.now();

    const moments: number[] = [];
    for (const page of pages) {
      await page.waitForFunction(() => (window as any).reopened !== null, null, { timeout: MAX_DELAY_MS + SLACK_MS });
      const { reopened, answer } = await page.evaluate(async () => {
        const w = window as any;
        return { reopened: w.reopened as number, answer: await w.s.request('greet', { name: 'back' }) };
      });
      expect(answer).toEqual({ greeting: 'Hello back' });
      moments.push(reopened - restarted);
    }
    moments.sort((a, b) => a - b);
    const spread = moments[moments.length - 1] - moments[0];
    const median = (moments[(PAGES - 1) >> 1] + moments[PAGES >> 1]) / 2;
    const figure = `${PAGES} pages reconnected ${moments[0]}..${moments[PAGES - 1]} ms after the restart ` +
      `(median ${median} ms, spread ${spread} ms): ${moments.join(', ')}`;
    console.log(figure);
    test.info().annotations.push({ type: 'reconnect spread', description: figure });

    // Within the bound: the largest delay, plus slack.
    expect(moments[PAGES - 1]).toBeLessThanOrEqual(MAX_DELAY_MS + SLACK_MS);
    // Not a herd: with a randomised share of delays of a second or more, eight pages landing
    // within 20 ms of each other is too unlikely to happen by chance.
    expect(spread).toBeGreaterThan(20);
  } finally {
    await Promise.all(contexts.map((context) => context.close()));
  }
});
