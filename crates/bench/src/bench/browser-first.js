// The first-answer page's script, inlined by `gotalk-bench browser` after the client's own
// script tag: one `echo` request at once, and the time from navigation start to its answer
// POSTed to /results, with the time from the client script's arrival. A cold visit (fresh profile) then reloads the page for a warm one.
(function () {
  const page = document.documentElement.dataset;
  const visit = new URLSearchParams(location.search).get('visit') || 'cold';
  const post = (body) => fetch('/results', { method: 'POST', body: JSON.stringify(body) });
  // Where the wait goes, for the table after the first-answer one: when this script ran
  // (the client's script has been run), and for a wasm client when its wasm arrived and
  // when the client was ready to use it.
  const ran = performance.now();
  let ready = null;
  if (gotalk.ready) gotalk.ready.then(() => (ready = performance.now()));
  const sock = gotalk.connection(location.origin.replace(/^http/, 'ws') + page.path);
  sock
    .bufferRequest('echo', new Uint8Array(+page.size))
    .then(async (answer) => {
      const ms = performance.now();
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
        after: since(ms),
        ran: since(ran),
        wasm: since(wasm && wasm.responseEnd),
        ready: since(ready),
        bytes: answer.byteLength,
      });
    })
    .then(() => {
      if (visit === 'cold') location.replace(location.pathname + '?visit=warm');
    })
    .catch((err) => post({ kind: 'error', error: String((err && err.stack) || err) }));
})();
