// The demo chat against a peer that uses it against its members: a program over raw TCP
// joins and leaves throwaway rooms as fast as the server answers while a page sits in the
// lobby, and the page keeps its one WebSocket (so its relay id) and is sent a room list at most
// every 200 ms; a page whose saved name is taken in its room asks its user for another, once,
// and joins under the new name (as the server normalised it).

import * as net from 'node:net';
import type { BrowserContext, Page, WebSocket } from '@playwright/test';
import { test, expect } from '../fixtures';

/** The WebSockets a page opens, and how many `chat.rooms` and `chat.join` went over them. */
type Wire = { sockets: WebSocket[]; roomLists: number; joins: number };

/** Opens the demo in `context` as a returning visitor called `name`, watching its WebSockets. */
async function open(context: BrowserContext, origin: string, name: string): Promise<{ page: Page; wire: Wire }> {
  await context.addInitScript((name) => {
    if (location.protocol.startsWith('http')) localStorage.setItem('gotalk-chat-name', name);
  }, name);
  const page = await context.newPage();
  const wire: Wire = { sockets: [], roomLists: 0, joins: 0 };
  const text = (payload: string | Buffer) => (typeof payload === 'string' ? payload : payload.toString('utf8'));
  page.on('websocket', (ws) => {
    wire.sockets.push(ws);
    ws.on('framereceived', ({ payload }) => {
      if (/^n[0-9a-f]{3}chat\.rooms/.test(text(payload))) wire.roomLists += 1;
    });
    ws.on('framesent', ({ payload }) => {
      if (/^r.{4}[0-9a-f]{3}chat\.join/.test(text(payload))) wire.joins += 1;
    });
  });
  await page.goto(origin);
  await expect(page.locator('#state')).toHaveText('connected');
  return { page, wire };
}

/** One gotalk request frame: `r`, a 4-byte id, the op and the payload with hex lengths. */
function request(n: number, op: string, value: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(value));
  const hex = (v: number, width: number) => v.toString(16).padStart(width, '0');
  return Buffer.concat([Buffer.from(`r${hex(n % 0x10000, 4)}${hex(op.length, 3)}${op}${hex(payload.length, 8)}`), payload]);
}

/**
 * A program over raw TCP that joins and leaves `pairs` throwaway rooms, `window` requests
 * written at once; resolves with the count of results and of ErrorResults.
 */
function churn(tcp: string, pairs: number, window: number): Promise<{ ok: number; refused: number }> {
  const [host, port] = tcp.replace('tcp://', '').split(':');
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), host);
    let buf = Buffer.alloc(0);
    let versioned = false;
    let n = 0;
    let next = 0;
    let waiting = 0;
    let phase: 'chat.join' | 'chat.leave' = 'chat.join';
    const counts = { ok: 0, refused: 0 };
    const send = () => {
      if (next >= pairs) {
        socket.end();
        return resolve(counts);
      }
      const rooms = Array.from({ length: Math.min(window, pairs - next) }, (_, i) => `t${next + i}`);
      waiting = rooms.length;
      socket.write(Buffer.concat(rooms.map((room) => request(++n, phase, { room }))));
      if (phase === 'chat.leave') next += rooms.length;
      phase = phase === 'chat.join' ? 'chat.leave' : 'chat.join';
    };
    // Reads whole messages: results end a wait; notifications, requests and heartbeats are
    // skipped (this program answers nothing, which the server tolerates for a while).
    const parse = () => {
      for (;;) {
        if (!versioned) {
          if (buf.length < 2) return;
          buf = buf.subarray(2);
          versioned = true;
          continue;
        }
        if (buf.length < 1) return;
        const type = String.fromCharCode(buf[0]);
        let head: number;
        let size: number;
        if (type === 'R' || type === 'E') [head, size] = [13, 5];
        else if (type === 'e') [head, size] = [21, 13];
        else if (type === 'n' || type === 'r') {
          if (buf.length < 4) return;
          const nameLen = parseInt(buf.subarray(type === 'r' ? 5 : 1, type === 'r' ? 8 : 4).toString(), 16);
          head = (type === 'r' ? 16 : 12) + nameLen;
          size = head - 8;
        } else if (type === 'h') [head, size] = [13, -1];
        else return reject(new Error(`unexpected message type ${type}`));
        if (buf.length < head) return;
        const len = size < 0 ? 0 : parseInt(buf.subarray(size, size + 8).toString(), 16);
        if (buf.length < head + len) return;
        buf = buf.subarray(head + len);
        if (type === 'R' || type === 'E' || type === 'e') {
          if (type === 'R') counts.ok += 1;
          else counts.refused += 1;
          waiting -= 1;
          if (waiting === 0) send();
        }
      }
    };
    socket.on('connect', () => {
      socket.write('01');
      send();
    });
    socket.on('data', (data) => {
      buf = Buffer.concat([buf, data]);
      parse();
    });
    socket.on('error', reject);
  });
}

