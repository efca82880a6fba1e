// The browser benchmark's page (served at /bench.html by `gotalk-bench browser`): round trips
// per second of each client, one client at a time, rotating the order from run to run, at each
// depth (requests kept in flight), then the figures POSTed to /results.
//
// Every client is driven by the same loop: `depth` workers, each awaiting `call()` (a promise of
// one echoed payload) and calling again. The clients:
// - `ours` (and `before`, a second build of ours when one is given): this project's gotalk.js;
// - `gotalkjs`: the original gotalk.js 1.2.1;
// - `raw`: a plain WebSocket to a tungstenite echo server, sending the bytes a gotalk request
//   is (a header message, then the payload message) and taking the two echoed messages as the
//   answer: the same traffic with no protocol work, so the ceiling of the loop above.

const q = new URLSearchParams(location.search);
const runs = +q.get('runs');
const secs = +q.get('secs');
const warmup = +q.get('warmup');
const size = +q.get('size');
const depths = q.get('depths').split(',').map(Number);
const names = q.get('clients').split(',');
const rawUrl = q.get('raw');
const ws = (path) => location.origin.replace(/^http/, 'ws') + path;

const payload = new Uint8Array(size).fill(0x78);
// A SingleRequest header for `echo` with a `size`-byte payload, as gotalk writes it.
const header = new TextEncoder().encode('r0001004echo' + size.toString(16).padStart(8, '0'));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function post(body) {
  await fetch('/results', { method: 'POST', body: JSON.stringify(body) });
}

// Loads a classic script that defines the global `gotalk`, and takes that global away so the
// next one can define its own.
function loadGotalk(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = () => {
      const g = globalThis.gotalk;
      delete globalThis.gotalk;
      resolve(g);
    };
    script.onerror = () => reject(new Error('cannot load ' + src));
    document.head.appendChild(script);
  });
}

async function gotalkClient(src, path) {
  const g = await loadGotalk(src);
  if (g.ready) await g.ready;
  const sock = g.connection(ws(path));
  await new Promise((resolve, reject) => {
    sock.once('open', resolve);
    sock.once('close', (err) => reject(err || new Error(src + ': closed')));
  });
  return { call: () => sock.bufferRequest('echo', payload) };
}

async function rawClient() {
  const sock = new WebSocket(rawUrl);
  sock.binaryType = 'arraybuffer';
  await new Promise((resolve, reject) => {
    sock.onopen = resolve;
    sock.onerror = () => reject(new Error('cannot open ' + rawUrl));
  });
  // Answers come back in order: every second message completes the oldest call.
  const waiting = [];
  let odd = false;
  sock.onmessage = (event) => {
    odd = !odd;
    if (!odd) waiting.shift()(event.data);
  };
  return {
    call: () => new Promise((resolve) => {
      waiting.push(resolve);
      sock.send(header);
      sock.send(payload);
    }),
  };
}

const makers = {
  ours: () => gotalkClient('/gotalk/gotalk.js', '/gotalk/'),
  before: () => gotalkClient('/before/gotalk.js', '/before/'),
  gotalkjs: () => gotalkClient('/original/gotalk.js', '/gotalk/'),
  raw: rawClient,
};

// Round trips per second of `client` with `depth` calls in flight, over `secs` after `warmup`.
async function measure(client, depth) {
  let done = 0;
  let wrong = 0;
  let stop = false;
  const worker = async () => {
    while (!stop) {
      const answer = await client.call();
      if (answer.byteLength !== size) wrong++;
      done++;
    }
  };
  const workers = [];
  for (let i = 0; i < depth; i++) workers.push(worker());
  await sleep(warmup * 1000);
  const n0 = done;
  const t0 = performance.now();
  await sleep(secs * 1000);
  const n1 = done;
  const t1 = performance.now();
  stop = true;
  await Promise.all(workers);
  if (wrong) throw new Error(wrong + ' answers were not ' + size + ' bytes');
  return { n: n1 - n0, rps: (n1 - n0) / ((t1 - t0) / 1000) };
}

async function main() {
  const clients = {};
  for (const name of names) clients[name] = await makers[name]();
  const results = [];
  for (let run = 0; run < runs; run++) {
    for (const depth of depths) {
      for (let i = 0; i < names.length; i++) {
        const name = names[(i + run) % names.length];
        const { n, rps } = await measure(clients[name], depth);
        results.push({ run, depth, client: name, n, rps });
      }
    }
  }
  await post({ kind: 'throughput', agent: navigator.userAgent, results });
}

main().catch((err) => post({ kind: 'error', error: String((err && err.stack) || err) }));
