// An app built against the packaged crates, as a registry user gets them: scripts/package-check.sh
// runs `cargo package` for every publishable crate and builds examples/axum-app's source
// against the unpacked .crate files (not the workspace's folders) into
// target/debug/gotalk-packaged-app. The app must serve the browser client from its own
// package and answer a page's request in Chromium.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { test, expect } from '../fixtures';
import { repoRoot } from '../server';

const appBin = path.join(repoRoot, 'target/debug/gotalk-packaged-app');

/** Starts the packaged app on a free port and resolves with its base URL. */
async function startApp(): Promise<{ url: string; child: ChildProcess }> {
  if (!existsSync(appBin)) {
    throw new Error(`${appBin} does not exist: run scripts/package-check.sh`);
  }
  const child = spawn(appBin, ['127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout! });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the packaged app printed no address in 10 s')), 10_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(line.trim());
    });
    child.once('exit', (code) => reject(new Error(`the packaged app exited (${code})`)));
  });
  return { url, child };
}

test('an app built on the packaged crates serves gotalk.js and answers a page', async ({ page }) => {
  const { url, child } = await startApp();
  try {
    const client = await page.request.get(new URL('/gotalk/gotalk.js', url).href);
    expect(client.status()).toBe(200);
    expect(client.headers()['etag']).toBeTruthy();
    const wasm = await page.request.get(new URL('/gotalk/gotalk_bg.wasm', url).href);
    expect(wasm.status()).toBe(200);
    expect(wasm.headers()['content-type']).toBe('application/wasm');

    await page.goto(url);
    await expect(page.locator('#answer')).toHaveText('HELLO FROM THE PAGE');
  } finally {
    child.kill('SIGINT');
  }
});
