// Type-checks gotalk.d.ts (the declarations served at /gotalk/gotalk.d.ts) against the API as
// pages use it; `npx tsc -p types` in scripts/test.sh fails when the two drift apart.

import gotalk from '../../crates/gateway/client/gotalk';

gotalk.handle<{ name: string }, { greeting: string }>('greet', (value, result) => {
  if (!value.name) return result.error('no name');
  result({ greeting: 'Hello ' + value.name });
});
gotalk.handleBufferNotification('broadcast', (data: Uint8Array, name: string) => data.length + name.length);
gotalk.handleStreamRequest<string, string>('shout', (stream) => {
  stream.on('data', (part) => stream.write(part.toUpperCase()));
  stream.on('end', (err) => (err ? stream.error(err) : stream.end()));
});

const s: gotalk.Sock = gotalk.connection({
  min: 250,
  max: 10_000,
  factor: 2,
  jitter: 0.5,
  sendLimit: 10,
  deadAfter: 60_000,
});
s.on('state', (state: gotalk.State) => state.toUpperCase());
s.on('heartbeat', ({ time, load }) => time.getTime() + load);
s.on('close', (err) => err?.message);
s.on('dead', (err: Error) => err.message);
s.on('done', () => s.state);
s.on('session', ({ resumed, id }: gotalk.SessionEvent) => (resumed ? id?.length : 0));
s.onReconnect = async function (resumed: boolean) {
  if (!resumed) await this.request('join', { room: 'lobby' });
};
gotalk.connection({ onReconnect: (resumed) => resumed || Promise.resolve() }).end();
s.heartbeatInterval = 10_000;
s.sendBufferLimit = 50;
const next: number | null = s.nextReconnectAt;
const queued: number = s.queued;

async function use(): Promise<number> {
  const reply = await s.request<{ greeting: string }>('greet', { name: 'types' });
  const bytes: Uint8Array = await s.bufferRequest('echo', 'héllo');
  const stream = s.streamRequest('stream-echo');
  stream.on('data', (part: Uint8Array) => part.byteLength);
  stream.write('a');
  stream.end();
  s.notify('note', { any: 'value' });
  s.bufferNotify('raw', new Uint8Array([1, 2]));
  s.sendHeartbeat(0.5);
  s.end();
  return reply.greeting.length + bytes.length + (next ?? 0) + queued + (s.address()?.length ?? 0);
}
void use;

gotalk.open((err, sock) => (err ? err.message : sock.state));
const other = new gotalk.Sock(new gotalk.Handlers()).openKeepAlive('/gotalk/', { maxRetries: 2 });
other.end();
const version: string = gotalk.version;
const ready: Promise<void> = gotalk.ready;
void [version, ready, gotalk.protocol.MsgTypeRetryRes];

// A page that serves gotalk.js apart from its server.
gotalk.configure({ wasm: '/static/gotalk_bg.wasm', address: 'wss://example.com/gotalk/' }).connection().end();

// RetryResults until a deadline of the page's choosing.
gotalk.connection({ retryTimeout: 10_000 }).end();

// What gotalk.js 1.2.1 exports besides the API, as its pages use it.
const header: Uint8Array = gotalk.protocol.binary.makeMsg(gotalk.protocol.MsgTypeSingleReq, '0001', 'echo', 0, 5);
const parsed = gotalk.protocol.text.parseMsg('R000100000005');
const textSock = new gotalk.Sock(undefined, gotalk.protocol.text);
const kept: gotalk.Protocol<string> | gotalk.Protocol<Uint8Array> = textSock.protocol;
void [header, parsed.t + parsed.size + (parsed.id?.length ?? 0), gotalk.Buf(4).byteLength, kept];
const fault: gotalk.ProtocolError = gotalk.ErrTimeout;
s.on('close', (err) => {
  if (err?.isGotalkProtocolError && err.code === gotalk.protocol.ErrorTimeout) return fault.message;
  return err?.closeCode === 1009 ? 'too large' : err?.message;
});
gotalk.open('/gotalk/', undefined, gotalk.defaultHandlers, gotalk.protocol.binary).end();

// Sources: async iteration and events.
async function search(): Promise<number> {
  let n = 0;
  const sources: gotalk.Sources = s.sources('search', 'harbour', { frameWindow: 64, sourceWindow: 8 });
  for await (const source of sources) {
    n += source.id + source.header.length + (source.remoteAddress?.length ?? 0);
    for await (const frame of source) n += frame.byteLength;
  }
  const live = s.sources('search', new Uint8Array([0x61]));
  live.on('source', (source: gotalk.Source) => {
    source.on('data', (frame: Uint8Array) => frame.byteLength);
    source.on('end', (err: Error | null) => err?.message);
    source.cancel();
  });
  live.on('end', (err) => err?.message);
  live.cancel();
  return n;
}
void search;
