// Our gotalk.js as a drop-in for the original gotalk.js 1.2.1, in one page with both: the
// original (from ../shared/peers, unmodified) is loaded beside ours and every export a page
// written for it uses is compared; a close after a protocol error is reported the way 1.2.1
// reports it; and a message over the server's size limit reaches the page as a reason (the
// ProtocolError, the close code and the server's words), from `gotalk serve` and from a
// WebSocket server that closes with 1009.

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Page } from '@playwright/test';
import { WebSocketServer, type WebSocket } from 'ws';
import { test, expect } from '../fixtures';
import { load } from '../page';
import { repoRoot } from '../server';

declare const gotalk: typeof import('../../crates/gateway/client/gotalk').default;

/** The original gotalk.js 1.2.1: `$GOTALK_PEERS` (default `../shared/peers`, beside the repository). */
const ORIGINAL = path.join(
  path.resolve(repoRoot, process.env.GOTALK_PEERS || '../shared/peers'),
  'gotalk-1.3.7/js/gotalk.js',
);

/** The demo page without its own script, with our gotalk.js ready. */
/** Loads the original gotalk.js into the page as `window.original`, leaving ours as `gotalk`. */
async function loadOriginal(page: Page): Promise<void> {
  const source = readFileSync(ORIGINAL, 'utf8');
  await page.evaluate((source) => {
    const ours = (window as any).gotalk;
    const script = document.createElement('script');
    script.textContent = source;
    document.head.appendChild(script);
    (window as any).original = (window as any).gotalk;
    (window as any).gotalk = ours;
  }, source);
}

test('every export of gotalk.js 1.2.1 is there, with the same shape and meaning', async ({ page, baseURL }) => {
  await load(page, baseURL!);
  await loadOriginal(page);
  const url = baseURL!.replace('http:', 'ws:') + 'gotalk/';
  const got = await page.evaluate((url) => {
    const ours = gotalk as any;
    const original = (window as any).original;
    // `default` is an artifact of the bundler that built 1.2.1, not part of its API.
    const missing = Object.keys(original).filter((k) => k !== 'default' && !(k in ours));
    const constants = Object.keys(original.protocol).filter((k) => typeof original.protocol[k] === 'number');
    const constantsDiffer = constants.filter((k) => ours.protocol[k] !== original.protocol[k]);

    const bytes = (v: any) => (v instanceof Uint8Array ? ['bytes', ...v] : v);
    const plain = (m: any) => ({ ...m, id: bytes(m.id) });
    const buf = (g: any) => {
      const ab = new ArrayBuffer(2);
      const u8 = new Uint8Array([7]);
      return [bytes(g.Buf(3)), g.Buf(ab).buffer === ab, g.Buf(u8) === u8];
    };
    const err = (e: any) => ({ isError: e instanceof Error, flag: e.isGotalkProtocolError, code: e.code, message: e.message });
    const errors = (g: any) => ['ErrAbnormal', 'ErrUnsupported', 'ErrInvalidMsg', 'ErrTimeout'].map((k) => err(g[k]));

    // Headers of every type, a RetryResult's wait, names outside ASCII, binary ids.
    const messages: [number, any, string | null, number, number][] = [
      [0x72, '0001', 'echo', 0, 5],
      [0x73, '!001', 'stream-echo', 0, 3],
      [0x70, '!001', null, 0, 3],
      [0x52, '0001', null, 0, 10],
      [0x53, '0001', null, 0, 0],
      [0x45, '0001', null, 0, 7],
      [0x65, '0001', null, 500, 17],
      [0x6e, null, 'broadcast', 0, 2],
      [0x66, null, null, 0, 3],
      [0x72, 'abcd', 'héllo wörld', 0, 0x1234],
    ];
    // Each header as the original writes it, for both to read; but 1.2.1's binary makeMsg
    // cuts a RetryResult short (its buffer has no room for the size), so that one is ours.
    const headers = (kind: 'text' | 'binary') =>
      messages.map((m) => (kind === 'binary' && m[0] === 0x65 ? ours : original).protocol[kind].makeMsg(...m));
    const heartbeat = { text: 'h80005f5e1000', binary: new TextEncoder().encode('h80005f5e1000') };
    const helpers = (g: any, kind: 'text' | 'binary') => {
      const p = g.protocol[kind];
      const beat = p.makeHeartbeatMsg(0x1234);
      const beatText = typeof beat === 'string' ? beat : new TextDecoder().decode(beat);
      return {
        made: messages.map((m) => bytes(p.makeMsg(...m))),
        parsed: headers(kind).map((h: any) => plain(p.parseMsg(h))),
        heartbeat: plain(p.parseMsg(heartbeat[kind])),
        beat: [beatText.slice(0, 5), Math.abs(parseInt(beatText.slice(5), 16) - Date.now() / 1000) < 5],
        fixnum: bytes(p.makeFixnum(255, 4)),
        version: [bytes(p.versionBuf), p.parseVersion(p.versionBuf)],
      };
    };
    const binaryId = (g: any) => bytes(g.protocol.binary.makeMsg(0x52, new Uint8Array([1, 2, 3, 255]), null, 0, 4));
    const sock = (g: any) => {
      const s = new g.Sock(new g.Handlers(), g.protocol.text);
      // gotalk.js 1.2.1's connection(addr, handlers, proto).
      const c = g.connection(url, undefined, g.protocol.text);
      const kept = c.protocol === g.protocol.text;
      c.end();
      return [s.protocol === g.protocol.text, new g.Sock(new g.Handlers()).protocol === g.protocol.binary, kept];
    };
    const view = (g: any) => ({
      buf: buf(g),
      errors: errors(g),
      text: helpers(g, 'text'),
      binary: helpers(g, 'binary'),
      binaryId: binaryId(g),
      sock: sock(g),
    });
    return { missing, constants: constants.length, constantsDiffer, ours: view(ours), original: view(original) };
  }, url);
  expect(got.missing).toEqual([]);
  expect(got.constants).toBe(16);
  expect(got.constantsDiffer).toEqual([]);
  // Two faults of 1.2.1, where ours differs: ErrAbnormal has the message of ErrUnsupported,
  // and a binary RetryResult header loses its size.
  expect(got.original.errors[0].message).toBe('unsupported protocol');
  expect(got.ours.errors[0].message).toBe('abnormal protocol error');
  got.original.errors[0].message = got.ours.errors[0].message;
  const retry = ['bytes', ...new TextEncoder().encode('e0001000001f400000011')];
  expect(got.original.binary.made[6]).toEqual(retry.slice(0, 14));
  expect(got.ours.binary.made[6]).toEqual(retry);
  got.original.binary.made[6] = retry;
  expect(got.ours).toEqual(got.original);
  expect(got.ours.errors.map((e: any) => [e.isError, e.flag, e.code])).toEqual([
    [true, true, 0],
    [true, true, 1],
    [true, true, 2],
    [true, true, 3],
  ]);
  expect(got.ours.text.made[0]).toBe('r0001004echo00000005');
});

