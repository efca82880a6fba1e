// The server killed with SIGKILL under load, and restarted on the same ports: a crowd of
// 1,000 Rust keepalive clients (`gotalk-bench bench-crowd`, half TCP, half WebSocket) and five
// pages using the browser keepalive all come back, and every request any of them made was
// answered or failed with an error: none lost, none answered twice. Prints the figures.

import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as readline from 'node:readline';
import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import { benchBin, repoRoot } from '../server';

const CLIENTS = 1_000;
const PAGES = 5;
/** Each Rust client's pause between requests, ms: 2,000 requests/s from the crowd. */
const CROWD_INTERVAL_MS = 500;
/** How long a Rust client's request may wait for a connection, s. */
const CROWD_WAIT_S = 15;

type Json = Record<string, any>;

/** The crowd as a child process, with its latest progress and its tally. */
class Crowd {
  readonly child: ChildProcessWithoutNullStreams;
  readonly log: string[] = [];
  progress: Json | null = null;
  ready = false;
  readonly tally: Promise<Json>;

  constructor(tcp: string, ws: string) {
    this.child = spawn(
      benchBin,
      [
        'bench-crowd',
        '--tcp', tcp,
        '--ws', ws,
        '--clients', String(CLIENTS),
        '--interval-ms', String(CROWD_INTERVAL_MS),
        '--wait-secs', String(CROWD_WAIT_S),
      ],
      { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    readline.createInterface({ input: this.child.stderr }).on('line', (line) => this.keep(line));
    this.tally = new Promise((resolve, reject) => {
      readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
        const message = JSON.parse(line) as Json;
        if (message.event === 'ready') this.ready = true;
        if (message.event === 'progress') this.progress = message.state;
        if (message.event === 'tally') resolve(message);
        else this.keep(line);
      });
      this.child.once('exit', (code) => reject(new Error(`bench-crowd exited (${code}) without a tally\n${this.log.join('\n')}`)));
    });
    // A failed test must not leave the rejection unhandled.
    this.tally.catch(() => {});
  }

  /** Tells the crowd that the server dies now: reconnects are timed from here. */
  mark(): void {
    this.child.stdin.write('mark\n');
  }

  /** Stops the load: no new requests; the tally follows once every request has settled. */
  stop(): Promise<Json> {
    this.child.stdin.end();
    return this.tally;
  }

  private keep(line: string): void {
    this.log.push(line);
    if (this.log.length > 50) this.log.shift();
  }
}

