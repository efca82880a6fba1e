// RetryResults in the browser client: a call is sent again after each RetryResult's wait until
// its own deadline (`retryTimeout`, 30 s by default), however many RetryResults that takes,
// and fails with a clear error once the next wait would pass it. Against `gotalk serve` with a
// small request limit; the demo page's own script is held back, so the page's only socks are
// the test's.

import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import { load } from '../page';

declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

/** Counts the RetryResults the page receives and the requests it sends. */
function countFrames(page: Page): { retries: number; requests: number } {
  const frames = { retries: 0, requests: 0 };
  page.on('websocket', (ws) => {
    // Each message header is a WebSocket message of its own; its first byte is its type.
    const type = (payload: string | Buffer) => (typeof payload === 'string' ? payload[0] : String.fromCharCode(payload[0]));
    ws.on('framereceived', ({ payload }) => {
      if (type(payload) === 'e') frames.retries += 1;
    });
    ws.on('framesent', ({ payload }) => {
      if (type(payload) === 'r') frames.requests += 1;
    });
  });
  return frames;
}

test('20 concurrent calls against a request limit of 2 are all answered', async ({ page, startServer }) => {
  // As in gotalk's limits example: handlers take 10–100 ms, and so do the waits the
  // RetryResults ask for, so calls are turned away many times each before they get a slot.
  const limited = await startServer(['--request-limit', '2', '--retry-wait', '0.01..0.1']);
  const frames = countFrames(page);
  await load(page, limited.http);
  const { settled, ms } = await page.evaluate(async () => {
    const s = gotalk.connection();
    const ms = Array.from({ length: 20 }, () => 10 + Math.floor(Math.random() * 91));
    const settled = await Promise.allSettled(ms.map((ms) => s.request('sleep', { ms })));
    s.end();
    return { settled: settled.map((r) => (r.status === 'fulfilled' ? r.value : `rejected: ${r.reason?.message}`)), ms };
  });
  console.log(`20 calls at --request-limit 2: ${frames.retries} RetryResults honoured`);
  expect(settled).toEqual(ms.map((ms) => ({ slept: ms })));
  // Far more than a small count per call, and each one followed by the request going again.
  expect(frames.retries).toBeGreaterThan(20);
  expect(frames.requests).toBe(20 + frames.retries);
});

test('a call still turned away at its deadline fails with a clear error', async ({ page, startServer }) => {
  // One slot, held by a long call, and a fixed 200 ms wait: the second call is turned away
  // every 200 ms until its next try would fall past its 3 s deadline.
  const limited = await startServer(['--request-limit', '1', '--retry-wait', '0.2']);
  const frames = countFrames(page);
  await load(page, limited.http);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection({ retryTimeout: 3_000 });
    const hold = s.request('sleep', { ms: 8_000 }).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 100));
    const start = Date.now();
    const error = await s.request('sleep', { ms: 1 }).then(
      () => null,
      (err: Error) => err.message,
    );
    const elapsed = Date.now() - start;
    // Twice: at once, without waiting for the held call.
    s.end();
    s.end();
    await hold;
    return { error, elapsed };
  });
  console.log(`turned away for ${got.elapsed} ms: ${got.error}`);
  expect(got.error).toMatch(
    /^gotalk: the server is busy \(request rate limit\); retry after 200 ms would pass the call's deadline \(retryTimeout 3000 ms, after \d+ retries\)$/,
  );
  const retries = Number(/after (\d+) retries/.exec(got.error!)![1]);
  // Every 200 ms (plus a round trip) for 3 s: well past the old bound of 5.
  expect(retries).toBeGreaterThanOrEqual(10);
  expect(frames.retries).toBe(retries + 1);
  // It gave up when the next wait would pass the deadline, not before and not long after.
  expect(got.elapsed).toBeGreaterThan(2_700);
  expect(got.elapsed).toBeLessThan(3_500);
});
