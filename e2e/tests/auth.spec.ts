// Logging in to a gateway that refuses sockets without a session, in real Chromium, against
// examples/axum-app's `/private` page (its `on_connect` takes a session cookie or a token in
// the URL's query). A refused page is told why (the `refused` event: 4401 and the reason),
// its keepalive stops instead of retrying, and no console error shows; after the login it
// connects with the cookie (`resume()`) or with the token, and the server knows who it is.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import { repoRoot } from '../server';

/** The example's binary: `$GOTALK_AXUM_BIN`, or the debug build. */
const axumBin = path.resolve(repoRoot, process.env.GOTALK_AXUM_BIN || 'target/debug/gotalk-example-axum');

/** examples/axum-app on a free port, with its output kept for a failed test. */
class AxumApp {
  readonly log: string[] = [];
  private child: ChildProcess | null = null;
  url = '';

  async start(): Promise<void> {
    if (!existsSync(axumBin)) {
      throw new Error(`${axumBin} does not exist: run \`cargo build -p gotalk-example-axum\``);
    }
    const child = spawn(axumBin, ['127.0.0.1:0'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    readline.createInterface({ input: child.stderr! }).on('line', (line) => this.log.push(line));
    this.url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the example printed no address')), 10_000);
      readline.createInterface({ input: child.stdout! }).on('line', (line) => {
        this.log.push(line);
        if (/^http:\/\//.test(line)) {
          clearTimeout(timer);
          resolve(line.trim().replace(/\/$/, ''));
        }
      });
      child.once('exit', (code) => reject(new Error(`the example exited with ${code}`)));
    });
  }

  stop(): void {
    this.child?.kill('SIGKILL');
  }
}

let app: AxumApp;

test.beforeEach(async () => {
  app = new AxumApp();
  await app.start();
});

test.afterEach(async ({}, testInfo) => {
  app.stop();
  if (testInfo.status !== testInfo.expectedStatus) {
    await testInfo.attach('example output', { body: app.log.join('\n') || '(empty)', contentType: 'text/plain' });
  }
});

/** Waits until the page's socket was refused once, then long enough for a retry to show. */
async function refusedAndStopped(page: Page): Promise<void> {
  await expect(page.locator('#refused')).toHaveText('4401 log in first');
  await expect(page.locator('#state')).toHaveText('refused');
  // The default schedule would have tried again within 750 ms, and three more times since.
  await page.waitForTimeout(3_000);
  const seen = await page.evaluate(() => ({
    refusals: (window as any).refusals.length,
    state: (window as any).document.getElementById('state').textContent,
    nextReconnectAt: (window as any).sock.nextReconnectAt,
  }));
  expect(seen).toEqual({ refusals: 1, state: 'refused', nextReconnectAt: null });
}

test('a refused page stops, logs in with a cookie and resumes', async ({ page, context }) => {
  await page.goto(`${app.url}/private`);
  await refusedAndStopped(page);
  await page.locator('#name').fill('ada');
  await page.locator('button').click();
  await expect(page.locator('#who')).toHaveText('ada');
  await expect(page.locator('#state')).toHaveText('open');
  const cookies = await context.cookies();
  expect(cookies.map((c) => [c.name, c.httpOnly, c.sameSite])).toEqual([['session', true, 'Strict']]);
});

test('a refused page logs in with a token in the URL, without a cookie', async ({ page, context }) => {
  await page.goto(`${app.url}/private?mode=token`);
  await refusedAndStopped(page);
  await page.locator('#name').fill('grace');
  await page.locator('button').click();
  await expect(page.locator('#who')).toHaveText('grace');
  expect(await context.cookies()).toEqual([]);
  // The token reached the server in the URL and nowhere in its output.
  const token = await page.evaluate(() => new URL((window as any).sock.address()).searchParams.get('access_token'));
  expect(token).toMatch(/^[0-9a-f]{32}$/);
  expect(app.log.join('\n')).not.toContain(token!);
});

test('a wrong token is refused with 4403 and the close says why', async ({ page }) => {
  await page.goto(`${app.url}/private?mode=token`);
  await refusedAndStopped(page);
  const close = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const s = (window as any).gotalk.connection('/private/gotalk/?access_token=nope');
        s.on('close', (err: any) => resolve({ code: err.closeCode, reason: err.closeReason, state: s.state }));
      }),
  );
  expect(close).toEqual({ code: 4403, reason: 'unknown or expired session', state: 'refused' });
});
