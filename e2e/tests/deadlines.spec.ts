// Deadlines and cancellation in the browser client: `{timeout, signal}` on request,
// bufferRequest and streamRequest, the sock's default `requestTimeout`, and `gotalk serve
// --request-timeout` for the calls the server's handlers make to the page. Against the real
// server and its `sleep` and `stream-echo` operations; the demo page's own script is held
// back, so the page's only socks are the test's.

import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import { load } from '../page';

declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

/** The types of the messages the page sends, with their sizes (a header and its payload). */
function sent(page: Page): { type: string; length: number }[] {
  const frames: { type: string; length: number }[] = [];
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => {
      const type = typeof payload === 'string' ? payload[0] : String.fromCharCode(payload[0]);
      frames.push({ type, length: payload.length });
    });
  });
  return frames;
}

test('a request past its timeout rejects with a TimeoutError and its late result is dropped', async ({ page, server }) => {
  await load(page, server.http);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    const start = Date.now();
    const err = await s.request('sleep', { ms: 1500 }, { timeout: 200 }).then(() => null, (e: Error) => e);
    const elapsed = Date.now() - start;
    const buffered = await s.bufferRequest('sleep', '{"ms":1500}', { timeout: 100 }).then(() => null, (e: Error) => e.name);
    // The connection carries on, and a callback still works after the options.
    const after = await new Promise((resolve) => s.request('echo-json', 'after', {}, (e: Error | null, v: unknown) => resolve(e ?? v)));
    // end() waits for the results still outstanding: the abandoned calls are not among them.
    const ending = Date.now();
    const closed = new Promise((resolve) => s.once('close', resolve));
    s.end();
    await closed;
    return { name: err?.name, message: err?.message, elapsed, buffered, after, endMs: Date.now() - ending };
  });
  expect(got.name).toBe('TimeoutError');
  expect(got.message).toBe('gotalk: no result for "sleep" within 200 ms');
  expect(got.elapsed).toBeGreaterThanOrEqual(200);
  expect(got.elapsed).toBeLessThan(1000);
  expect(got.buffered).toBe('TimeoutError');
  expect(got.after).toBe('after');
  expect(got.endMs).toBeLessThan(1000);
});

test('an AbortSignal aborted before the call sends nothing; one aborted during it rejects at once', async ({ page, server }) => {
  const frames = sent(page);
  await load(page, server.http);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    await s.request('echo-json', 1);
    const before = new AbortController();
    before.abort();
    const early = await s.request('sleep', { ms: 10 }, { signal: before.signal }).then(() => null, (e: Error) => e.name);
    const during = new AbortController();
    setTimeout(() => during.abort(), 150);
    const start = Date.now();
    const late = await s.request('sleep', { ms: 1500 }, { signal: during.signal }).then(() => null, (e: Error) => e.name);
    const elapsed = Date.now() - start;
    // The signal's own reason is what the call rejects with, as for fetch().
    const mine = new AbortController();
    setTimeout(() => mine.abort(new Error('changed my mind')), 50);
    const reason = await s.bufferRequest('sleep', '{"ms":1500}', { signal: mine.signal }).then(() => null, (e: Error) => e.message);
    // A signal aborted after the result came changes nothing.
    const after = new AbortController();
    const value = await s.request('echo-json', 'kept', { signal: after.signal });
    after.abort();
    s.end();
    return { early, late, elapsed, reason, value };
  });
  expect(got.early).toBe('AbortError');
  expect(got.late).toBe('AbortError');
  expect(got.elapsed).toBeGreaterThanOrEqual(150);
  expect(got.elapsed).toBeLessThan(1000);
  expect(got.reason).toBe('changed my mind');
  expect(got.value).toBe('kept');
  // echo-json twice, the sleep aborted during the call, the one aborted by reason: the call
  // aborted first never went out.
  expect(frames.filter((f) => f.type === 'r').length).toBe(4);
});

