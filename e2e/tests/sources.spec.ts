// Sources in the browser: gotalk.js in Chromium consumes `gotalk serve`'s `search`, a query
// fanned out to four shards that stream their matches at their own pace. The page reads the
// sources by async iteration and by events, sees frames of several sources interleave,
// cancels one source and then all of them, and gets the service's ErrorResult.

import { test, expect } from '../fixtures';
import { load } from '../page';

declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

/** The demo page with its own script held back, so the page's only sock is the test's. */
test('async iteration: every shard is a source with its header and its matching lines', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    const out: { header: unknown; lines: number[]; address: boolean }[] = [];
    for await (const source of s.sources('search', 'the')) {
      const lines: number[] = [];
      for await (const frame of source) lines.push(JSON.parse(new TextDecoder().decode(frame)).line);
      out.push({
        header: JSON.parse(new TextDecoder().decode(source.header)),
        lines,
        address: source.remoteAddress === s.address(),
      });
    }
    s.end();
    return out;
  });
  expect(got).toEqual([
    { header: { shard: 'harbour', lines: 6 }, lines: [1, 2, 3, 4, 5], address: true },
    { header: { shard: 'mountain', lines: 6 }, lines: [1, 2, 3, 4, 5, 6], address: true },
    { header: { shard: 'city', lines: 6 }, lines: [1, 2, 5, 6], address: true },
    { header: { shard: 'desert', lines: 6 }, lines: [1, 3, 4, 6], address: true },
  ]);
});

test('events: frames of several sources interleave, and each source ends once', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    const order: number[] = [];
    const ends: Record<number, string | null> = {};
    // A small window, so credit has to flow back for every shard to finish.
    const sources = s.sources('search', '', { frameWindow: 2, sourceWindow: 1 });
    sources.on('source', (source) => {
      source.on('data', () => order.push(source.id));
      source.on('end', (err) => {
        ends[source.id] = err ? err.message : null;
      });
    });
    const end = await new Promise((resolve) => sources.on('end', resolve));
    s.end();
    return { order, ends, end };
  });
  expect(got.end).toBeNull();
  expect(got.ends).toEqual({ 0: null, 1: null, 2: null, 3: null });
  expect(got.order.length).toBe(24);
  // The shards stream at once, not one after another: one after another would switch from
  // one source to the next exactly 3 times. (Counting switches, rather than comparing two
  // shards' timings, holds however slow a loaded machine makes any one frame.)
  const switches = got.order.filter((id, i) => i > 0 && id !== got.order[i - 1]).length;
  expect(switches).toBeGreaterThan(3);
});

test('cancelling one source, then all of them', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    const ends: Record<string, string | null> = {};
    const sources = s.sources('search', '');
    let seen = 0;
    sources.on('source', (source) => {
      const shard = JSON.parse(new TextDecoder().decode(source.header)).shard;
      if (shard === 'city') source.cancel();
      source.on('data', () => {
        // Once a few frames are in, stop everything.
        if (++seen === 3) sources.cancel();
      });
      source.on('end', (err) => {
        ends[shard] = err ? err.message : null;
      });
    });
    const end = await new Promise((resolve) => sources.on('end', resolve));
    s.end();
    return { ends, end, seen };
  });
  expect(got.end).toBeNull();
  expect(got.ends).toEqual({ harbour: 'cancelled', mountain: 'cancelled', city: 'cancelled', desert: 'cancelled' });
  expect(got.seen).toBeLessThan(24);
});

test("the service's error before any source rejects the iteration", async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    try {
      for await (const source of s.sources('search', 'x'.repeat(201))) return `a source: ${source.id}`;
      return 'no error';
    } catch (err) {
      return (err as Error).message;
    } finally {
      s.end();
    }
  });
  expect(got).toBe('the query is longer than 200 bytes');
});
