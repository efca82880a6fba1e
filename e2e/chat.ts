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
