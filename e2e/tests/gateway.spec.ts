// What the gateway does for a browser besides gotalk itself: gotalk.js is revalidated with its
// ETag (a reload costs a 304 and the cached script still runs), and a page from an origin
// that is not allowed cannot open a WebSocket to it.

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test, expect } from '../fixtures';

test('gotalk.js: 200 with an ETag first, 304 on a reload, and the script runs both times', async ({ page }) => {
  const script = (url: string) => new URL(url).pathname === '/gotalk/gotalk.js';
  const seen: { status: number; etag?: string; ifNoneMatch?: string }[] = [];
  page.on('response', async (response) => {
    if (!script(response.url())) return;
    const sent = await response.request().allHeaders();
    seen.push({ status: response.status(), etag: response.headers()['etag'], ifNoneMatch: sent['if-none-match'] });
  });
  const runs = () => page.evaluate(async () => {
    const s = (window as any).gotalk.connection();
    const answer = await s.request('greet', { name: 'cached' });
    s.end();
    return answer;
  });

  await page.goto('/');
  expect(await runs()).toEqual({ greeting: 'Hello cached' });
  await page.reload();
  expect(await runs()).toEqual({ greeting: 'Hello cached' });

  expect(seen).toHaveLength(2);
  expect(seen[0].status).toBe(200);
  expect(seen[0].etag).toMatch(/^"[^"]+"$/);
  // The reload revalidates (Cache-Control: no-cache) with the ETag it was given.
  expect(seen[1]).toMatchObject({ status: 304, ifNoneMatch: seen[0].etag });
});

/** A page of another origin (a second local HTTP server) that opens a WebSocket to `target`. */
async function otherOrigin(): Promise<{ origin: string; close: () => Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!DOCTYPE html><title>elsewhere</title><p>another origin</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

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

test('a page from an origin that is not allowed is refused; --allow-origin lets it in', async ({
  page,
  startServer,
  browserErrors,
}) => {
  // Chromium reports the refused handshake itself.
  browserErrors.allow(/WebSocket connection to .* failed: .*403/);
  const elsewhere = await otherOrigin();
  try {
    const refusing = await startServer();
    const allowing = await startServer(['--allow-origin', elsewhere.origin]);
    const errors = browserErrors.errors.length;
    await page.goto(elsewhere.origin);

    const refused = await page.evaluate(tryWebSocket, `ws://127.0.0.1:${refusing.httpPort}/gotalk/`);
    expect(refused).toEqual({ opened: false, code: 1006 });
    await expect.poll(() => browserErrors.errors.slice(errors).join('\n')).toMatch(/403/);

    const allowed = await page.evaluate(tryWebSocket, `ws://127.0.0.1:${allowing.httpPort}/gotalk/`);
    expect(allowed).toEqual({ opened: true, code: 1000 });
  } finally {
    await elsewhere.close();
  }
});
