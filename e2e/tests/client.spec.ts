// The browser client's protocol, end to end: gotalk.js in Chromium against `gotalk serve`.
// Each test opens the demo page without its own script, so the page holds only gotalk.js, and
// drives the global `gotalk` with page.evaluate on socks of its own: streams both ways,
// notifications between two browsers, byte-exact payloads, ErrorResult and RetryResult, calls
// made before the wasm has loaded, keepalive across a server that is killed and restarted,
// and the one-shot open.

import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import { EMPTY_SCRIPT, load, openQuiet } from '../page';

// The client's global, as gotalk.d.ts declares it (types only: nothing is imported).
declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

/** Chromium's own console error for a WebSocket it could not open. */
const WEBSOCKET_FAILED = /WebSocket connection to .* failed/;

test('a stream request from the page: parts out, the echo back, then its end', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const parts = ['one', 'twö', 'three 😀'];
  const got = await page.evaluate(async (parts) => {
    const s = gotalk.connection();
    const r = s.streamRequest('stream-echo');
    const data: unknown[] = [];
    const end = new Promise((resolve) => {
      r.on('data', (d: unknown) =>
        data.push(d instanceof Uint8Array ? new TextDecoder().decode(d) : `not bytes: ${String(d)}`),
      );
      r.on('end', resolve);
    });
    // Written before the connection is open: the parts wait for it, in order.
    for (const part of parts) r.write(part);
    r.end();
    const ended = await end;
    s.end();
    return { data, end: ended === null ? null : String(ended) };
  }, parts);
  expect(got).toEqual({ data: parts, end: null });
});

test('a stream request from the server: the page answers part by part', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const got = await page.evaluate(async () => {
    gotalk.handleStreamRequest('shout', (stream) => {
      stream.on('data', (v: unknown) => stream.write(String(v).toUpperCase()));
      stream.on('end', () => stream.end());
    });
    gotalk.handleStreamRequest('grumble', (stream) => {
      stream.on('data', () => stream.error('the page will not stream'));
    });
    const s = gotalk.connection();
    const shouted = await s.request('stream-to-page', { op: 'shout', parts: ['a', 'b😀'] });
    const refused = await s.request('stream-to-page', { op: 'grumble', parts: ['x', 'y'] }).then(
      (v: unknown) => ({ resolved: v }),
      (e: Error) => ({ rejected: e.message }),
    );
    s.end();
    return { shouted, refused };
  });
  expect(got.shouted).toEqual(['A', 'B😀']);
  expect(got.refused).toEqual({ rejected: 'the page will not stream' });
});

test('notifications reach another browser byte for byte', async ({ page, baseURL, browser, browserErrors }) => {
  const message = 'hi 😀';
  const other = await browser.newContext();
  browserErrors.watch(other);
  try {
    const listener = await other.newPage();
    await load(listener, baseURL!);
    await listener.evaluate(async () => {
      const w = window as any;
      w.heard = [];
      gotalk.handleBufferNotification('broadcast', (data, name) => {
        w.heard.push({ name, bytes: Array.from(data) });
      });
      w.s = gotalk.connection();
      // The server registers a connection for broadcasts in an on_connect task, which may run
      // after the connection's first requests. Until this page hears its own broadcast (sent
      // to it before the result), it may not be registered yet.
      do {
        await w.s.bufferRequest('broadcast', 'listening');
      } while (w.heard.length === 0);
      w.heard = [];
    });

    await load(page, baseURL!);
    const reached = await page.evaluate(async (message) => {
      const s = gotalk.connection();
      const reached = new TextDecoder().decode(await s.bufferRequest('broadcast', message));
      s.end();
      return Number(reached);
    }, message);
    // The listener at least; this page too, unless it is not registered yet (see above).
    expect(reached).toBeGreaterThanOrEqual(1);

    const bytes = Array.from(Buffer.from(message, 'utf8'));
    await expect.poll(() => listener.evaluate(() => (window as any).heard)).toEqual([{ name: 'broadcast', bytes }]);
  } finally {
    await other.close();
  }
});

