// Playwright runs the specs in tests/ in the system's Chromium (no browser download) against
// the real server binary, which fixtures.ts starts. Everything a run writes goes under out/.

import { defineConfig } from '@playwright/test';

const out = 'out';

export default defineConfig({
  testDir: './tests',
  outputDir: `${out}/test-results`,
  timeout: 30_000,
  expect: { timeout: 5_000 },
  forbidOnly: !!process.env.CI,
  retries: 0,
  reporter: [
    ['list'],
    ['html', { outputFolder: `${out}/playwright-report`, open: 'never' }],
    ['./reporter.ts', { outputDir: `${out}/test-results`, reportDir: `${out}/playwright-report` }],
  ],
  use: {
    browserName: 'chromium',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    video: 'off',
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    },
  },
});
