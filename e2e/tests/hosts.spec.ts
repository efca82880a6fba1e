// DNS rebinding, for real: a browser whose resolver maps evil.example to 127.0.0.1 loads a page
// from http://evil.example:PORT/, so the page's origin and the Host of everything it sends are
// evil.example:PORT, and both agree, as after a rebinding attack. The server on loopback
// refuses that host (421), so the page cannot open a socket, while a page from 127.0.0.1 can;
// `--allow-host evil.example` lets the same page in.

import type { Browser, BrowserContext } from '@playwright/test';
import { test, expect } from '../fixtures';
import { EMPTY_SCRIPT } from '../page';

const EVIL = 'evil.example';

/** Opens a WebSocket from the page to `url`; resolves with how it went. */
function tryWebSocket(url: string) {
  return new Promise<{ opened: boolean; code: number }>((resolve) => {
    const ws = new WebSocket(url);
    let opened = false;
    ws.onopen = () => {
      opened = true;
      ws.close(1000);
    };
    ws.onclose = (event) => resolve({ opened, code: event.code });
  });
}

test('a page from a name rebound to 127.0.0.1 cannot open the socket; 127.0.0.1 can; --allow-host lets it in', async ({
  playwright,
  launchOptions,
  server,
  startServer,
  browserErrors,
}) => {
  // The resolver rule is a browser-wide switch, so this test has a browser of its own.
  const browser: Browser = await playwright.chromium.launch({
    ...launchOptions,
    args: [...(launchOptions.args ?? []), `--host-resolver-rules=MAP ${EVIL} 127.0.0.1`],
  });
  try {
    const context: BrowserContext = await browser.newContext();
    browserErrors.watch(context);
    await context.route(/\/demo\.js$/, (route) => route.fulfill(EMPTY_SCRIPT));
    const port = server.httpPort;
    const refusedHost = `${EVIL}:${port}`;
    // Chromium reports the refused page and the refused handshake itself.
    browserErrors.allow(new RegExp(`Failed to load resource: .* 421 .*\\(http://${EVIL}:${port}/:`));
    browserErrors.allow(new RegExp(`WebSocket connection to 'ws://${EVIL}:${port}/gotalk/' failed: .*421`));

    const evil = await context.newPage();
    const page = await evil.goto(`http://${refusedHost}/`);
    expect(page!.status()).toBe(421);
    expect(await page!.text()).toContain(`host "${refusedHost}" is not allowed`);
    expect(await evil.evaluate(() => location.origin)).toBe(`http://${refusedHost}`);
    const refused = await evil.evaluate(tryWebSocket, `ws://${refusedHost}/gotalk/`);
    expect(refused).toEqual({ opened: false, code: 1006 });

    const local = await context.newPage();
    await local.goto(`http://127.0.0.1:${port}/`);
    const opened = await local.evaluate(tryWebSocket, `ws://127.0.0.1:${port}/gotalk/`);
    expect(opened).toEqual({ opened: true, code: 1000 });

    // The same page on a server that allows the name: it loads, and its socket opens and
    // talks (so the refusal above was the host check, not the resolver).
    const allowing = await startServer(['--allow-host', EVIL]);
    const allowedHost = `${EVIL}:${allowing.httpPort}`;
    const welcomed = await context.newPage();
    expect((await welcomed.goto(`http://${allowedHost}/`))!.status()).toBe(200);
    expect(await welcomed.evaluate(tryWebSocket, `ws://${allowedHost}/gotalk/`)).toEqual({ opened: true, code: 1000 });
    const greeting = await welcomed.evaluate(async () => {
      const s = (window as any).gotalk.connection();
      const answer = await s.request('greet', { name: 'rebound' });
      s.end();
      return answer;
    });
    expect(greeting).toEqual({ greeting: 'Hello rebound' });
  } finally {
    await browser.close();
  }
});
