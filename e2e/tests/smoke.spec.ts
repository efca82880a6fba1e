// The demo page end to end: the browser client connects, the server asks the page its name,
// the page calls the server, the server calls the page, and the client bundle is served with
// an ETag.

import { test, expect } from '../fixtures';

test('the demo page greets, answers the server and loads gotalk.js', async ({ page, request }, testInfo) => {
  await page.goto('/');
  // The server's `chat.name` request opens the dialog on a first visit.
  await expect(page.locator('#name-dialog')).toBeVisible();
  await page.locator('#name-input').fill('Playwright');
  await page.locator('#name-ok').click();
  await expect(page.locator('body')).toHaveAttribute('data-state', 'open');
  await expect(page.locator('#state')).toHaveText('connected');
  await expect(page.locator('#me-name')).toHaveText('Playwright');

  // Page → server.
  await page.locator('#greet-name').fill('Playwright');
  await page.locator('#greet button[type=submit]').click();
  await expect(page.locator('#greeting')).toHaveText('Hello Playwright');

  // Server → page: `ask-page` requests `page-info` from this page, whose handler answers.
  // Not ASCII, so sizes in bytes and in characters differ.
  const value = `ping ✓ ${Math.random().toString(36).slice(2, 8)}`;
  await page.locator('#ask-value').fill(value);
  await page.locator('#ask').click();
  await expect(page.locator('#asked')).toHaveText(value);
  await expect(page.locator('#asked-info')).toContainText('title: gotalk chat');

  const screenshot = testInfo.outputPath('demo.png');
  await page.screenshot({ path: screenshot, fullPage: true });
  await testInfo.attach('demo page', { path: screenshot, contentType: 'image/png' });

  const script = await request.get('/gotalk/gotalk.js');
  expect(script.status()).toBe(200);
  expect(script.headers()['etag']).toBeTruthy();
});
