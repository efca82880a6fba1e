// Liveness in the browser, in real Chromium: a server frozen with SIGSTOP (its sockets open,
// nothing moving) is noticed from its missing heartbeats within the bound and rejoined after
// SIGCONT; `deadAfter` overrides the bound; the reserved `$ping` request is answered by the
// client itself; the server's `$done` reaches the page as a `done` event.

import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import type { GotalkServer } from '../server';

/** The server's heartbeat period in these tests, seconds. */
const HEARTBEAT_S = 0.5;
/** The client's default allowance: two heartbeat gaps plus 5 s of slack. */
const ALLOWANCE_MS = 2 * HEARTBEAT_S * 1000 + 5_000;
/** Room for the client's check period (at least 1 s) and the test's own timing. */
const MARGIN_MS = 1_500;

/**
 * Opens the demo page of `server` and a keepalive sock `window.s` with `options`, and waits
 * until it has heard `beats` heartbeats. `window.log` records the sock's `state`, `dead`,
 * `close` and `done` events as they happen, with `Date.now()`.
 */
async function connected(page: Page, server: GotalkServer, options: object, beats = 3): Promise<void> {
  await page.goto(server.http);
  await page.evaluate(
    async ({ options, beats }) => {
      const w = window as any;
      const s = (w.s = w.gotalk.connection(options));
      const log: { event: string; at: number; value: string | null }[] = (w.log = []);
      for (const event of ['state', 'dead', 'close', 'done']) {
        s.on(event, (arg: unknown) =>
          log.push({
            event,
            at: Date.now(),
            value: arg instanceof Error ? arg.message : (arg as string | null),
          }),
        );
      }
      await new Promise<void>((resolve) => {
        let heard = 0;
        s.on('heartbeat', () => ++heard === beats && resolve());
      });
      await s.request('greet', { name: 'a' });
    },
    { options, beats },
  );
}

type Entry = { event: string; at: number; value: string | null };

async function log(page: Page): Promise<Entry[]> {
  return page.evaluate(() => (window as any).log);
}

test('a frozen server (SIGSTOP) is found dead within the bound, then rejoined after SIGCONT', async ({
  page,
  startServer,
  browserErrors,
}) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer(['--heartbeat', String(HEARTBEAT_S)]);
  await connected(page, server, {});

  server.pause();
  const stoppedAt = Date.now();
  try {
    // A request the frozen server will never answer.
    await page.evaluate(() => {
      const w = window as any;
      w.lost = w.s.request('greet', { name: 'lost' }).then(
        () => 'answered',
        (err: Error) => err.message,
      );
    });
    await page.waitForFunction(() => (window as any).log.some((e: Entry) => e.event === 'dead'), null, {
      timeout: ALLOWANCE_MS + MARGIN_MS + 5_000,
    });
    const events = await log(page);
    const dead = events.find((e) => e.event === 'dead')!;
    const detected = dead.at - stoppedAt;
    console.log(
      `liveness: a SIGSTOPped server was found dead ${detected} ms after SIGSTOP ` +
        `(heartbeat ${HEARTBEAT_S * 1000} ms, bound ${ALLOWANCE_MS} ms + ${MARGIN_MS} ms margin)`,
    );
    expect(detected).toBeLessThanOrEqual(ALLOWANCE_MS + MARGIN_MS);
    expect(dead.value).toMatch(/^gotalk: the server went silent \(nothing received for \d+ s\)$/);

    // `dead`, then `close` with the same reason, then the page shows it is reconnecting.
    const after = events.slice(events.indexOf(dead)).map((e) => [e.event, e.value]);
    expect(after.slice(0, 3)).toEqual([
      ['dead', dead.value],
      ['close', dead.value],
      ['state', 'reconnecting'],
    ]);
    expect(await page.evaluate(() => (window as any).lost)).toBe(
      'gotalk: the connection was lost before the result of "greet" arrived',
    );
    expect(await page.evaluate(() => (window as any).s.state)).not.toBe('open');
  } finally {
    server.resume();
  }

  await page.waitForFunction(() => (window as any).s.state === 'open', null, { timeout: 10_000 });
  const reply = await page.evaluate(() => (window as any).s.request('greet', { name: 'back' }));
  expect(reply).toEqual({ greeting: 'Hello back' });
});

test('deadAfter overrides the bound the heartbeats give, and a live server never reaches it', async ({
  page,
  startServer,
  browserErrors,
}) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer(['--heartbeat', String(HEARTBEAT_S)]);
  const deadAfter = 2_000;
  await connected(page, server, { deadAfter });
  // Longer than deadAfter, with the server's heartbeats arriving: still open.
  await page.waitForTimeout(deadAfter + 1_000);
  expect((await log(page)).filter((e) => e.event === 'dead')).toEqual([]);

  server.pause();
  const stoppedAt = Date.now();
  try {
    await page.waitForFunction(() => (window as any).log.some((e: Entry) => e.event === 'dead'), null, {
      timeout: 10_000,
    });
    const detected = (await log(page)).find((e) => e.event === 'dead')!.at - stoppedAt;
    console.log(`liveness: with deadAfter ${deadAfter} ms, found dead ${detected} ms after SIGSTOP`);
    // Checked every max(1 s, deadAfter / 4).
    expect(detected).toBeLessThanOrEqual(deadAfter + 1_000 + 500);
  } finally {
    server.resume();
  }
  await page.waitForFunction(() => (window as any).s.state === 'open', null, { timeout: 10_000 });
});

test('the client answers a $ping request itself, echoing its payload', async ({ page }) => {
  await page.goto('/');
  const result = await page.evaluate(async () => {
    const w = window as any;
    const seen: string[] = [];
    const handlers = new w.gotalk.Handlers();
    handlers.handleRequest('', (_value: unknown, result: (v: unknown) => void, op: string) => {
      // The demo's chat calls every page that answers (chat.ping, chat.name): not this test's.
      if (!op.startsWith('chat.')) seen.push(op);
      result('from the page');
    });
    const s = w.gotalk.connection(undefined, handlers);
    // The demo's ask-page makes the server send the page a request with this op and value.
    const echoed = await s.request('ask-page', { op: '$ping', value: 'c00kie' });
    const asked = await s.request('ask-page', { op: 'other', value: 1 });
    s.end();
    return { echoed, asked, seen };
  });
  expect(result).toEqual({ echoed: 'c00kie', asked: 'from the page', seen: ['other'] });
});

test('a server shutting down says $done: the page hears `done`, then the 1001 close', async ({
  page,
  startServer,
  browserErrors,
}) => {
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer(['--heartbeat', String(HEARTBEAT_S)]);
  await connected(page, server, { min: 1_000, max: 60_000 }, 1);
  await page.evaluate(() => {
    const w = window as any;
    w.notes = [];
    w.s.on('notification', (n: { name: string }) => w.notes.push(n.name));
  });

  await server.stop(); // SIGTERM: a graceful shutdown
  await page.waitForFunction(() => (window as any).log.some((e: Entry) => e.event === 'close'));
  const events = (await log(page)).filter((e) => e.event === 'done' || e.event === 'close');
  expect(events.map((e) => [e.event, e.value])).toEqual([
    ['done', null],
    ['close', 'gotalk: the connection closed (code 1001: server shutting down)'],
  ]);
  expect(await page.evaluate(() => (window as any).notes)).toEqual([]);
});
