// Resumable sessions in the browser, against `gotalk serve --resume-grace`: a page whose
// connection is cut comes back as itself (same relay id, the direct message sent to it while
// away delivered once); what it queued offline waits for its `onReconnect` hook, whose own
// request goes out first; a session kept past its grace is not resumed, and the page hears so.
//
// The cut is a real one: page A talks to the server through a TCP proxy that the test
// destroys (both sides, as a network failure would) and refuses new connections on until it
// is restored. The page is loaded through the proxy too, so its WebSocket is same-origin.

import * as net from 'node:net';
import type { Page } from '@playwright/test';
import { test, expect, type BrowserErrors } from '../fixtures';
import type { GotalkServer } from '../server';

// The client's global, as gotalk.d.ts declares it (types only: nothing is imported).
declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

/** A TCP proxy to the server's HTTP port that can cut every connection and refuse new ones. */
class Cutter {
  port = 0;
  private readonly sockets = new Set<net.Socket>();
  private blocked = false;
  private readonly server = net.createServer((client) => {
    if (this.blocked) return void client.destroy();
    const upstream = net.connect(this.target, '127.0.0.1');
    const pair = [client, upstream];
    const done = () => {
      for (const s of pair) {
        s.destroy();
        this.sockets.delete(s);
      }
    };
    for (const s of pair) {
      this.sockets.add(s);
      s.on('error', done);
      s.on('close', done);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });

  constructor(private readonly target: number) {}

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  get http(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  /** Drops every connection through it and refuses new ones until `restore()`. */
  cut(): void {
    this.blocked = true;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.blocked = false;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/**
 * Opens the demo page at `origin` without its script and connects a keepalive (reconnecting
 * within 100-200 ms) that records its relay messages, `session` events and hook calls;
 * `hookMs` >= 0 installs an `onReconnect` hook that relays `hook` to `window.peer` and
 * resolves `hookMs` later. Returns the relay id.
 */
async function connect(page: Page, origin: string, hookMs = -1): Promise<string> {
  await page.route(new URL('/demo.js', origin).href, (route) =>
    route.fulfill({ contentType: 'text/javascript; charset=utf-8', body: '' }),
  );
  await page.goto(origin);
  return page.evaluate(async (hookMs) => {
    await gotalk.ready;
    const w = window as any;
    w.inbox = [];
    w.sessions = [];
    w.hooks = [];
    const onReconnect =
      hookMs < 0
        ? null
        : async (resumed: boolean) => {
            w.hooks.push({ resumed, id: s.id });
            await s.relay(w.peer, 'order', 'hook');
            await new Promise((resolve) => setTimeout(resolve, hookMs));
            w.hooks.push('resolved');
          };
    const s = gotalk.connection({ min: 100, max: 200, onReconnect });
    w.sock = s;
    s.on('relay', (m) => w.inbox.push({ ...m, at: Date.now() }));
    s.on('session', (e) => w.sessions.push(e));
    return new Promise<string>((resolve) => s.once('id', resolve));
  }, hookMs);
}

/** Waits until the server counts `n` open WebSocket connections: it has noticed the cut. */
async function openConnections(server: GotalkServer, n: number): Promise<void> {
  const metric = `gotalk_connections_open{transport="websocket"} ${n}\n`;
  await expect
    .poll(async () => (await (await fetch(new URL('/metrics', server.http))).text()).includes(metric))
    .toBe(true);
}

/** Page A through a proxy, page B direct, each connected; A's id and B's. */
async function twoPages(
  page: Page,
  other: Page,
  server: GotalkServer,
  cutter: Cutter,
  browserErrors: BrowserErrors,
  hookMs = -1,
): Promise<[string, string]> {
  // Page A's reconnects that the proxy refuses.
  browserErrors.allow(/WebSocket connection to .* failed/);
  const bob = await connect(other, server.http);
  const alice = await connect(page, cutter.http, hookMs);
  await page.evaluate((bob) => ((window as any).peer = bob), bob);
  return [alice, bob];
}

test('a page whose connection is cut resumes its session: same id, the message sent meanwhile once', async ({
  page,
  context,
  startServer,
  browserErrors,
}) => {
  const server = await startServer(['--resume-grace', '30']);
  const cutter = new Cutter(server.httpPort);
  await cutter.start();
  const other = await context.newPage();
  try {
    const [alice, bob] = await twoPages(page, other, server, cutter, browserErrors);

    cutter.cut();
    await page.waitForFunction(() => (window as any).sock.state === 'reconnecting');
    await openConnections(server, 1);
    // Held for Alice while she is away: the relay still knows her id.
    await other.evaluate((to) => (window as any).sock.relay(to, 'dm', 'while you were away'), alice);
    cutter.restore();

    await page.waitForFunction(() => (window as any).sessions.length === 1);
    expect(await page.evaluate(() => (window as any).sessions)).toEqual([{ resumed: true, id: alice }]);
    await page.waitForFunction(() => (window as any).inbox.length >= 1);
    // Anything delivered twice would have arrived by now.
    await page.waitForTimeout(500);
    const inbox = await page.evaluate(() => (window as any).inbox);
    expect(inbox.map(({ at, ...m }: any) => m)).toEqual([{ from: bob, topic: 'dm', body: 'while you were away' }]);
    expect(await page.evaluate(() => (window as any).sock.id)).toEqual(alice);

    // And the peers still reach each other by the same ids.
    await page.evaluate((to) => (window as any).sock.relay(to, 'dm', 'back'), bob);
    await other.waitForFunction(() => (window as any).inbox.length === 1);
    expect((await other.evaluate(() => (window as any).inbox))[0]).toMatchObject({ from: alice, body: 'back' });
  } finally {
    await other.close();
    await cutter.stop();
  }
});

test('what a page queued offline waits for its onReconnect hook, whose own request goes first', async ({
  page,
  context,
  startServer,
  browserErrors,
}) => {
  const HOOK_MS = 700;
  const server = await startServer(['--resume-grace', '30']);
  const cutter = new Cutter(server.httpPort);
  await cutter.start();
  const other = await context.newPage();
  try {
    const [alice] = await twoPages(page, other, server, cutter, browserErrors, HOOK_MS);

    cutter.cut();
    await page.waitForFunction(() => (window as any).sock.state === 'reconnecting');
    // Queued while offline: a notification and a request, in that order.
    const queued = page.evaluate(() => {
      const w = window as any;
      w.sock.relayNotify(w.peer, 'order', 'queued note');
      return w.sock.relay(w.peer, 'order', 'queued request');
    });
    expect(await page.evaluate(() => (window as any).sock.queued)).toBe(2);
    cutter.restore();
    await queued;

    expect(await page.evaluate(() => (window as any).hooks)).toEqual([{ resumed: true, id: alice }, 'resolved']);
    await other.waitForFunction(() => (window as any).inbox.length === 3);
    const inbox = await other.evaluate(() => (window as any).inbox);
    // In the order the server relayed them: the hook's request first, then the queue, which
    // went out only once the hook had resolved.
    expect(inbox.map((m: any) => [m.from, m.body])).toEqual([
      [alice, 'hook'],
      [alice, 'queued note'],
      [alice, 'queued request'],
    ]);
    expect(inbox[1].at - inbox[0].at).toBeGreaterThanOrEqual(HOOK_MS - 50);
  } finally {
    await other.close();
    await cutter.stop();
  }
});

test('a session kept past its grace is not resumed: a fresh id, and the hook hears false', async ({
  page,
  context,
  startServer,
  browserErrors,
}) => {
  const server = await startServer(['--resume-grace', '1']);
  const cutter = new Cutter(server.httpPort);
  await cutter.start();
  const other = await context.newPage();
  try {
    const [alice] = await twoPages(page, other, server, cutter, browserErrors, 0);

    cutter.cut();
    await openConnections(server, 1);
    // Until the grace is over, the relay holds what is sent to her; then it forgets her id.
    await expect
      .poll(() => other.evaluate((to) => (window as any).sock.relay(to, 'dm', 'gone?').catch((e: Error) => e.message), alice))
      .toBe('unknown peer');
    cutter.restore();

    await page.waitForFunction(() => (window as any).hooks.includes('resolved'));
    const { sessions, hooks, id } = await page.evaluate(() => {
      const w = window as any;
      return { sessions: w.sessions, hooks: w.hooks, id: w.sock.id };
    });
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(id).not.toEqual(alice);
    expect(sessions).toEqual([{ resumed: false, id }]);
    expect(hooks[0]).toEqual({ resumed: false, id });

    // The fresh session is resumable in its turn: its token replaced the expired one. Back
    // well within the grace, maybe before the server noticed the cut (then the resume takes
    // the session over from the connection it still has).
    cutter.cut();
    await page.waitForFunction(() => (window as any).sock.state === 'reconnecting');
    cutter.restore();
    await page.waitForFunction(() => (window as any).sessions.length === 2);
    expect((await page.evaluate(() => (window as any).sessions))[1]).toEqual({ resumed: true, id });
  } finally {
    await other.close();
    await cutter.stop();
  }
});
