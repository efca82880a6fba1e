// The first-answer page's script, inlined by `gotalk-bench browser` after the client's own
// script tag: one `echo` request at once, and the time from navigation start to its answer
// POSTed to /results, with the moments the wait splits into. A cold visit (fresh profile)
// reloads the page, data-revisit ms after its answer, for a warm one (the HTTP cache holds
// the scripts), and that one again for a hot one (V8 has since cached the scripts' compiled
// code: Chromium makes that cache on a script's second load).
(function () {
  const page = document.documentElement.dataset;
  const visit = new URLSearchParams(location.search).get('visit') || 'cold';
  const next = { cold: 'warm', warm: 'hot' }[visit];
  const post = (body) => fetch('/results', { method: 'POST', body: JSON.stringify(body) });
  // Where the wait goes, for the table after the first-answer one: when this script ran
  // (the client's script has been run), when the client's socket opened, and for a wasm
  // client when its wasm arrived and when the client was ready to use it. The socket is
  // seen through a subclass, the same for every client, that only notes its first open.
  const ran = performance.now();
  let open = null;
  const Socket = WebSocket;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      this.addEventListener('open', () => (open = open || performance.now()));
    }
  };
  let ready = null;
  if (gotalk.ready) gotalk.ready.then(() => (ready = performance.now()));
  const sock = gotalk.connection(location.origin.replace(/^http/, 'ws') + page.path);
  sock
    .bufferRequest('echo', new Uint8Array(+page.size))
    .then(async (answer) => {
      const ms = performance.now();
      window.WebSocket = Socket;
      // Ours answers its first requests before the wasm has loaded: when the wasm arrived and
      // the client was ready are known once it is, after the answer.
      if (gotalk.ready) await gotalk.ready.catch(() => {});
      // The client's own part of the wait: from its script's arrival to the answer.
      const script = performance.getEntriesByName(new URL(page.script, location.href).href)[0];
      const arrived = script ? script.responseEnd : NaN;
      const wasm = performance.getEntriesByType('resource').find((e) => /\.wasm(\?|$)/.test(e.name));
      const since = (t) => (t == null || Number.isNaN(arrived) ? null : t - arrived);
      return post({
        kind: 'first',
        client: page.client,
        visit,
        ms,
        arrived: Number.isNaN(arrived) ? null : arrived,
        after: since(ms),
        ran: since(ran),
        open: since(open),
        wasm: since(wasm && wasm.responseEnd),
        ready: since(ready),
        bytes: answer.byteLength,
      });
    })
    .then(() => {
      if (next) setTimeout(() => location.replace(location.pathname + '?visit=' + next), +page.revisit);
    })
    .catch((err) => post({ kind: 'error', error: String((err && err.stack) || err) }));
})();