test('the default timeout bounds every request that gives none, and a call may lift it', async ({ page, server }) => {
  await load(page, server.http);
  const got = await page.evaluate(async () => {
    const outcome = (p: Promise<unknown>) => p.then((v) => v, (e: Error) => e.name);
    const s = gotalk.connection({ requestTimeout: 400 });
    const quick = await outcome(s.request('sleep', { ms: 50 }));
    const slow = await outcome(s.request('sleep', { ms: 900 }));
    const lifted = await outcome(s.request('sleep', { ms: 700 }, { timeout: 0 }));
    const longer = await outcome(s.request('sleep', { ms: 700 }, { timeout: 2000 }));
    const initial = s.requestTimeout;
    s.requestTimeout = 100;
    const tighter = await outcome(s.request('sleep', { ms: 300 }));
    s.end();
    const plain = gotalk.connection();
    const none = plain.requestTimeout;
    plain.end();
    return { quick, slow, lifted, longer, initial, tighter, none };
  });
  expect(got.quick).toEqual({ slept: 50 });
  expect(got.slow).toBe('TimeoutError');
  expect(got.lifted).toEqual({ slept: 700 });
  expect(got.longer).toEqual({ slept: 700 });
  expect(got.initial).toBe(400);
  expect(got.tighter).toBe('TimeoutError');
  expect(got.none).toBe(0);
});

test('a stream request past its timeout ends with a TimeoutError and its request stream is ended', async ({ page, server }) => {
  const frames = sent(page);
  await load(page, server.http);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    const run = (options: object, abortAfter?: number) =>
      new Promise<{ data: string[]; end: string | null; ms: number }>((resolve) => {
        const controller = new AbortController();
        // Before the deadline is set, on the clock timers keep (Date.now() can be a few ms off it).
        const start = performance.now();
        const stream = s.streamRequest('stream-echo', { ...options, signal: controller.signal });
        const data: string[] = [];
        stream.on('data', (part: Uint8Array) => data.push(new TextDecoder().decode(part)));
        stream.on('end', (err: Error | null) => resolve({ data, end: err && err.name, ms: performance.now() - start }));
        stream.write('one');
        if (abortAfter !== undefined) setTimeout(() => controller.abort(), abortAfter);
      });
    const timedOut = await run({ timeout: 300 });
    const aborted = await run({}, 150);
    // Later writes to an ended stream send nothing.
    const finished = s.streamRequest('stream-echo', { timeout: 2000 });
    const whole = await new Promise<string[]>((resolve) => {
      const parts: string[] = [];
      finished.on('data', (p: Uint8Array) => parts.push(new TextDecoder().decode(p)));
      finished.on('end', () => resolve(parts));
      finished.write('a');
      finished.end();
    });
    s.end();
    return { timedOut, aborted, whole };
  });
  expect(got.timedOut.data).toEqual(['one']);
  expect(got.timedOut.end).toBe('TimeoutError');
  expect(got.timedOut.ms).toBeGreaterThanOrEqual(300);
  expect(got.aborted.data).toEqual(['one']);
  expect(got.aborted.end).toBe('AbortError');
  expect(got.whole).toEqual(['a']);
  // Each stream opened with its first part (`s`) and was ended by an empty part (`p`, 13
  // bytes: the header alone), the first two at their deadline and abort.
  expect(frames.filter((f) => f.type === 's').length).toBe(3);
  expect(frames.filter((f) => f.type === 'p' && f.length === 13).length).toBe(3);
});

test('gotalk serve --request-timeout bounds what the server asks the page', async ({ page, startServer }) => {
  const bounded = await startServer(['--request-timeout', '0.4']);
  await load(page, bounded.http);
  const got = await page.evaluate(async () => {
    const answerAfter = (ms: number) => (_v: unknown, result: (v: unknown) => void) => setTimeout(() => result(ms), ms);
    gotalk.handle('quick', answerAfter(50));
    gotalk.handle('slow', answerAfter(1200));
    const s = gotalk.connection();
    const outcome = (p: Promise<unknown>) => p.then((v) => v, (e: Error) => e.message);
    const quick = await outcome(s.request('ask-page', { op: 'quick' }));
    const slow = await outcome(s.request('ask-page', { op: 'slow' }));
    s.end();
    return { quick, slow };
  });
  expect(got.quick).toBe(50);
  expect(got.slow).toBe('no result within 400ms; the call was abandoned');
});
