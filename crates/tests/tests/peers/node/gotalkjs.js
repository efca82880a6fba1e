// The original gotalk.js 1.2.1, unmodified, as a peer of gotalk-rs in Node, with the `ws`
// package as its WebSocket (from e2e/node_modules, found through NODE_PATH).
//
//   node gotalkjs.js checklist GOTALK_JS URL IDLE_MS
//       the checks against the interop fixture's WebSocket endpoint
//   node gotalkjs.js keepalive GOTALK_JS URL
//       gotalk.connection() sending numbered `echo` requests until stdin says `quiet`
//       (then it waits for their answers and prints `quiet`), and its tally at `stop`
//
// Output, one line each: `ok CHECK`, `FAIL CHECK: WHY`, `names NAME...` (every request and
// notification name the handlers were given), and for keepalive `open N`, `close WHY`,
// `answered N sent-on CONNECTION` and a final `tally {json}`. Exits 0 when every check passed.
'use strict';

const fs = require('fs');
const vm = require('vm');
const readline = require('readline');

globalThis.WebSocket = require('ws');

const [mode, gotalkPath, url, idleArg] = process.argv.slice(2);
vm.runInThisContext(fs.readFileSync(gotalkPath, 'utf8'), { filename: gotalkPath });
const gotalk = globalThis.gotalk;

const text = (data) =>
  data === undefined || data === null
    ? ''
    : typeof data === 'string'
      ? data
      : new TextDecoder().decode(data);

// Every name the handlers are given, and the notifications, for checks to wait on.
const names = new Set();
const notes = [];
let noteWaiters = [];
gotalk.handleBufferRequest('', (data, result, op) => {
  names.add(op);
  if (op === 'client-echo') {
    result('client:' + text(data));
  } else {
    result.error('unknown operation "' + op + '"');
  }
});
gotalk.handleBufferNotification('', (data, name) => {
  names.add(name);
  notes.push([name, text(data)]);
  noteWaiters.forEach((wake) => wake());
});

function nextNote(name, ms = 5000) {
  return new Promise((resolve, reject) => {
    const look = () => {
      const at = notes.findIndex(([n]) => n === name);
      if (at < 0) return false;
      const [[, payload]] = notes.splice(at, 1);
      noteWaiters = noteWaiters.filter((w) => w !== look);
      clearTimeout(timer);
      resolve(payload);
      return true;
    };
    const timer = setTimeout(() => {
      noteWaiters = noteWaiters.filter((w) => w !== look);
      reject(new Error('no "' + name + '" notification within ' + ms + ' ms'));
    }, ms);
    if (!look()) noteWaiters.push(look);
  });
}

function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(what + ': nothing within ' + ms + ' ms')), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function expect(got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Error('got ' + g + ', want ' + w);
}

let failed = false;
async function check(name, body) {
  try {
    await within(10000, Promise.resolve().then(body), name);
    console.log('ok ' + name);
  } catch (e) {
    failed = true;
    console.log('FAIL ' + name + ': ' + (e && e.message));
  }
}

async function expectError(promise, message) {
  let result;
  try {
    result = await promise;
  } catch (e) {
    return expect(e.message, message);
  }
  throw new Error('succeeded with ' + JSON.stringify(result) + ', want the error ' + message);
}

// A streaming request: the parts written (none: `end()` alone), and what came back.
function stream(s, op, parts) {
  return new Promise((resolve, reject) => {
    const st = s.streamRequest(op);
    const got = [];
    st.on('data', (data) => got.push(text(data)));
    st.on('end', (err) => (err ? reject(err) : resolve(got)));
    parts.forEach((part) => st.write(part));
    st.end();
  });
}