test('a close after the server says f00000003 carries isGotalkProtocolError and code 3, as 1.2.1 reports it', async ({ page, startServer }) => {
  // The server gives up on a peer silent for a second: it sends a timeout ProtocolError,
  // then closes. Heartbeats are off on both pages and on the server, so nothing breaks the
  // silence.
  const server = await startServer(['--read-timeout', '1', '--heartbeat', '0', '--liveness', 'off']);
  await load(page, server.http);
  await loadOriginal(page);
  const url = server.http.replace('http:', 'ws:') + 'gotalk/';
  const got = await page.evaluate(async (url) => {
    const closed = (s: any) => new Promise<any>((resolve) => s.on('close', resolve));
    const ours = new gotalk.Sock();
    ours.heartbeatInterval = 0;
    const oursClosed = closed(ours);
    ours.open(url);
    const original = (window as any).original;
    const theirs = original.Sock(original.defaultHandlers);
    theirs.heartbeatInterval = 0;
    const theirsClosed = closed(theirs);
    theirs.open(url);
    const view = (e: any) => ({ isError: e instanceof Error, flag: e.isGotalkProtocolError, code: e.code });
    const [a, b] = await Promise.all([oursClosed, theirsClosed]);
    return {
      ours: view(a),
      theirs: view(b),
      theirsIsErrTimeout: b === original.ErrTimeout,
      message: a.message,
      closeCode: a.closeCode,
    };
  }, url);
  expect(got.theirsIsErrTimeout).toBe(true);
  expect(got.ours).toEqual(got.theirs);
  expect(got.ours).toEqual({ isError: true, flag: true, code: 3 });
  expect(got.message).toMatch(/^gotalk: the server reported protocol error 3 \(timeout\) \(code 1000: read timeout.+\)$/);
  expect(got.closeCode).toBe(1000);
});