test('payloads arrive byte for byte: non-BMP, U+0000, around U+FFFF, 1 MiB', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const samples = [
    'emoji 😀👍🏽🏳️‍🌈',
    'clef 𝄞, ideograph 𠜎',
    'nul \u0000 inside, and at the end \u0000',
    'around U+FFFF: \uD7FF \uE000 \uFFFD \uFFFE \uFFFF \u{10000} \u{10FFFF}',
    '\uFEFF starts with a byte order mark',
    '',
  ];
  const got = await page.evaluate(async (samples) => {
    // ignoreBOM: a leading U+FEFF is part of the text here, not a marker to drop.
    const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    const s = gotalk.connection();
    const out = [];
    for (const text of samples) {
      const buf = await s.bufferRequest('echo', text);
      const json = await s.request('echo', { s: text });
      out.push({ text: decoder.decode(buf), bytes: buf.length, encoded: new TextEncoder().encode(text).length, json });
    }

    // 1 MiB exactly, of 1-, 2-, 3- and 4-byte characters; compared byte by byte.
    const unit = new TextEncoder().encode('a\u00e9\u20ac\u{1F600}'); // 10 bytes
    const big = new Uint8Array(1 << 20);
    for (let i = 0; i + unit.length <= big.length; i += unit.length) big.set(unit, i);
    big.fill(0x21, big.length - (big.length % unit.length));
    const echoed = await s.bufferRequest('echo', big);
    let same = echoed.length === big.length;
    for (let i = 0; same && i < big.length; i++) same = echoed[i] === big[i];
    s.end();
    return { out, big: { length: echoed.length, same } };
  }, samples);

  expect(got.out).toHaveLength(samples.length);
  samples.forEach((text, i) => {
    const bytes = Buffer.byteLength(text, 'utf8');
    expect(got.out[i], JSON.stringify(text)).toEqual({ text, bytes, encoded: bytes, json: { s: text } });
  });
  expect(got.big).toEqual({ length: 1 << 20, same: true });
});

test('an ErrorResult rejects with its text, from the server and from the page', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  const got = await page.evaluate(async () => {
    const outcome = (p: Promise<unknown>) =>
      p.then(
        (value) => ({ value }),
        (e) => ({ isError: e instanceof Error, message: e.message }),
      );
    gotalk.handle('fail', (_v, result) => result.error('page says no'));
    const s = gotalk.connection();
    const unknown = await outcome(s.request('nope'));
    const fromPage = await outcome(s.request('ask-page', { op: 'fail' }));
    // An ErrorResult is an answer: the connection carries on.
    const after = await s.request('greet', { name: 'after' });
    s.end();
    return { unknown, fromPage, after };
  });
  expect(got.unknown).toMatchObject({ isError: true, message: expect.stringContaining('nope') });
  expect(got.fromPage).toEqual({ isError: true, message: 'page says no' });
  expect(got.after).toEqual({ greeting: 'Hello after' });
});

test('a RetryResult is honoured: requests past the limit wait and go again', async ({ page, startServer }) => {
  // One request at a time per connection, and a fixed wait, so the retries line up: each
  // waiting request tries again 200 ms after the one before it has finished.
  const limited = await startServer(['--request-limit', '1', '--retry-wait', '0.5']);
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
  await load(page, limited.http);
  const got = await page.evaluate(async () => {
    const s = gotalk.connection();
    const settled = await Promise.allSettled([0, 1, 2, 3].map(() => s.request('sleep', { ms: 300 })));
    s.end();
    return settled.map((r) => (r.status === 'fulfilled' ? r.value : `rejected: ${r.reason?.message}`));
  });
  expect(got).toEqual(Array(4).fill({ slept: 300 }));
  // Three of the four were turned away at least once, and every RetryResult was followed by
  // the request going out again.
  expect(frames.retries).toBeGreaterThanOrEqual(3);
  expect(frames.requests).toBe(4 + frames.retries);
});

/** The demo page with its own gotalk.js held back: the test adds the client itself, after it
 * has set up what it watches (the wasm's request, the socket's frames), with the page's
 * `addClient()`, which resolves right after gotalk.js has run, as an inline script after it
 * would run. */
async function openWithoutClient(page: Page, baseURL: string): Promise<void> {
  const script = new URL('/gotalk/gotalk.js', baseURL).href;
  let scripts = 0;
  await page.route(script, (route) => (++scripts === 1 ? route.fulfill(EMPTY_SCRIPT) : route.continue()));
  await openQuiet(page, baseURL);
  await page.evaluate(() => {
    (window as any).addClient = () =>
      new Promise<void>((resolve, reject) => {
        const script = document.createElement('script');
        script.src = '/gotalk/gotalk.js';
        script.onerror = () => reject(new Error('gotalk.js did not load'));
        script.onload = () => resolve();
        document.head.append(script);
      });
  });
}

