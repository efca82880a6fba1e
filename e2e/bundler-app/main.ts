// A page as a user of the gotalk-client package writes it: the module and its types from the
// package, the server's address (and, to see a load fail, the wasm's URL) from the query.

import gotalk, { configure, connection, ready, type Sock } from 'gotalk-client';

const query = new URLSearchParams(location.search);
configure({ address: query.get('gotalk') ?? undefined, wasm: query.get('wasm') ?? undefined });

function show(id: string, text: string): void {
  document.getElementById(id)!.textContent = text;
}

ready.then(
  () => show('ready', `gotalk ${gotalk.version}`),
  (err: Error) => show('ready', `error: ${err.message}`),
);

const s: Sock = connection();
s.on('close', (err) => show('close', err ? `error: ${err.message}` : 'closed'));
s.bufferRequest('echo', 'hello from a bundle 😀').then(
  (bytes: Uint8Array) => {
    show('echo', new TextDecoder().decode(bytes));
    s.end();
  },
  (err: Error) => show('echo', `error: ${err.message}`),
);
