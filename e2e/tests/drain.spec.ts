// A graceful shutdown (SIGTERM) loses nothing: requests in flight from a page and from TCP
// clients are answered before the server exits, and requests the page makes after the
// server said `$done` wait for the next server and are answered there.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { test, expect } from '../fixtures';
import { gotalkBin } from '../server';

const run = promisify(execFile);

/** How long each request in flight takes on the server, ms. */
const SLEEP_MS = 1_500;

test('a graceful shutdown answers what is in flight, and new requests go to the next server', async ({
  page,
  request,
  startServer,
  browserErrors,
}) => {
  // The page retries while the server is down.
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer(['--shutdown-timeout', '10']);
  await page.goto(server.http);
  await page.evaluate(
    async ({ sleep }) => {
      const w = window as any;
      const s = (w.s = w.gotalk.connection({ min: 200, max: 1_000 }));
      w.results = {};
      w.done = false;
      s.on('done', () => (w.done = true));
      w.track = (key: string, p: Promise<unknown>) =>
        p.then(
          (value) => (w.results[key] = { value }),
          (err: Error) => (w.results[key] = { error: err.message }),
        );
      await s.request('greet', { name: 'first' });
      for (let i = 0; i < 5; i++) w.track(`in-flight ${i}`, s.request('sleep', { ms: sleep }));
    },
    { sleep: SLEEP_MS },
  );

  // Three TCP clients, each with a request in flight.
  const calls = [0, 1, 2].map(() =>
    run(gotalkBin, ['call', server.tcp, 'sleep', JSON.stringify({ ms: SLEEP_MS })], { timeout: 30_000 }),
  );
  await expect
    .poll(async () => (await (await request.get(`${server.http}stats`)).json()).tcp, { timeout: 10_000 })
    .toBe(3);
  // The CLI sends its request right after the handshake; give it a moment on the wire.
  await page.waitForTimeout(200);

  const stopped = server.stop(); // SIGTERM: drain, then exit
  await page.waitForFunction(() => (window as any).done === true);
  await page.evaluate(() => {
    const w = window as any;
    for (let i = 0; i < 5; i++) w.track(`after done ${i}`, w.s.request('greet', { name: `n${i}` }));
  });
  await stopped;

  // Everything in flight was answered before the server exited.
  const before = await page.evaluate(() => (window as any).results);
  for (let i = 0; i < 5; i++) {
    expect(before[`in-flight ${i}`], `in-flight ${i}`).toEqual({ value: { slept: SLEEP_MS } });
  }
  for (const call of calls) {
    const { stdout } = await call;
    expect(JSON.parse(stdout)).toEqual({ slept: SLEEP_MS });
  }
  // What the page asked after `$done` is waiting for the next server, not failed.
  for (let i = 0; i < 5; i++) expect(before[`after done ${i}`], `after done ${i}`).toBeUndefined();
  expect(await page.evaluate(() => (window as any).s.queued)).toBe(5);

  await server.start();
  await page.waitForFunction(() => Object.keys((window as any).results).length === 10, null, {
    timeout: 15_000,
  });
  const after = await page.evaluate(() => (window as any).results);
  for (let i = 0; i < 5; i++) {
    expect(after[`after done ${i}`], `after done ${i}`).toEqual({ value: { greeting: `Hello n${i}` } });
  }
});