/** Holds the wasm's download until the page calls `window[name]()` (10 s at most). */
async function holdWasm(page: Page, name: string): Promise<void> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  await page.exposeFunction(name, () => release());
  await page.route('**/gotalk/gotalk_bg.wasm*', async (route) => {
    await Promise.race([released, new Promise((resolve) => setTimeout(resolve, 10_000))]);
    await route.continue();
  });
}

test('calls made before the wasm has loaded wait for it', async ({ page, baseURL }) => {
  await openWithoutClient(page, baseURL!);
  expect(await page.evaluate(() => typeof (window as any).gotalk)).toBe('undefined');
  // The wasm is held back until the page has made its call, so the call certainly comes first.
  await holdWasm(page, 'earlyCallMade');
  const got = await page.evaluate(async () => {
    await (window as any).addClient();
    let ready = false;
    gotalk.ready.then(() => (ready = true));
    const s = gotalk.connection();
    const request = s.request('greet', { name: 'early' });
    const before = { state: s.state, ready };
    (window as any).earlyCallMade();
    const answer = await request;
    s.end();
    return { before, answer };
  });
  expect(got).toEqual({ before: { state: 'connecting', ready: false }, answer: { greeting: 'Hello early' } });
});

test('the socket connects while the wasm loads, and the Core takes it over; a request is one message', async ({
  page,
  baseURL,
}) => {
  await openWithoutClient(page, baseURL!);
  // The wasm is held back until the socket exists: before the change it never would, so the
  // wait below fails instead.
  const sockets: import('@playwright/test').WebSocket[] = [];
  const sent: string[] = [];
  page.on('websocket', (ws) => {
    sockets.push(ws);
    ws.on('framesent', ({ payload }) => sent.push(typeof payload === 'string' ? payload : payload.toString('latin1')));
  });
  let socketSeen!: () => void;
  const seen = new Promise<void>((resolve) => (socketSeen = resolve));
  page.once('websocket', () => socketSeen());
  let wasmHeld = true;
  await page.route('**/gotalk/gotalk_bg.wasm*', async (route) => {
    await Promise.race([seen, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    wasmHeld = false;
    await route.continue();
  });
  const answer = page.evaluate(async () => {
    await (window as any).addClient();
    const s = gotalk.connection();
    const answer = await s.request('greet', { name: 'early' });
    s.end();
    return answer;
  });
  await seen;
  expect(wasmHeld, 'the socket was opened before the wasm arrived').toBe(true);
  expect(await answer).toEqual({ greeting: 'Hello early' });
  // One socket: the early one, taken over, not a second.
  expect(sockets).toHaveLength(1);
  expect(sockets[0].url()).toContain('gotalk-retry=1');
  // The version, then the request: header and payload in one message (sent before the wasm
  // arrived, the two go together).
  expect(sent[0]).toMatch(/^01/);
  const request = sent.map((m) => m.replace(/^01/, '')).filter((m) => m.startsWith('r'));
  expect(request).toHaveLength(1);
  expect(request[0]).toMatch(/^r.{4}005greet00000010\{"name":"early"\}$/s);
  expect(sent).not.toContain('{"name":"early"}');
});

test('requests made while the wasm loads are answered before it arrives; those still out then are the Core\'s', async ({
  page,
  baseURL,
}) => {
  await openWithoutClient(page, baseURL!);
  const sent: string[] = [];
  page.on('websocket', (ws) =>
    ws.on('framesent', ({ payload }) => sent.push(typeof payload === 'string' ? payload : payload.toString('latin1'))),
  );
  // The wasm is held until the page lets it go: the first answer must come without it.
  await holdWasm(page, 'releaseWasm');
  const got = await page.evaluate(async () => {
    await (window as any).addClient();
    let ready = false;
    gotalk.ready.then(() => (ready = true));
    const s = gotalk.connection();
    const greeting = await s.request('greet', { name: 'early' });
    const readyAtFirst = ready;
    // An ErrorResult is left to the Core (with its code), and so is what comes after it:
    // the sleep is answered once the Core has taken over.
    const failed = s.bufferRequest('fail-public', '').then(
      () => null,
      (err: Error & { code?: string }) => ({ message: err.message, code: err.code }),
    );
    const slept = s.request('sleep', { ms: 200 });
    (window as any).releaseWasm();
    await gotalk.ready;
    const after = await s.request('greet', { name: 'late' });
    s.end();
    return { greeting, readyAtFirst, failed: await failed, slept: (await slept) !== undefined, after };
  });
  expect(got).toEqual({
    greeting: { greeting: 'Hello early' },
    readyAtFirst: false,
    failed: { message: '[not_found] no such thing', code: 'not_found' },
    slept: true,
    after: { greeting: 'Hello late' },
  });
  // The version and the first request in one message; then the two requests made before
  // the wasm, then the Core's own, with an id none of them had.
  const requests = sent.map((m) => m.replace(/^01/, '')).filter((m) => m.startsWith('r'));
  expect(sent[0]).toMatch(/^01r\x00\x00\x00\x00005greet/s);
  expect(requests.map((m) => m.slice(1, 5))).toEqual(['\x00\x00\x00\x00', '\x01\x00\x00\x00', '\x02\x00\x00\x00', '\x03\x00\x00\x00']);
  expect(sent.filter((m) => m === '01')).toHaveLength(0);
});

test('a request made while the wasm loads and never answered does not hold the wasm back', async ({ page, baseURL }) => {
  await openWithoutClient(page, baseURL!);
  const got = await page.evaluate(async () => {
    await (window as any).addClient();
    const s = gotalk.connection();
    let neverSettled = false;
    s.bufferRequest('never', '').finally(() => (neverSettled = true));
    // Given up on before its answer comes: the answer, read early or by the Core, is dropped.
    const late = await s.request('sleep', { ms: 300 }, { timeout: 20 }).then(
      () => 'answered',
      (err: Error) => err.name,
    );
    await gotalk.ready;
    const after = await s.request('greet', { name: 'late' });
    await new Promise((r) => setTimeout(r, 400));
    return { late, neverSettled, after };
  });
  expect(got).toEqual({ late: 'TimeoutError', neverSettled: false, after: { greeting: 'Hello late' } });
});

test('a request made while the wasm loads fails, not hangs, when the client cannot take the socket over', async ({
  page,
  baseURL,
  browserErrors,
}) => {
  // Options the Core refuses make its open throw, once the wasm is there: the page hears it.
  browserErrors.allow(/maxPayload must be a whole number/);
  await openWithoutClient(page, baseURL!);
  const got = await page.evaluate(async () => {
    await (window as any).addClient();
    const s = gotalk.connection({ maxPayload: -1 });
    return s.bufferRequest('never', '').then(
      () => 'answered',
      (err: Error) => err.message,
    );
  });
  expect(got).toBe('gotalk: the socket is closed');
});

test('keepalive: a killed server fails what was in flight, queues the rest and reconnects', async ({
  page,
  startServer,
  browserErrors,
}) => {
  test.setTimeout(60_000);
  // Reconnect attempts while the server is down are refused, and Chromium says so.
  browserErrors.allow(WEBSOCKET_FAILED);
  const server = await startServer();
  await load(page, server.http);
  await page.evaluate(async () => {
    const w = window as any;
    w.states = [];
    w.s = gotalk.connection();
    w.s.on('state', (state: string) => {
      w.states.push(state);
      // The schedule as the page sees it when the sock starts waiting.
      if (state === 'reconnecting' && !w.schedule) w.schedule = { at: w.s.nextReconnectAt, now: Date.now() };
    });
    w.small = gotalk.connection();
    // A request the server is still working on when it dies.
    w.inFlight = w.s.request('sleep', { ms: 5000 }).then(
      (value: unknown) => ({ value }),
      (e: Error) => ({ message: e.message }),
    );
    // Once this is answered, the sleep has reached the server (one connection, in order).
    await w.s.request('greet', { name: 'before' });
    await w.small.request('greet', { name: 'before' });
  });

  await server.kill();
  await page.waitForFunction(() => {
    const w = window as any;
    return w.s.state === 'reconnecting' && w.small.state === 'reconnecting';
  });
  const down = await page.evaluate(async () => {
    const w = window as any;
    const inFlight = await w.inFlight;
    // Made while down: they wait in the queue for the connection.
    w.queued = [
      w.s.request('greet', { name: 'queued' }),
      w.s.bufferRequest('echo', 'queued 😀').then((b: Uint8Array) => new TextDecoder().decode(b)),
      // Into the chat's room history, where the server's own count shows each arrived once.
      w.s.request('chat.say', { room: 'once', text: 'queued request' }).then(() => 'said'),
    ];
    w.s.notify('chat.say', { room: 'once', text: 'queued notification' });
    const queued = w.s.queued;
    // A queue of three: the fourth notification is refused at once.
    w.small.sendBufferLimit = 3;
    const notes = [];
    for (let i = 1; i <= 4; i++) {
      try {
        w.small.notify('note', i);
        notes.push('queued');
      } catch (e) {
        notes.push(`threw: ${(e as Error).message}`);
      }
    }
    const { at: nextReconnectAt, now } = w.schedule;
    return { inFlight, nextReconnectAt, now, queued, smallQueued: w.small.queued, notes };
  });
  expect(down.inFlight.message).toContain('connection was lost');
  expect(down.inFlight.message).toContain('sleep');
  expect(typeof down.nextReconnectAt).toBe('number');
  // Due within the largest delay (5 s), and not long past.
  expect(down.nextReconnectAt).toBeGreaterThan(down.now - 1_000);
  expect(down.nextReconnectAt).toBeLessThanOrEqual(down.now + 5_000);
  expect(down.queued).toBe(4);
  expect(down.smallQueued).toBe(3);
  expect(down.notes.slice(0, 3)).toEqual(['queued', 'queued', 'queued']);
  expect(down.notes[3]).toMatch(/^threw: .*send queue is full/);

  // Stay down until an attempt has been refused and the next one is scheduled, later.
  await page.waitForFunction(
    (first) => {
      const s = (window as any).s;
      return s.state === 'reconnecting' && s.nextReconnectAt > first;
    },
    down.nextReconnectAt,
    { timeout: 5_000 },
  );
  await server.start();
  // Each sock's next attempt is at most the largest delay (5 s) away; allow 2.5 s more.
  await page.waitForFunction(
    () => {
      const w = window as any;
      return w.s.state === 'open' && w.small.state === 'open';
    },
    null,
    { timeout: 7_500 },
  );
  const after = await page.evaluate(async () => {
    const w = window as any;
    const answers = await Promise.all(w.queued);
    await w.small.request('greet', { name: 'after' });
    const joined = await w.small.request('chat.join', { room: 'once' });
    const said = joined.history.filter((m: { kind: string }) => m.kind === 'text').map((m: { text: string }) => m.text);
    const result = { answers, said, queued: w.s.queued, smallQueued: w.small.queued, states: w.states };
    w.s.end();
    w.small.end();
    return result;
  });
  expect(after.answers).toEqual([{ greeting: 'Hello queued' }, 'queued 😀', 'said']);
  // The restarted server's room heard each queued message exactly once. (Their order is the
  // server's: a request's handler runs on a task of its own, a notification's may overtake it.)
  expect(after.said.sort()).toEqual(['queued notification', 'queued request']);
  expect(after.queued).toBe(0);
  expect(after.smallQueued).toBe(0);
  expect(after.states[0]).toBe('open');
  expect(after.states).toContain('reconnecting');
  expect(after.states.at(-1)).toBe('open');
});

test('gotalk.open calls back once: with the sock when open, with an Error when refused', async ({
  page,
  baseURL,
  browserErrors,
}) => {
  browserErrors.allow(WEBSOCKET_FAILED);
  await load(page, baseURL!);
  const opened = await page.evaluate(
    () =>
      new Promise((resolve) => {
        gotalk.open((err, s) => {
          if (err) return resolve({ error: err.message });
          const state = s.state;
          s.request('greet', { name: 'once' }).then((answer: unknown) => {
            s.end();
            resolve({ state, answer });
          });
        });
      }),
  );
  expect(opened).toEqual({ state: 'open', answer: { greeting: 'Hello once' } });

  const refused = await page.evaluate(
    () =>
      new Promise((resolve) => {
        let calls = 0;
        const s = gotalk.open('ws://127.0.0.1:1/x', (err, sock) => {
          calls += 1;
          // Anything else that would call back comes within a task or two.
          setTimeout(() => {
            resolve({ calls, isError: err instanceof Error, message: err?.message, sock: sock ?? null, state: s.state });
          }, 50);
        });
      }),
  );
  expect(refused).toMatchObject({ calls: 1, isError: true, sock: null, state: 'closed' });
  expect((refused as { message: string }).message).toContain('ws://127.0.0.1:1/x');
});
