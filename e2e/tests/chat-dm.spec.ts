// Direct messages in the demo chat, over the relay: a page clicks a member and writes to it by
// the peer id the member list carries; the other page shows the message under the name its
// `from` id maps to, with an unread badge until it is opened; a third page hears nothing; a
// message to a page that has gone shows the relay's refusal; after a restart the member list
// carries the new ids and direct messages work again. Screenshots go to out/screenshots/.

import * as path from 'node:path';
import { test, expect } from '../fixtures';
import { SHOTS, openDm, sendDm, visit } from '../chat';

const WIDE = { viewport: { width: 1280, height: 760 } };

test('two pages exchange direct messages, a third hears nothing, one gone is an error', async ({
  browser,
  context,
  startServer,
  browserErrors,
}) => {
  // A server of its own: the worker's lobby stays as the other chat specs expect it.
  const { http: origin } = await startServer();
  const bobContext = await browser.newContext(WIDE);
  const cyContext = await browser.newContext(WIDE);
  browserErrors.watch(bobContext);
  browserErrors.watch(cyContext);
  try {
    const ada = await visit(context, origin, 'Ada');
    const bob = await visit(bobContext, origin, 'Bob');
    const cy = await visit(cyContext, origin, 'Cy');
    await expect(ada.locator('#members')).toContainText('Bob');
    await expect(ada.locator('#members')).toContainText('Cy');
    // The page's own entry is not a button: nobody writes to themselves.
    await expect(ada.locator('#members .member', { hasText: 'Ada' }).locator('button')).toHaveCount(0);

    // Ada writes to Bob: non-BMP text arrives as typed.
    const secret = 'psst, Bob 🤫 𝄞 only for you';
    await openDm(ada, 'Bob');
    await sendDm(ada, secret);

    // Bob sees an unread badge on Ada and on the panel, and the conversation in the list.
    const adaForBob = bob.locator('#members .member', { hasText: 'Ada' });
    await expect(adaForBob.locator('.unread')).toHaveText('1');
    await expect(bob.locator('#dm-unread')).toHaveText('1');
    await expect(bob.locator('#dm-list')).toContainText(secret);
    await bob.screenshot({ path: path.join(SHOTS, 'chat-dm-unread.png') });

    // Opened: the message is under Ada's name (from the id the gateway stamped), the badge goes.
    await adaForBob.click();
    await expect(bob.locator('#dm-name')).toHaveText('Ada');
    const heard = bob.locator('.dm-message:not(.mine)', { hasText: 'psst' });
    await expect(heard.locator('.name')).toHaveText('Ada');
    expect(await heard.locator('.text').textContent()).toBe(secret);
    await expect(adaForBob.locator('.unread')).toBeHidden();
    await expect(bob.locator('#dm-unread')).toBeHidden();

    // Bob replies; Ada, with the conversation open, sees it there at once and no badge.
    await sendDm(bob, 'got it, Ada 👋');
    const reply = ada.locator('.dm-message:not(.mine)', { hasText: 'got it, Ada 👋' });
    await expect(reply.locator('.name')).toHaveText('Bob');
    await expect(ada.locator('#dm-unread')).toBeHidden();

    // Cy got none of it. Relayed messages reach a page in order, so once a later one from
    // Bob is there, anything addressed to Cy before it would have been too.
    await openDm(bob, 'Cy');
    await sendDm(bob, 'a note for Cy');
    await expect(cy.locator('#dm-unread')).toHaveText('1');
    await expect(cy.locator('#dm-list li')).toHaveCount(1);
    await cy.locator('#dm-list button').click();
    await expect(cy.locator('.dm-message')).toHaveCount(1);
    await expect(cy.locator('.dm-message .name')).toHaveText('Bob');
    await expect(cy.locator('body')).not.toContainText('psst');
    await expect(cy.locator('body')).not.toContainText('got it, Ada');

    // Bob closes his page: Ada's next message to him is refused by the relay, and she is told.
    await bob.close();
    await expect(ada.locator('#members')).not.toContainText('Bob');
    await ada.locator('#dm-text').fill('are you still there?');
    await ada.locator('#dm-text').press('Enter');
    const failed = ada.locator('.dm-message.failed', { hasText: 'are you still there?' });
    await expect(failed.locator('[role=alert]')).toHaveText(
      'Not delivered: Bob is no longer connected (the relay says: unknown peer).',
    );
    await expect(ada.locator('#dm-via')).toHaveText('no longer connected:');
    // The conversation so far stays, under the names the ids mapped to.
    await expect(ada.locator('.dm-message .name', { hasText: 'Bob' })).toHaveCount(1);
    await ada.mouse.move(0, 0);
    await ada.screenshot({ path: path.join(SHOTS, 'chat-dm.png') });
  } finally {
    await bobContext.close();
    await cyContext.close();
  }
});

test('after a server restart the member list carries the new ids and direct messages work', async ({
  browser,
  startServer,
  browserErrors,
}) => {
  test.setTimeout(60_000);
  browserErrors.allow(/WebSocket connection to .* failed/);
  const server = await startServer();
  const adaContext = await browser.newContext(WIDE);
  const bobContext = await browser.newContext(WIDE);
  browserErrors.watch(adaContext);
  browserErrors.watch(bobContext);
  try {
    const ada = await visit(adaContext, server.http, 'Ada');
    const bob = await visit(bobContext, server.http, 'Bob');
    const bobEntry = ada.locator('#members .member', { hasText: 'Bob' });
    await expect(bobEntry).toHaveAttribute('data-peer', /^[0-9a-f-]{36}$/);
    const before = await bobEntry.getAttribute('data-peer');
    const bobBefore = await bob.locator('#my-peer').textContent();
    expect(bobBefore).toBe(before);

    await server.kill();
    await expect(ada.locator('#state')).not.toHaveText('connected');
    await server.start();
    await expect(ada.locator('#state')).toHaveText('connected', { timeout: 15_000 });
    await expect(bob.locator('#state')).toHaveText('connected', { timeout: 15_000 });

    // Bob's page has a new id, and Ada's member list has it too.
    await expect(bob.locator('#my-peer')).not.toHaveText(bobBefore!);
    const after = await bob.locator('#my-peer').textContent();
    await expect(bobEntry).toHaveAttribute('data-peer', after!);

    await openDm(ada, 'Bob');
    await sendDm(ada, 'still here after the restart 🔁');
    const heard = bob.locator('#members .member', { hasText: 'Ada' }).locator('.unread');
    await expect(heard).toHaveText('1');
  } finally {
    await adaContext.close();
    await bobContext.close();
  }
});
