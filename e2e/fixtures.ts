// The fixtures every spec uses: import `test` and `expect` from here, not from
// @playwright/test.
//
// - `server` (one per worker): the real `gotalk serve` binary on 127.0.0.1 ports of its own;
//   `baseURL` points at it, so `page.goto('/')` loads the demo.
// - `browserErrors` (automatic, per test): fails the test on any console error or uncaught
//   page error in the test's browser context, and when a test fails attaches the whole
//   console log and the server's output to the report. A test that provokes an error on
//   purpose (a WebSocket refused while the server restarts) says so with
//   `browserErrors.allow(/pattern/)`; one that opens more contexts passes each to
//   `browserErrors.watch(context)`.
// - `startServer(args)` (per test): starts another `gotalk serve` with extra arguments (limits,
//   say), stopped after the test; its output is attached to the report when the test fails.

import { test as base, expect, type BrowserContext } from '@playwright/test';
import { GotalkServer } from './server';

type WorkerFixtures = { server: GotalkServer };
/** The page's console errors and page errors so far, and the ones a test expects. */
export type BrowserErrors = {
  readonly errors: string[];
  /** Lets errors matching `pattern` through, for the rest of the test. */
  allow(pattern: RegExp): void;
  /** Watches another context's pages too (the test's own `context` is always watched). */
  watch(context: BrowserContext): void;
};
/** Starts a server of the test's own, `gotalk serve` with `args` added. */
export type StartServer = (args?: string[]) => Promise<GotalkServer>;
type TestFixtures = { browserErrors: BrowserErrors; startServer: StartServer };

export const test = base.extend<TestFixtures, WorkerFixtures>({
  server: [
    async ({}, use) => {
      const server = new GotalkServer();
      await server.start();
      try {
        await use(server);
      } finally {
        await server.stop();
      }
    },
    { scope: 'worker', timeout: 30_000 },
  ],

  baseURL: async ({ server }, use) => {
    await use(server.http);
  },

  browserErrors: [
    async ({ context, server }, use, testInfo) => {
      const errors: string[] = [];
      const allowed: RegExp[] = [];
      const consoleLog: string[] = [];
      const watch = (context: BrowserContext) => {
        context.on('console', (message) => {
          const where = message.location();
          const line = `[${message.type()}] ${message.text()} (${where.url}:${where.lineNumber})`;
          consoleLog.push(line);
          if (message.type() === 'error') errors.push(line);
        });
        context.on('weberror', (webError) => {
          const error = webError.error();
          const line = `[pageerror] ${error.stack || error.message}`;
          consoleLog.push(line);
          errors.push(line);
        });
      };
      watch(context);
      const serverLogMark = server.logged;

      await use({ errors, allow: (pattern) => allowed.push(pattern), watch });

      const unexpected = errors.filter((e) => !allowed.some((pattern) => pattern.test(e)));
      const failed = unexpected.length > 0 || testInfo.status !== testInfo.expectedStatus;
      if (failed) {
        await testInfo.attach('browser console', {
          body: consoleLog.join('\n') || '(empty)',
          contentType: 'text/plain',
        });
        await testInfo.attach('server output', {
          body: server.logSince(serverLogMark).join('\n') || '(empty)',
          contentType: 'text/plain',
        });
      }
      expect(unexpected, 'console errors and page errors').toEqual([]);
    },
    { auto: true },
  ],

  startServer: async ({}, use, testInfo) => {
    const started: GotalkServer[] = [];
    await use(async (args = []) => {
      const server = new GotalkServer(args);
      started.push(server);
      await server.start();
      return server;
    });
    await Promise.all(started.map((server) => server.stop()));
    if (testInfo.status !== testInfo.expectedStatus) {
      for (const [i, server] of started.entries()) {
        await testInfo.attach(`server ${i + 1} output`, {
          body: server.log.join('\n') || '(empty)',
          contentType: 'text/plain',
        });
      }
    }
  },
});

export { expect };
