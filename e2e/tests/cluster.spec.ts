// The demo chat as a cluster: three `gotalk serve` instances on one bus (Redis, then NATS)
// behind haproxy (`cluster.ts`). Pages come in through the load balancer, and the instances'
// connection counts say which instance each is on. Two pages on different instances see each
// other in a room, chat both ways and message each other directly; the instance of one is
// killed with SIGKILL and the page comes back through the load balancer on another and
// carries on; the bus is down for 2 s and for 10 s, and afterwards direct messages and rooms
// work again (a subscriber that never resubscribes fails the 10 s case). The reconnect and
// recovery times are printed.

import type { BrowserContext, Page } from '@playwright/test';
import { test, expect } from '../fixtures';
import { BUSES, Cluster, skipCluster } from '../cluster';
import { openDm, say, sendDm } from '../chat';

const WIDE = { viewport: { width: 1280, height: 760 } };

/** Each page says something in the room and hears the other's. */
async function chatBothWays(a: Page, b: Page, stamp: string): Promise<void> {
  await say(a, `from the first page ${stamp}`);
  await expect(b.locator('.message .text', { hasText: `from the first page ${stamp}` })).toBeVisible();
  await say(b, `from the second page ${stamp}`);
  await expect(a.locator('.message .text', { hasText: `from the second page ${stamp}` })).toBeVisible();
}

/** `a` (whose member list has `bName`) and `b` exchange direct messages. */
async function dmBothWays(a: Page, aName: string, b: Page, bName: string, stamp: string): Promise<void> {
  await openDm(a, bName);
  await sendDm(a, `psst ${stamp}`);
  await openDm(b, aName);
  await expect(b.locator('.dm-message:not(.mine) .text', { hasText: `psst ${stamp}` })).toBeVisible();
  await sendDm(b, `got it ${stamp}`);
  await expect(a.locator('.dm-message:not(.mine) .text', { hasText: `got it ${stamp}` })).toBeVisible();
}

/** Waits until `watcher` lists `name` once, under the peer id `page` has now. */
async function listedWithCurrentId(watcher: Page, name: string, page: Page, timeout = 5_000): Promise<void> {
  const id = await page.locator('#my-peer').textContent();
  const entries = watcher.locator('#members .member', { hasText: name });
  await expect(entries).toHaveCount(1, { timeout });
  await expect(entries).toHaveAttribute('data-peer', id!, { timeout });
}

for (const bus of BUSES) {
  test.describe(`a cluster of three on ${bus}`, () => {
    test.skip(skipCluster, 'GOTALK_CLUSTER_TESTS=skip: the cluster specs do not run');
    test.describe.configure({ timeout: 120_000 });

    let cluster: Cluster;
    let other: BrowserContext;

    test.beforeEach(async ({ browser, browserErrors }) => {
      cluster = await Cluster.start(bus);
      other = await browser.newContext(WIDE);
      browserErrors.watch(other);
    });

    test.afterEach(async ({ context }, testInfo) => {
      // The pages close before the cluster stops: one still open once haproxy has gone would
      // log its reconnects' refusals as console errors.
      await Promise.all(context.pages().map((page) => page.close()));
      await other?.close();
      if (!cluster) return;
      if (testInfo.status !== testInfo.expectedStatus) {
        await testInfo.attach('cluster logs', { body: await cluster.logs(), contentType: 'text/plain' });
      }
      await cluster.stop();
    });

    test('two pages on different instances chat in a room and message each other directly', async ({ context }) => {
      const ada = await cluster.visitAvoiding(context, 'Ada');
      const bob = await cluster.visitAvoiding(other, 'Bob', [ada.on]);
      expect(bob.on).not.toBe(ada.on);
      await listedWithCurrentId(ada.page, 'Bob', bob.page);
      await listedWithCurrentId(bob.page, 'Ada', ada.page);

      await chatBothWays(ada.page, bob.page, 'across instances 😀');
      await dmBothWays(ada.page, 'Ada', bob.page, 'Bob', 'across instances 🤫');
    });

    test('a page whose instance is killed comes back through the load balancer and carries on', async ({
      context,
      browserErrors,
    }) => {
      // The killed instance refuses the page's reconnects until haproxy takes it out.
      browserErrors.allow(/WebSocket connection to .* failed/);
      const ada = await cluster.visitAvoiding(context, 'Ada');
      const bob = await cluster.visitAvoiding(other, 'Bob', [ada.on]);
      await chatBothWays(ada.page, bob.page, 'before the kill');

      const killed = Date.now();
      await cluster.kill(bob.on);
      await expect(bob.page.locator('#state')).not.toHaveText('connected');
      await expect(bob.page.locator('#state')).toHaveText('connected', { timeout: 30_000 });
      const back = Date.now() - killed;
      console.log(`${bus}: the page was back ${back} ms after its instance was killed`);
      test.info().annotations.push({ type: 'reconnect', description: `${back} ms` });

      // Bob is on a live instance (the killed one answers nothing), Ada where she was.
      await expect
        .poll(async () => {
          const counts = await cluster.websockets();
          return counts[bob.on] === -1 && counts[ada.on] >= 1 && counts.reduce((s, n) => s + Math.max(n, 0), 0) === 2;
        })
        .toBe(true);
      // Bob's row from the dead instance lingers until presence expiry, but it carries his
      // page's secret: the page takes its name back at once, without asking, and is listed
      // once, under its new id.
      await listedWithCurrentId(ada.page, 'Bob', bob.page, 30_000);
      await listedWithCurrentId(bob.page, 'Ada', ada.page);
      await expect(bob.page.locator('#name-dialog')).not.toBeVisible();
      await expect(bob.page.locator('#me-name')).toHaveText('Bob');
      await chatBothWays(ada.page, bob.page, 'after the kill');
      await dmBothWays(ada.page, 'Ada', bob.page, 'Bob', 'after the kill');
    });

    for (const outage of [2, 10]) {
      test(`after the bus is down for ${outage} s, direct messages and rooms work again`, async ({ context }) => {
        const ada = await cluster.visitAvoiding(context, 'Ada');
        const bob = await cluster.visitAvoiding(other, 'Bob', [ada.on]);
        await dmBothWays(ada.page, 'Ada', bob.page, 'Bob', 'before the outage');

        await cluster.command('bus-kill');
        // Every instance reports itself degraded, and haproxy takes them out.
        await cluster.waitUntilUp([], 10_000);
        await new Promise((resolve) => setTimeout(resolve, outage * 1000));
        await cluster.command('bus-restart');
        const restarted = Date.now();
        await cluster.waitUntilUp([0, 1, 2], 30_000);
        const ready = Date.now() - restarted;

        // Both pages kept their connections: the same ids, no reconnect.
        await expect(ada.page.locator('#state')).toHaveText('connected');
        await expect(bob.page.locator('#state')).toHaveText('connected');
        await listedWithCurrentId(ada.page, 'Bob', bob.page, 20_000);
        await listedWithCurrentId(bob.page, 'Ada', ada.page, 20_000);
        await dmBothWays(ada.page, 'Ada', bob.page, 'Bob', `after ${outage} s down`);
        await chatBothWays(ada.page, bob.page, `after ${outage} s down`);
        const working = Date.now() - restarted;
        console.log(`${bus}, ${outage} s outage: every instance ready ${ready} ms after the bus was back, a DM and the room both ways ${working} ms after`);
        test.info().annotations.push({ type: 'recovery', description: `ready ${ready} ms, working ${working} ms` });
      });
    }
  });
}