test('a page keeps its connection while a program churns rooms, and hears of it coalesced', async ({
  context,
  startServer,
}) => {
  // No limit on joins and leaves: what is left to protect the page is the coalescing.
  const server = await startServer(['--chat-room-changes', '1000000']);
  const { page, wire } = await open(context, server.http, 'Ada');
  await expect(page.locator('#members')).toContainText('Ada');
  const started = Date.now();
  const counts = await churn(server.tcp, 5_000, 8);
  expect(counts).toEqual({ ok: 10_000, refused: 0 });
  // The page is still on its first WebSocket (a reconnect would open another, with a new
  // relay id), connected, and current: the last throwaway room is gone from its list.
  await expect(page.locator('#rooms')).not.toContainText('t4999');
  await expect(page.locator('#state')).toHaveText('connected');
  const elapsed = Date.now() - started;
  expect(wire.sockets).toHaveLength(1);
  expect(wire.sockets[0].isClosed()).toBe(false);
  // The room lists since connecting: one per 200 ms at most, not one per change.
  const most = Math.floor((elapsed + 2_000) / 200) + 2;
  console.log(`10,000 changes in ${elapsed} ms; the page got ${wire.roomLists} room lists (at most ${most})`);
  expect(wire.roomLists).toBeLessThanOrEqual(most);
});

test('a name taken in the room: the page asks once for another and joins under it', async ({
  browser,
  context,
  startServer,
  browserErrors,
}) => {
  const server = await startServer();
  const other = await browser.newContext();
  browserErrors.watch(other);
  try {
    const { page: alice } = await open(context, server.http, 'alice');
    await expect(alice.locator('#members')).toContainText('alice');

    // Another visitor whose saved name differs only in case is not let in under it.
    const { page, wire } = await open(other, server.http, 'ALICE');
    const dialog = page.locator('#name-dialog');
    await expect(dialog).toBeVisible();
    await expect(page.locator('#name-title')).toHaveText('Choose another name');
    await expect(page.locator('#name-error')).toHaveText('name "ALICE" is taken in room "lobby": choose another');
    // It waits for its user: no second try on its own.
    await page.waitForTimeout(1_000);
    expect(wire.joins).toBe(1);
    await expect(alice.locator('#members')).not.toContainText('ALICE');

    // Invisible characters are refused in the dialog too.
    await page.locator('#name-input').fill('al\u200bice');
    await page.locator('#name-ok').click();
    await expect(page.locator('#name-error')).toHaveText('name cannot hold U+200B (an invisible or formatting character)');
    await expect(dialog).toBeVisible();

    // A free name, typed in fullwidth letters, is taken as the plain letters it reads as.
    await page.locator('#name-input').fill('ａｌｉｃｅ２');
    await page.locator('#name-ok').click();
    await expect(dialog).toBeHidden();
    await expect(page.locator('#me-name')).toHaveText('alice2');
    await expect(page.locator('#room-title')).toHaveText('# lobby');
    await expect(page.locator('#members')).toContainText('alice2');
    await expect(alice.locator('#members')).toContainText('alice2');
    expect(await page.evaluate(() => localStorage.getItem('gotalk-chat-name'))).toBe('alice2');
    expect(wire.joins).toBe(2);
  } finally {
    await other.close();
  }
});