test('a payload over the server limit reaches the page as the reason the server gave', async ({ page, startServer }) => {
  const server = await startServer(['--max-payload', '1000']);
  await load(page, server.http);
  const got = await page.evaluate(async () => {
    const s = new gotalk.Sock();
    const closed = new Promise<any>((resolve) => s.once('close', resolve));
    s.open();
    // At the limit: answered.
    const atLimit = (await s.bufferRequest('echo', new Uint8Array(1000))).length;
    // One past it: the server refuses it and closes.
    const past = await s.bufferRequest('echo', new Uint8Array(1001)).then(
      () => 'answered',
      (err: Error) => err.message,
    );
    const err = await closed;
    s.end();
    return { atLimit, past, message: err.message, flag: err.isGotalkProtocolError, code: err.code, closeCode: err.closeCode };
  });
  expect(got.atLimit).toBe(1000);
  expect(got.past).toBe('gotalk: the connection was lost before the result of "echo" arrived');
  // The server's ProtocolError (invalid message), then its close with the reason, which
  // names the size and the limit; the close code is 1002 from a server that calls it a
  // protocol error, 1009 from one that says the message was too big.
  expect(got.flag).toBe(true);
  expect(got.code).toBe(2);
  expect([1002, 1009]).toContain(got.closeCode);
  const tooLarge = got.closeCode === 1009 ? ': a message was too large for the server' : '';
  expect(got.message).toMatch(
    new RegExp(`^gotalk: the server reported protocol error 2 \\(invalid message\\)${tooLarge} \\(code ${got.closeCode}: .*\\b1001 bytes.*\\b1000\\b.*\\)$`),
  );
});

/**
 * A WebSocket server of the test's own on 127.0.0.1 (Node `ws`) that speaks just enough
 * gotalk for one case: `onMessage` gets each message a client sends, the connection and its
 * path. Closed after the test.
 */
async function tinyServer(
  onMessage: (data: Buffer, ws: WebSocket, path: string) => void,
): Promise<{ url: string; close: () => Promise<unknown> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  wss.on('connection', (ws, request) => {
    ws.on('message', (data: Buffer) => onMessage(data, ws, new URL(request.url!, 'ws://x').pathname));
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`,
    close: () => new Promise((resolve) => wss.close(resolve)),
  };
}

/** What the close event of a Sock opened on `addr` (with one request made) reports. */
async function closeOf(page: Page, addr: string): Promise<object> {
  return page.evaluate(async (addr) => {
    const s = new gotalk.Sock();
    const closed = new Promise<any>((resolve) => s.on('close', resolve));
    s.open(addr);
    s.bufferRequest('echo', 'x'.repeat(100)).catch(() => {});
    const err = await closed;
    return { message: err.message, flag: err.isGotalkProtocolError, code: err.code, closeCode: err.closeCode };
  }, addr);
}

test('a WebSocket close with 1009 reaches the page as "too large", with or without f00000002 first', async ({ page, baseURL }) => {
  // The server answers the version, then refuses the first message with close 1009, on
  // /fault after sending the ProtocolError.
  const server = await tinyServer((data, ws, path) => {
    if (data.toString() === '01') return ws.send(Buffer.from('01'));
    if (path === '/fault') ws.send(Buffer.from('f00000002'));
    ws.close(1009, 'message too big');
  });
  try {
    await load(page, baseURL!);
    expect(await closeOf(page, server.url + '/')).toEqual({
      message: 'gotalk: the connection closed: a message was too large for the server (code 1009: message too big)',
      closeCode: 1009,
    });
    expect(await closeOf(page, server.url + '/fault')).toEqual({
      message:
        'gotalk: the server reported protocol error 2 (invalid message): a message was too large for the server (code 1009: message too big)',
      flag: true,
      code: 2,
      closeCode: 1009,
    });
  } finally {
    await server.close();
  }
});

test('a protocol fault the client finds closes with isGotalkProtocolError and its code too', async ({ page, baseURL }) => {
  // On /version the server speaks version 2; on /garbage it sends a header that is not one.
  const heard: string[] = [];
  const server = await tinyServer((data, ws, path) => {
    if (data.toString() !== '01') return heard.push(`${path} ${data.toString()}`);
    ws.send(Buffer.from(path === '/version' ? '02' : '01'));
    if (path === '/garbage') ws.send(Buffer.from('r0001zzzecho00000000'));
  });
  try {
    await load(page, baseURL!);
    expect(await closeOf(page, server.url + '/version')).toEqual({
      message: 'gotalk: the server speaks another protocol version',
      flag: true,
      code: 1,
    });
    expect(await closeOf(page, server.url + '/garbage')).toEqual({
      message: 'gotalk: the server sent an invalid message',
      flag: true,
      code: 2,
    });
    // The client told the server why, as gotalk.js does.
    expect(heard.filter((m) => m.includes(' f'))).toEqual(['/version f00000001', '/garbage f00000002']);
  } finally {
    await server.close();
  }
});
