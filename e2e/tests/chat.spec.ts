// The demo chat end to end: pages in separate browser contexts chat in rooms through the real
// server, the server asks a newcomer its name, a program over TCP (the real `gotalk` CLI)
// takes part, and an ErrorResult reaches the person who caused it. Screenshots of the demo
// go to out/screenshots/.

import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { test, expect } from '../fixtures';
import { SHOTS, say, visit } from '../chat';
import { gotalkBin } from '../server';


/** Runs the real `gotalk` CLI; resolves with its exit code and output. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(gotalkBin, args, { timeout: 15_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('two browsers chat in a room, and a room they are not in hears nothing', async ({
  browser,
  context,
  baseURL,
  browserErrors,
}) => {
  const other = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  browserErrors.watch(other);
  try {
    const ada = await visit(context, baseURL!, 'Ada');
    const bob = await visit(other, baseURL!, 'Bob');
    await expect(ada.locator('#members')).toContainText('Bob');
    await expect(ada.locator('.event.join', { hasText: 'Bob' })).toBeVisible();

    // Non-BMP text and a U+0000 arrive as typed.
    const hello = 'hello from Ada 😀 𝄞 a\u0000b';
    await say(ada, hello);
    const heard = bob.locator('.message', { hasText: 'hello from Ada' });
    await expect(heard.locator('.name')).toHaveText('Ada');
    expect(await heard.locator('.text').textContent()).toBe(hello);
    await say(bob, 'hi Ada, Bob here 👋');
    await expect(ada.locator('.message .text', { hasText: 'hi Ada, Bob here 👋' })).toBeVisible();
    await ada.screenshot({ path: path.join(SHOTS, 'chat-ada.png') });

    // Bob moves to a room of his own; Ada sees it in the room list and Bob gone from hers.
    await bob.locator('#room-name').fill('Side-Room');
    await bob.locator('#new-room button').click();
    await expect(bob.locator('#room-title')).toHaveText('# side-room');
    await expect(ada.locator('#rooms')).toContainText('side-room');
    await expect(ada.locator('#members')).not.toContainText('Bob');
    await expect(ada.locator('.event.leave', { hasText: 'Bob' })).toBeVisible();

    // What Ada says in the lobby does not reach the side room. Bob's notifications arrive in
    // order, so once his own later message is there, the lobby's would have been too.
    await say(ada, 'only for the lobby');
    await say(bob, 'anyone here?');
    await expect(bob.locator('#messages')).not.toContainText('only for the lobby');
    await expect(bob.locator('#messages')).not.toContainText('hello from Ada');
    await bob.screenshot({ path: path.join(SHOTS, 'chat-bob-side-room.png') });
  } finally {
    await other.close();
  }
});

test('the server asks a newcomer its name, and the name can be changed', async ({ page, browser, baseURL, browserErrors }) => {
  await page.goto('/');
  // The dialog opens because the server called the page's `chat.name`, suggesting a name.
  const dialog = page.locator('#name-dialog');
  await expect(dialog).toBeVisible();
  await expect(page.locator('#name-input')).toHaveValue(/^guest-\d+$/);
  await page.screenshot({ path: path.join(SHOTS, 'chat-name-dialog.png') });
  await page.locator('#name-input').fill('Zoë 😀');
  await page.locator('#name-ok').click();
  await expect(dialog).toBeHidden();
  await expect(page.locator('#me-name')).toHaveText('Zoë 😀');
  await expect(page.locator('#members')).toContainText('Zoë 😀');
  // The round trip the server measured with `chat.ping`.
  await expect(page.locator('#rtt')).toHaveText(/^RTT \d+(\.\d)? ms$/);

  const other = await browser.newContext();
  browserErrors.watch(other);
  try {
    const watcher = await visit(other, baseURL!, 'Watcher');
    await expect(watcher.locator('#members')).toContainText('Zoë 😀');
    await page.locator('#me').click();
    await page.locator('#name-input').fill('Zed');
    await page.locator('#name-ok').click();
    await expect(page.locator('#me-name')).toHaveText('Zed');
    await expect(watcher.locator('.event.rename', { hasText: 'Zed' })).toHaveText(/Zed was Zoë 😀/);
    await expect(watcher.locator('#members')).toContainText('Zed');
  } finally {
    await other.close();
  }
});

test('a program over TCP joins with the gotalk CLI, and page and program see each other', async ({
  context,
  server,
}) => {
  const page = await visit(context, server.http, 'Web');
  // The worker's server keeps the lobby's history: this run's lines are told apart by a stamp.
  const stamp = Date.now().toString(36);
  const fromTcpText = `hello from tcp 😀 ${stamp}`;
  const toTcpText = `hello, program ${stamp}`;

  // A program that only sends takes part under the name it gives.
  const sent = await cli(['notify', server.tcp, 'chat.say', JSON.stringify({ room: 'lobby', text: fromTcpText, name: 'cli-bot' })]);
  expect(sent, sent.stderr).toMatchObject({ code: 0 });
  const fromTcp = page.locator('.message', { hasText: fromTcpText });
  await expect(fromTcp.locator('.name')).toHaveText('cli-bot');
  await expect(page.locator('.event.join', { hasText: 'cli-bot' }).last()).toBeVisible();

  await say(page, toTcpText);
  const joined = await cli(['call', server.tcp, 'chat.join', JSON.stringify({ room: 'lobby', name: 'cli-bot' })]);
  expect(joined, joined.stderr).toMatchObject({ code: 0 });
  const answer = JSON.parse(joined.stdout);
  expect(answer.history).toContainEqual(expect.objectContaining({ kind: 'text', name: 'Web', text: toTcpText }));
  expect(answer.history).toContainEqual(expect.objectContaining({ kind: 'text', name: 'cli-bot', text: fromTcpText }));
  expect(answer.members).toContainEqual(expect.objectContaining({ name: 'Web', transport: 'websocket' }));
  expect(answer.you).toMatchObject({ name: 'cli-bot', transport: 'tcp' });

  // The CLI reports an ErrorResult with exit status 4 and the server's words.
  const refused = await cli(['call', server.tcp, 'chat.say', JSON.stringify({ text: 'x'.repeat(1001) })]);
  expect(refused.code).toBe(4);
  expect(refused.stderr).toContain('a message is at most 1000 characters; this one has 1001');
  await page.screenshot({ path: path.join(SHOTS, 'chat-tcp-peer.png') });
});

test('an ErrorResult is shown to the user: an over-long message, a bad room name', async ({ context, baseURL }) => {
  const page = await visit(context, baseURL!, 'Eve');

  // At the limit: sent.
  await say(page, 'y'.repeat(1000));
  // One past it: the counter warns, and the server's refusal is shown on the message.
  await page.locator('#text').fill('x'.repeat(1001));
  await expect(page.locator('#text-count')).toHaveText('1001 / 1000');
  await expect(page.locator('#text-count')).toHaveClass(/over/);
  await page.locator('#send').click();
  const failed = page.locator('.message.failed');
  await expect(failed.locator('[role=alert]')).toContainText(
    'Not sent: a message is at most 1000 characters; this one has 1001',
  );

  await page.locator('#room-name').fill('no spaces!');
  await page.locator('#new-room button').click();
  await expect(page.locator('#room-error')).toHaveText('"no spaces!": a room name is letters, digits, - and _');
  await expect(page.locator('#room-title')).toHaveText('# lobby');
  await page.screenshot({ path: path.join(SHOTS, 'chat-errors.png') });
});

test('the demo on a phone: the rooms open as a drawer', async ({ browser, baseURL, browserErrors }) => {
  const phone = await browser.newContext({ viewport: { width: 390, height: 760 }, isMobile: true, hasTouch: true });
  browserErrors.watch(phone);
  try {
    const page = await visit(phone, baseURL!, 'Phone');
    await expect(page.locator('#rooms-pane')).not.toBeInViewport();
    await say(page, 'typed on a small screen');
    await page.screenshot({ path: path.join(SHOTS, 'chat-phone.png') });
    await page.locator('#toggle-rooms').click();
    await expect(page.locator('#rooms-pane')).toBeInViewport();
    await page.screenshot({ path: path.join(SHOTS, 'chat-phone-rooms.png') });
  } finally {
    await phone.close();
  }
});
