// Type-checks gotalk.d.mts (the ES module's declarations) against the module as pages import
// it: the default export and the named ones, values and types. `npx tsc -p types` fails when
// they drift apart; tests/bundler.spec.ts checks the named exports against gotalk.mjs itself.

import gotalk, {
  Buf,
  configure,
  connection,
  defaultHandlers,
  ErrTimeout,
  handle,
  handleBufferNotification,
  handleStreamRequest,
  Handlers,
  open,
  protocol,
  ready,
  Sock,
  version,
  type Configuration,
  type KeepAliveOptions,
  type ProtocolError,
  type RelayMessage,
  type Source,
  type State,
} from '../../crates/gateway/client/gotalk.mjs';

const settings: Configuration = { address: 'wss://example.com/gotalk/', wasm: new URL('https://cdn.example/gotalk_bg.wasm') };
const same: typeof gotalk = configure(settings);
configure({ wasm: fetch('/gotalk_bg.wasm') });
configure({ wasm: new Uint8Array([0, 0x61, 0x73, 0x6d]) });

handle<{ name: string }, { greeting: string }>('greet', (value, result) => result({ greeting: 'Hello ' + value.name }));
handleBufferNotification('broadcast', (data: Uint8Array, name: string) => data.length + name.length);
handleStreamRequest<string, string>('shout', (stream) => stream.on('data', (part) => stream.write(part.toUpperCase())));
defaultHandlers.handleRequest('page-info', (_value, result) => result({ title: 'types' }));

const options: KeepAliveOptions = { min: 250, retryTimeout: 10_000 };
const s: Sock = connection(options);
s.on('state', (state: State) => state.length);
s.on('relay', (message: RelayMessage<{ text: string }>) => message.body.text);
s.on('close', (err) => err?.message);
const own: Sock = new Sock(new Handlers()).openKeepAlive('/gotalk/');
open((err, sock) => (err ? err.message : sock.state));

async function use(): Promise<number> {
  await ready;
  const bytes: Uint8Array = await s.bufferRequest('echo', Buf(4));
  const reply = await s.request<{ greeting: string }>('greet', { name: 'module' });
  for await (const source of s.sources('search', 'harbour')) {
    const one: Source = source;
    one.cancel();
  }
  return bytes.length + reply.greeting.length;
}
void use;

const fault: ProtocolError = ErrTimeout;
void [same, own, fault.code === protocol.ErrorTimeout, version.length, gotalk.defaultResponderAddress];