async function checklist() {
  const idle = Number(idleArg || 0);
  const s = await new Promise((resolve, reject) =>
    gotalk.open(url, (err, s) => (err ? reject(err) : resolve(s))),
  );
  let heartbeats = 0;
  s.on('heartbeat', () => heartbeats++);
  const closed = new Promise((resolve) => s.on('close', (err) => resolve(err)));

  await check('hello notification', async () =>
    expect(JSON.parse(await nextNote('hello')), { msg: 'welcome', transport: 'websocket' }),
  );
  await check('greet', async () =>
    expect(await s.request('greet', { name: 'js' }), { greeting: 'Hello js' }),
  );
  await check('echo-json', async () => {
    const value = { a: [1, 'two', null, true], é: 'ü' };
    expect(await s.request('echo-json', value), value);
  });
  await check('echo bytes', async () => expect(text(await s.bufferRequest('echo', 'raw')), 'raw'));
  await check('fail is an error', () => expectError(s.request('fail'), 'intentional failure'));
  await check('unknown operation', () =>
    expectError(s.request('no-such-op'), 'unknown operation "no-such-op"'),
  );
  await check('empty result', async () => expect(await s.request('empty'), null));
  await check('notify-me', async () => {
    expect(await s.request('notify-me', 'n1'), null);
    expect(await nextNote('notified'), '"n1"');
  });
  await check('echo-note', async () => {
    s.notify('echo-note', [1, 2]);
    expect(await nextNote('echo-note-reply'), '[1,2]');
  });
  await check('reverse-echo calls the page back', async () =>
    expect(text(await s.bufferRequest('reverse-echo', 'js')), 'client:js'),
  );
  await check('stream-echo', async () =>
    expect((await stream(s, 'stream-echo', ['a', 'bc'])).join(''), 'abc'),
  );
  // end() alone sends an `s` with an empty payload and no `p`: Go hands the handler that
  // empty first part, and the echo answers with the empty `S` that ends the stream.
  await check('stream-echo ended with nothing written', async () =>
    expect(await within(3000, stream(s, 'stream-echo', []), 'the end'), []),
  );
  if (idle > 0) {
    await new Promise((resolve) => setTimeout(resolve, idle));
    await check('idle ' + idle + ' ms', async () => {
      if (!s.ws) throw new Error('the connection closed while idle');
      if (idle > 21000 && heartbeats === 0) throw new Error('no heartbeat while idle');
      expect(text(await s.bufferRequest('echo', 'after idle')), 'after idle');
    });
  }
  await check('end-me closes the connection cleanly', async () => {
    expect(await s.request('end-me'), null);
    expect(await within(5000, closed, 'close'), null);
  });
  console.log('names ' + [...names].sort().join(' '));
  process.exit(failed ? 1 : 0);
}

async function keepalive() {
  const s = gotalk.connection(url);
  let opens = 0;
  const tally = { sent: 0, answered: 0, failed: 0, mismatched: 0, duplicated: 0, afterReopen: 0 };
  const seen = new Set();
  const pending = new Set();
  s.on('open', () => console.log('open ' + ++opens));
  s.on('close', (err) => console.log('close ' + (err ? err.message : 'clean')));
  let seq = 0;
  let stopping = false;
  const send = () => {
    if (stopping) return;
    const n = ++seq;
    const opensThen = opens;
    tally.sent++;
    pending.add(n);
    s.bufferRequest('echo', String(n)).then(
      (data) => {
        pending.delete(n);
        if (text(data) !== String(n)) return tally.mismatched++;
        if (seen.has(n)) tally.duplicated++;
        seen.add(n);
        tally.answered++;
        if (opensThen >= 2) tally.afterReopen++;
        console.log('answered ' + n + ' sent-on ' + opensThen);
      },
      () => {
        pending.delete(n);
        tally.failed++;
      },
    );
    setTimeout(send, 100);
  };
  send();
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (line.trim() === 'quiet' && !stopping) {
      // No more requests; those sent are answered or fail.
      stopping = true;
      const started = Date.now();
      while (pending.size > 0 && Date.now() - started < 10000) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      console.log('quiet');
    }
    if (line.trim() === 'stop') break;
  }
  tally.lost = pending.size;
  tally.opens = opens;
  console.log('names ' + [...names].sort().join(' '));
  console.log('tally ' + JSON.stringify(tally));
  s.end();
  process.exit(0);
}

({ checklist, keepalive })[mode]().catch((e) => {
  console.log('FAIL ' + mode + ': ' + (e && e.stack));
  process.exit(1);
});
