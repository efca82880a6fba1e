// Helpers shared by the chat demo's specs.

import * as path from 'node:path';
import { expect, type BrowserContext, type Page } from '@playwright/test';

/** Where the chat specs put the screenshots a person looks at. */
export const SHOTS = path.resolve(__dirname, 'out', 'screenshots');

/**
 * Opens the demo as a returning visitor called `name` (so no name dialog), and waits until it
 * is connected and listed among the members of its room.
 */
export async function visit(context: BrowserContext, origin: string, name: string): Promise<Page> {
  await context.addInitScript((name) => {
    // Also runs in the first about:blank, which has no storage.
    if (location.protocol.startsWith('http')) localStorage.setItem('gotalk-chat-name', name);
  }, name);
  const page = await context.newPage();
  await page.goto(origin);
  await expect(page.locator('#state')).toHaveText('connected');
  await expect(page.locator('#members')).toContainText(name);
  return page;
}

/** Types `text` in the composer and sends it; waits until the server has taken it. */
export async function say(page: Page, text: string): Promise<void> {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
  await expect(page.locator('.message:not(.pending):not(.failed) .text', { hasText: text }).last()).toBeVisible();
}

/** Opens the conversation with the member called `name` by clicking it in the member list. */
export async function openDm(page: Page, name: string): Promise<void> {
  await page.locator('#members .member', { hasText: name }).click();
  await expect(page.locator('#dm-open')).toBeVisible();
  await expect(page.locator('#dm-name')).toHaveText(name);
}

/** Sends `text` in the open conversation and waits until the relay has taken it. */
export async function sendDm(page: Page, text: string): Promise<void> {
  await page.locator('#dm-text').fill(text);
  await page.locator('#dm-text').press('Enter');
  await expect(
    page.locator('.dm-message.mine:not(.pending):not(.failed) .text', { hasText: text }),
  ).toBeVisible();
}
