// The demo's Search panel: a query sent to the `search` source service shows a card per shard
// as each is announced (with its header), the matching lines streaming into each, a state and
// a count per shard and an overall summary; Stop cancels every shard still streaming. On a
// phone the panel is in the side drawer. Screenshots go to out/screenshots/.

import * as path from 'node:path';
import type { Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import { SHOTS, visit } from '../chat';


function shard(page: Page, name: string) {
  return page.locator(`#search-shards .shard[data-shard="${name}"]`);
}

test('a search fans out to four shards that stream their lines and finish', async ({ browser, baseURL, browserErrors }) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  browserErrors.watch(context);
  try {
    const page = await visit(context, baseURL!, 'Seeker');
    // What the page showed as each line came in, recorded in the page: the whole search takes
    // about 0.6 s, too short to sample reliably from here.
    await page.evaluate(() => {
      const seen: { shard: string; state: string; button: string }[] = ((window as any).seen = []);
      new MutationObserver((changes) => {
        for (const change of changes) {
          for (const node of change.addedNodes) {
            if (!(node instanceof HTMLElement) || !node.matches('.hit')) continue;
            const card = node.closest<HTMLElement>('.shard')!;
            const button = document.getElementById('search-go')!.textContent!;
            seen.push({ shard: card.dataset.shard!, state: card.dataset.state!, button });
          }
        }
      }).observe(document.getElementById('search-shards')!, { childList: true, subtree: true });
    });
    await page.locator('#search-query').fill('the');
    await page.locator('#search-go').click();
    await expect(page.locator('#search-go')).toHaveText('Stop');

    // A card per shard, in the order announced, each with its header's line count.
    const cards = page.locator('#search-shards .shard');
    await expect(cards).toHaveCount(4);
    await expect(cards.locator('.shard-name')).toHaveText(['harbour', 'mountain', 'city', 'desert']);
    await expect(cards.locator('.shard-meta')).toHaveText([/6 lines/, /6 lines/, /6 lines/, /6 lines/]);

    // Every shard finishes with all of its matches (what demo_sources.rs holds for "the").
    await expect(page.locator('#search-status')).toHaveText(/^Done: 19 matches from 4 shards/);
    await expect(cards.locator('.shard-state')).toHaveText(['done', 'done', 'done', 'done']);
    await expect(cards.locator('.shard-count')).toHaveText(['5', '6', '4', '4']);
    await expect(shard(page, 'city').locator('.hit-line')).toHaveText(['1', '2', '5', '6']);
    await expect(page.locator('#search-go')).toHaveText('Search');
    // Each line came in while its card said streaming and the button offered Stop.
    const seen: { shard: string; state: string; button: string }[] = await page.evaluate(() => (window as any).seen);
    expect(seen.map((s) => s.shard).sort()).toEqual(
      [...Array(5).fill('harbour'), ...Array(6).fill('mountain'), ...Array(4).fill('city'), ...Array(4).fill('desert')].sort(),
    );
    expect(seen.filter((s) => s.state !== 'streaming' || s.button !== 'Stop')).toEqual([]);
    // A line arrives as text, the query marked in it.
    const first = shard(page, 'harbour').locator('.hit').first();
    await expect(first.locator('.hit-text')).toHaveText('The ferry leaves the harbour at dawn with a cargo of letters.');
    await expect(first.locator('mark')).toHaveText(['The', 'the']);
    await page.locator('#search').scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(SHOTS, 'chat-search.png') });

    // Every line, stopped mid-stream. The shards take 240 to 780 ms for six lines each, finer
    // than Playwright's polling, so the page itself presses Stop the moment the slowest shard
    // (desert) shows its first line: every shard is then part way through.
    await page.locator('#search-query').fill('');
    await page.locator('#search-go').click();
    await expect(page.locator('#search-go')).toHaveText('Stop');
    await page.evaluate(
      () =>
        new Promise<void>((resolve) => {
          const stopOnFirstDesertLine = () => {
            if (!document.querySelector('#search-shards .shard[data-shard="desert"] .hit')) return false;
            document.getElementById('search-go')!.click();
            resolve();
            return true;
          };
          if (stopOnFirstDesertLine()) return;
          const watch = new MutationObserver(() => stopOnFirstDesertLine() && watch.disconnect());
          watch.observe(document.getElementById('search-shards')!, { childList: true, subtree: true });
        }),
    );
    await expect(page.locator('#search-status')).toHaveText(/^Stopped: \d+ matches from 4 shards; \d done, [1-4] aborted/);
    await expect(page.locator('#search-go')).toHaveText('Search');
    await expect(cards).toHaveCount(4);
    await expect(page.locator('#search-shards .shard[data-state="streaming"]')).toHaveCount(0);
    await expect(shard(page, 'desert')).toHaveAttribute('data-state', 'aborted');
    await expect(shard(page, 'desert').locator('.shard-state')).toHaveText('aborted: cancelled');
    expect(Number(await shard(page, 'desert').locator('.shard-count').textContent())).toBeLessThan(6);
    // Each card ended one way or the other, and the aborted ones were cancelled.
    for (const card of await cards.all()) {
      await expect(card.locator('.shard-state')).toHaveText(/^(done|aborted: cancelled)$/);
    }
    await page.locator('#search').screenshot({ path: path.join(SHOTS, 'chat-search-stopped.png') });
    expect(browserErrors.errors).toEqual([]);
  } finally {
    await context.close();
  }
});

test('on a phone the search is in the side drawer, and a shard with no match says so', async ({
  browser,
  baseURL,
  browserErrors,
}) => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 800 }, isMobile: true, hasTouch: true });
  browserErrors.watch(phone);
  try {
    const page = await visit(phone, baseURL!, 'Pocket');
    await expect(page.locator('#search')).not.toBeInViewport();
    await page.locator('#toggle-tools').click();
    await expect(page.locator('#side-pane')).toBeInViewport();
    await page.locator('#search-query').fill('storm');
    await page.locator('#search-query').press('Enter');
    await expect(page.locator('#search-status')).toHaveText(/^Done: 3 matches from 4 shards/);
    await expect(shard(page, 'city').locator('.shard-count')).toHaveText('0');
    await expect(shard(page, 'city').locator('.hit-none')).toHaveText('no matching lines');
    await expect(shard(page, 'mountain').locator('mark')).toHaveText('Storm');
    await page.locator('#search').scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(SHOTS, 'chat-search-phone.png') });
  } finally {
    await phone.close();
  }
});
