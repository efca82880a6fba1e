// The keepalive's browser events, and the ES-module entry, in real Chromium: going offline
// parks the connection until the `online` event; a tab becoming visible again brings a
// distant reconnect forward; a server that stops with 1001 (going away) is rejoined soon.

import type { BrowserContext, Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import type { GotalkServer } from '../server';

// A schedule slow enough that only the event under test can explain a quick reconnect.
const SLOW = { min: 20_000, max: 60_000 };

/** Opens the demo page of `server` and a keepalive sock `window.s` with `options`, connected. */
async function connected(page: Page, server: GotalkServer, options: object): Promise<void> {
  await page.goto(server.http);
  await page.evaluate(async (options) => {
    const s = ((window as any).s = (window as any).gotalk.connection(options));
    (window as any).closes = [];
    s.on('close', (err: Error | null) => (window as any).closes.push(err && err.message));
    await s.request('greet', { name: 'a' });
  }, options);
}

/** Kills `server`; the sock plans a reconnect that `SLOW` puts seconds away. */
async function killedWithDistantReconnect(page: Page, server: GotalkServer): Promise<void> {
  await server.kill();
  await page.waitForFunction(() => (window as any).s.state === 'reconnecting');
  const wait = await page.evaluate(() => (window as any).s.nextReconnectAt - Date.now());
  expect(wait).toBeGreaterThan(5_000);
}

/** Starts `server` again and brings the browser back online: the sock is open within 3 s. */
async function backOnline(page: Page, context: BrowserContext, server: GotalkServer) {
  await server.start();
  const back = Date.now();
  await context.setOffline(false);
  await page.waitForFunction(() => (window as any).s.state === 'open', null, { timeout: 5_000 });
  expect(Date.now() - back).toBeLessThan(3_000);
}

test('offline waits for the online event, then reconnects within a second', async ({
  page,
  context,
  startServer,
  browserErrors,
}) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer();
  await connected(page, server, SLOW);

  await context.setOffline(true);
  await server.kill();
  await page.waitForFunction(() => (window as any).s.state === 'offline');
  expect(await page.evaluate(() => (window as any).s.nextReconnectAt)).toBeNull();

  await backOnline(page, context, server);
  const reply = await page.evaluate(() => (window as any).s.request('greet', { name: 'b' }));
  expect(reply).toEqual({ greeting: 'Hello b' });
});

test('going offline while a reconnect waits drops it until the online event', async ({
  page,
  context,
  startServer,
  browserErrors,
}) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer();
  await connected(page, server, SLOW);

  // The close comes first, seen while the browser is online: a distant reconnect is planned.
  await killedWithDistantReconnect(page, server);
  // Parked by the event itself, well before the planned attempt could fail offline.
  await context.setOffline(true);
  await page.waitForFunction(() => (window as any).s.state === 'offline', null, {
    timeout: 2_000,
  });
  expect(await page.evaluate(() => (window as any).s.nextReconnectAt)).toBeNull();

  await backOnline(page, context, server);
});

test('a tab becoming visible retries a distant reconnect at once', async ({
  page,
  startServer,
  browserErrors,
}) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer();
  await connected(page, server, SLOW);

  await killedWithDistantReconnect(page, server);
  await server.start();
  // Headless Chromium's tab is always visible; the event is what the client listens for.
  await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
  await page.waitForFunction(() => (window as any).s.state === 'open', null, { timeout: 5_000 });
});

test('a server going away (1001) is rejoined soon, whatever the schedule', async ({
  page,
  startServer,
  browserErrors,
}) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer();
  // min 1 s: going away reconnects within [0, 2 s), while a plain failure would first wait
  // up to 1 s and then up to 2 s more.
  await connected(page, server, { min: 1_000, max: 60_000 });

  await server.stop(); // SIGTERM: the gateway closes every WebSocket with 1001
  await page.waitForFunction(() => (window as any).s.state !== 'open');
  const wait = await page.evaluate(() => (window as any).s.nextReconnectAt - Date.now());
  expect(wait).toBeLessThan(2_000);
  await server.start();
  await page.waitForFunction(() => (window as any).s.state === 'open', null, { timeout: 10_000 });
  expect(await page.evaluate(() => (window as any).closes)).toEqual([
    'gotalk: the connection closed (code 1001: server shutting down)',
  ]);
});

test('the ES module entry offers the same API', async ({ page }) => {
  await page.goto('/');
  const result = await page.evaluate(async () => {
    const m = await import('/gotalk/gotalk.mjs' as string);
    const s = m.connection();
    const reply = await s.request('greet', { name: 'module' });
    s.end();
    return {
      greeting: reply.greeting,
      named: m.default.connection === m.connection && typeof m.Sock === 'function',
      address: m.default.defaultResponderAddress,
    };
  });
  expect(result.greeting).toBe('Hello module');
  expect(result.named).toBe(true);
  expect(result.address).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/gotalk\/$/);
});

test('heartbeats go both ways: the page sends them on its interval and hears the server', async ({
  page,
  startServer,
}) => {
  const server = await startServer(['--heartbeat', '0.2']);
  // Heartbeats the page writes: `h`, 4 hex digits of load, 8 of unix time, 13 bytes in all.
  const sent: string[] = [];
  page.on('websocket', (ws) =>
    ws.on('framesent', (frame) => {
      const bytes = typeof frame.payload === 'string' ? Buffer.from(frame.payload) : frame.payload;
      if (bytes.length === 13 && bytes[0] === 0x68) sent.push(bytes.toString('latin1'));
    }),
  );
  await page.goto(server.http);
  const heard = await page.evaluate(async () => {
    const s = new (window as any).gotalk.Sock();
    s.heartbeatInterval = 150;
    const heartbeats: { time: number; load: number }[] = [];
    s.on('heartbeat', (h: { time: Date; load: number }) =>
      heartbeats.push({ time: h.time.getTime(), load: h.load }),
    );
    s.openKeepAlive();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    s.sendHeartbeat(1);
    await s.request('greet', { name: 'flush' });
    s.end();
    return heartbeats;
  });
  // The server's, every 0.2 s, with its clock in whole seconds.
  expect(heard.length).toBeGreaterThanOrEqual(3);
  expect(Math.abs(heard[0].time - Date.now())).toBeLessThan(10_000);
  // The page's own, every 150 ms at load 0, and the explicit one at full load.
  expect(sent.length).toBeGreaterThanOrEqual(4);
  expect(sent.filter((h) => /^hffff[0-9a-f]{8}$/.test(h))).toHaveLength(1);
  const now = Math.floor(Date.now() / 1000);
  expect(Math.abs(parseInt(sent[0].slice(5), 16) - now)).toBeLessThan(10);
});
