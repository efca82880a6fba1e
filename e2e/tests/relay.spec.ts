// The relay in the browser: two pages learn their ids from the gateway and exchange a direct
// message by id, each seeing the other's id as the server knows it; faults reject the
// acknowledged form and arrive as `undelivered` for the fire-and-forget one; a reconnect gets
// a new id. Each page holds only gotalk.js (the demo's own script is held back).

import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';

// The client's global, as gotalk.d.ts declares it (types only: nothing is imported).
declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

/** Opens the demo page without its script, waits for the wasm, connects, and returns the id. */
async function connect(page: Page, origin: string): Promise<string> {
  await page.route(new URL('/demo.js', origin).href, (route) =>
    route.fulfill({ contentType: 'text/javascript; charset=utf-8', body: '' }),
  );
  await page.goto(origin);
  return page.evaluate(async () => {
    await gotalk.ready;
    const s = gotalk.connection();
    const w = window as any;
    w.sock = s;
    w.inbox = [];
    w.notices = [];
    s.on('relay', (m) => w.inbox.push(m));
    s.on('undelivered', (n) => w.notices.push(n));
    return new Promise<string>((resolve) => s.once('id', resolve));
  });
}

/** The messages a page has received so far, once there are `n`. */
async function received(page: Page, n: number): Promise<any[]> {
  await page.waitForFunction((n) => (window as any).inbox.length >= n, n);
  return page.evaluate(() => (window as any).inbox);
}

test('two pages exchange a direct message by id', async ({ page, context, baseURL }) => {
  const other = await context.newPage();
  const alice = await connect(page, baseURL!);
  const bob = await connect(other, baseURL!);
  expect(alice).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  expect(bob).not.toEqual(alice);
  expect(await page.evaluate(() => (window as any).sock.id)).toEqual(alice);

  // Bob writes to Alice: the promise resolves once the message is queued for her.
  await other.evaluate(
    (to) => (window as any).sock.relay(to, 'dm', { text: 'hi Alice 😀', n: 1 }),
    alice,
  );
  expect(await received(page, 1)).toEqual([
    { from: bob, topic: 'dm', body: { text: 'hi Alice 😀', n: 1 } },
  ]);

  // Alice answers fire and forget, to the id the server gave her.
  await page.evaluate((to) => (window as any).sock.relayNotify(to, 'dm', 'hi Bob'), bob);
  expect(await received(other, 1)).toEqual([{ from: alice, topic: 'dm', body: 'hi Bob' }]);
  await other.close();
});

test('topics that JSON escapes reach the other page as sent', async ({ page, context, baseURL }) => {
  const other = await context.newPage();
  const alice = await connect(page, baseURL!);
  await connect(other, baseURL!);
  const topics = ['say "hi"', 'C:\\dir\\', 'two\nlines', 'a\tb', '\u001b[2J\r\u0000', '\n'.repeat(255)];
  const faults = await other.evaluate(
    async ([to, topics]) => {
      const s = (window as any).sock;
      for (const topic of topics as string[]) await s.relay(to, topic, topic);
      for (const topic of topics as string[]) s.relayNotify(to, topic, 'again');
      // The limit counts the decoded topic: 256 newlines are one too many.
      return s.relay(to, '\n'.repeat(256), 1).then(() => 'resolved', (e: Error) => e.message);
    },
    [alice, topics] as const,
  );
  expect(faults).toBe('bad header: the topic is 256 bytes, the limit is 255');
  const got = await received(page, 2 * topics.length);
  expect(got.map((m) => [m.topic, m.body])).toEqual([
    ...topics.map((t) => [t, t]),
    ...topics.map((t) => [t, 'again']),
  ]);
  await other.close();
});

test('faults reject the request and arrive as undelivered notices', async ({ page, baseURL }) => {
  await connect(page, baseURL!);
  const nobody = '00000000-0000-4000-8000-000000000000';
  const faults = await page.evaluate(async (nobody) => {
    const s = (window as any).sock;
    const fault = (p: Promise<unknown>) => p.then(() => 'resolved', (e: Error) => e.message);
    return [
      await fault(s.relay(nobody, 'dm', 1)),
      await fault(s.relay('not an id', 'dm', 1)),
      await fault(s.relay(nobody, '', 1)),
      await fault(s.relay(s.id, 'dm', 'x'.repeat(64 * 1024))),
    ];
  }, nobody);
  expect(faults[0]).toBe('unknown peer');
  expect(faults[1]).toMatch(/^bad header: /);
  expect(faults[2]).toBe('bad header: the topic is empty');
  expect(faults[3]).toMatch(/^too large: the body is 65538 bytes, the limit is 65536$/);

  await page.evaluate((nobody) => (window as any).sock.relayNotify(nobody, 'dm', 1), nobody);
  await page.waitForFunction(() => (window as any).notices.length >= 1);
  expect(await page.evaluate(() => (window as any).notices)).toEqual([
    { to: nobody, topic: 'dm', error: 'unknown peer' },
  ]);
});

test('a reconnect emits a new id and messages reach it', async ({ page, context, startServer, browserErrors }) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer();
  const first = await connect(page, server.http);
  const next = page.evaluate(
    () => new Promise<string>((resolve) => (window as any).sock.once('id', resolve)),
  );
  // The server goes away and comes back; the keepalive reconnects and the page learns its
  // new id from the same Sock's `id` event. While disconnected it has none.
  await server.kill();
  await page.waitForFunction(() => (window as any).sock.state !== 'open');
  expect(await page.evaluate(() => (window as any).sock.id)).toBeNull();
  await server.start();
  const second = await next;
  expect(second).not.toEqual(first);
  expect(await page.evaluate(() => (window as any).sock.id)).toEqual(second);

  const other = await context.newPage();
  await connect(other, server.http);
  const fault = await other.evaluate(
    (to) => (window as any).sock.relay(to, 'dm', 'old').then(() => 'resolved', (e: Error) => e.message),
    first,
  );
  expect(fault).toBe('unknown peer');
  await other.evaluate((to) => (window as any).sock.relay(to, 'dm', 'new'), second);
  expect((await received(page, 1))[0]).toEqual({ from: await other.evaluate(() => (window as any).sock.id), topic: 'dm', body: 'new' });
  await other.close();
});