/** Starts a page's keepalive and its request loop: `echo` with a sequence number, one at a time. */
async function startPage(page: Page, url: string): Promise<void> {
  // Only the test's sock on the page: demo.js is held back.
  await page.route(new URL('/demo.js', url).href, (route) =>
    route.fulfill({ contentType: 'text/javascript', body: '' }),
  );
  await page.goto(url);
  await page.evaluate(() => {
    const w = window as any;
    const s = (w.s = w.gotalk.connection());
    w.stats = { sent: 0, answered: 0, rejected: 0, duplicates: 0, mismatched: 0, answeredAfterBack: 0, errors: {} };
    w.seen = new Set();
    w.stopLoad = false;
    w.wasDown = false;
    w.backAt = null;
    s.on('state', (state: string) => {
      if (state === 'reconnecting') w.wasDown = true;
      if (state === 'open' && w.wasDown && w.backAt === null) w.backAt = Date.now();
    });
    w.loop = (async () => {
      let n = 0;
      while (!w.stopLoad) {
        const seq = ++n;
        // Counted as an answer from the new server only if sent once the page was back.
        const afterBack = w.backAt !== null;
        w.stats.sent++;
        try {
          const answer = await s.request('echo', { seq });
          w.stats.answered++;
          if (!answer || answer.seq !== seq) w.stats.mismatched++;
          else if (w.seen.has(seq)) w.stats.duplicates++;
          else w.seen.add(seq);
          if (afterBack) w.stats.answeredAfterBack++;
        } catch (err) {
          w.stats.rejected++;
          const kind = String((err as Error).message).replace(/"[^"]*"/g, '"…"');
          w.stats.errors[kind] = (w.stats.errors[kind] || 0) + 1;
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
  });
}

test('1,000 Rust keepalive clients and 5 pages survive a SIGKILL restart, losing no request', async ({
  browser,
  startServer,
  browserErrors,
}) => {
  test.setTimeout(60_000);
  browserErrors.allow(/WebSocket connection to .* failed/);
  // 500 TCP and 500 WebSocket clients from 127.0.0.1, plus the pages and their page loads.
  const server = await startServer(['--max-connections-per-addr', '2000']);
  const crowd = new Crowd(`127.0.0.1:${server.tcpPort}`, `ws://127.0.0.1:${server.httpPort}/gotalk/`);
  const context = await browser.newContext();
  browserErrors.watch(context);
  try {
    const pages: Page[] = [];
    for (let i = 0; i < PAGES; i++) {
      const page = await context.newPage();
      await startPage(page, server.http);
      pages.push(page);
    }
    // Every Rust client has had an answer, every page a few.
    await expect.poll(() => crowd.ready, { timeout: 20_000, message: 'the crowd is connected' }).toBe(true);
    for (const page of pages) await page.waitForFunction(() => (window as any).stats.answered >= 3);

    crowd.mark();
    const killedAt = Date.now();
    await server.kill();
    await server.start();
    const restartedAt = Date.now();

    // Everyone is back and has had an answer from the new server.
    await expect
      .poll(() => crowd.progress?.recovered, { timeout: 20_000, message: 'Rust clients answered by the new server' })
      .toBe(CLIENTS);
    for (const page of pages) {
      await page.waitForFunction(() => (window as any).stats.answeredAfterBack >= 1, null, { timeout: 15_000 });
    }

    // Stop the load and let every request settle.
    const tallied = crowd.stop();
    for (const page of pages) await page.evaluate(() => ((window as any).stopLoad = true));
    const pageStats: Json[] = [];
    for (const page of pages) {
      await page.waitForFunction(
        () => {
          const { sent, answered, rejected } = (window as any).stats;
          return sent === answered + rejected;
        },
        null,
        { timeout: 10_000 },
      );
      pageStats.push(await page.evaluate(() => ({ ...(window as any).stats, backAt: (window as any).backAt })));
    }
    const tally = await tallied;

    const pageBack = pageStats.map((s) => s.backAt - killedAt).sort((a, b) => a - b);
    const figure =
      `restart took ${restartedAt - killedAt} ms; crowd: ${tally.clients} clients, ${tally.reconnected} reconnected, ` +
      `reconnect after the kill min ${Math.round(tally.reconnect_ms.min)} / median ${Math.round(tally.reconnect_ms.median)} / ` +
      `p90 ${Math.round(tally.reconnect_ms.p90)} / max ${Math.round(tally.reconnect_ms.max)} ms; ` +
      `requests sent ${tally.sent}, answered ${tally.answered}, errored ${tally.errored} ${JSON.stringify(tally.errors)}, ` +
      `lost ${tally.lost}, duplicates ${tally.duplicates}, mismatched ${tally.mismatched}; ` +
      `pages: back ${pageBack.join(', ')} ms after the kill; ` +
      pageStats
        .map((s) => `sent ${s.sent} answered ${s.answered} rejected ${s.rejected} ${JSON.stringify(s.errors)}`)
        .join('; ');
    console.log(figure);
    test.info().annotations.push({ type: 'kill -9 under 1,000 clients', description: figure });

    expect(tally.clients).toBe(CLIENTS);
    expect(tally.reconnected, 'every Rust client reconnected').toBe(CLIENTS);
    expect(tally.recovered).toBe(CLIENTS);
    expect(tally.drained, 'every Rust request settled').toBe(true);
    expect(tally.lost, 'Rust requests neither answered nor failed').toBe(0);
    expect(tally.duplicates).toBe(0);
    expect(tally.mismatched).toBe(0);
    expect(tally.sent).toBe(tally.answered + tally.errored);
    for (const stats of pageStats) {
      expect(stats.sent, 'every page request settled').toBe(stats.answered + stats.rejected);
      expect(stats.duplicates).toBe(0);
      expect(stats.mismatched).toBe(0);
      expect(stats.answeredAfterBack).toBeGreaterThan(0);
    }
  } finally {
    crowd.child.kill('SIGKILL');
    await context.close();
  }
});
