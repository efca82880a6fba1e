// The gotalk.js API, on top of the Rust client (wasm_bindgen's `Core`).
//
// scripts/build-client.sh wraps this file: before it come `scriptUrl` (where this script was
// loaded from), `defaultWasm()` (where gotalk_bg.wasm is unless the page says otherwise) and
// wasm-bindgen's loader (`glue()` runs it and returns `wasm_bindgen`, which is null until
// then); after it, the classic script
// assigns `globalThis.gotalk` and the module exports it. Everything on the wire happens in
// Rust; this file keeps the shape of the original gotalk.js API: handler tables, events,
// JSON, and the calls a page makes before the wasm has loaded.

const gotalk = {};
gotalk.version = '@VERSION@';

// The Core's entry points take a kind first; these mirror wasm-client/src/core/mod.rs.
const SEND_NOTIFY = 0, SEND_STREAM = 1, SEND_RELEASE = 2;
const ANSWER_RESULT = 0, ANSWER_ERROR = 1, ANSWER_PART = 2, ANSWER_END = 3;
const EVENT_ONLINE = 0, EVENT_VISIBLE = 1, EVENT_HEARTBEAT = 2, EVENT_CANCEL = 3, EVENT_RESUME = 4;
const GET_STATE = 0, GET_NEXT_RECONNECT = 1, GET_ADDRESS = 2, GET_QUEUED = 3;
const SET_HEARTBEAT_MS = 0, SET_SEND_LIMIT = 1, SET_HOLD = 2, SET_EARLY = 3;

// ---------------------------------------------------------------------------------------------
// Errors thrown by the page's own listeners and handlers surface as uncaught errors, as they
// would without gotalk in between, but never break the connection.

function report(err) {
  if (typeof reportError === 'function') {
    reportError(err);
  } else {
    setTimeout(() => { throw err; });
  }
}

function guard(fn) {
  try {
    fn();
  } catch (err) {
    report(err);
  }
}

function warn(...args) {
  if (gotalk.developmentMode && typeof console !== 'undefined') {
    console.warn('[gotalk]', ...args);
  }
}

// ---------------------------------------------------------------------------------------------
// EventEmitter: on, once, addListener, removeListener, removeListeners, removeAllListeners, emit.

function EventEmitter() {}

EventEmitter.prototype.addListener = function (name, fn) {
  if (typeof fn !== 'function') {
    throw new TypeError('listener must be a function');
  }
  if (!this.__events) {
    Object.defineProperty(this, '__events', { value: {}, writable: true });
  }
  (this.__events[name] || (this.__events[name] = [])).push(fn);
  return this;
};
EventEmitter.prototype.on = EventEmitter.prototype.addListener;

EventEmitter.prototype.once = function (name, fn) {
  const once = (arg) => {
    this.removeListener(name, once);
    fn.call(this, arg);
  };
  return this.on(name, once);
};

EventEmitter.prototype.removeListener = function (name, fn) {
  const list = this.__events && this.__events[name];
  if (list) {
    const at = list.indexOf(fn);
    if (at !== -1) list.splice(at, 1);
    if (list.length === 0) delete this.__events[name];
  }
  return this;
};
EventEmitter.prototype.off = EventEmitter.prototype.removeListener;

EventEmitter.prototype.removeListeners = function (name) {
  if (this.__events) delete this.__events[name];
};

EventEmitter.prototype.removeAllListeners = function (name) {
  if (name === undefined) {
    this.__events = {};
  } else {
    this.removeListeners(name);
  }
};

EventEmitter.prototype.listeners = function (name) {
  return (this.__events && this.__events[name] || []).slice();
};

// Each listener is guarded, so one that throws does not keep the others from hearing it.
EventEmitter.prototype.emit = function (name, arg) {
  for (const fn of this.listeners(name)) {
    guard(() => fn.call(this, arg));
  }
};

EventEmitter.mixin = function (obj) {
  for (const key of Object.keys(EventEmitter.prototype)) {
    obj[key] = EventEmitter.prototype[key];
  }
  return obj;
};

gotalk.EventEmitter = EventEmitter;

// ---------------------------------------------------------------------------------------------
// JSON and text. Payloads reach handlers as Uint8Array; JSON handlers get parsed values.

const utf8 = new TextDecoder();

function text(buf) {
  return typeof buf === 'string' ? buf : utf8.decode(buf);
}

// Empty is null (the Go JSON client fails on an empty result; we do not).
function decodeJSON(buf) {
  if (!buf || buf.length === 0) return null;
  return JSON.parse(text(buf));
}

function encodeJSON(value) {
  const json = JSON.stringify(value);
  return json === undefined ? '' : json;
}

// An Error with a name to check, as the platform's own: a DOMException where there is one.
function named(name, message) {
  return typeof DOMException === 'function' ? new DOMException(message, name) : Object.assign(new Error(message), { name });
}

// A call given up on: its AbortSignal's reason, as fetch() rejects with, or a TimeoutError.
function abortReason(signal) {
  return signal.reason !== undefined ? signal.reason : named('AbortError', 'gotalk: the call was aborted');
}

// Runs giveUp(err) at the call's deadline or when its signal aborts, whichever is first;
// options: {timeout (ms; 0 or none: no deadline), signal}. Returns what stops both.
function deadline(options, what, giveUp) {
  const { timeout, signal } = options;
  const onAbort = () => giveUp(abortReason(signal));
  const timer = timeout > 0 &&
    setTimeout(() => giveUp(named('TimeoutError', 'gotalk: no result for ' + what + ' within ' + timeout + ' ms')), timeout);
  if (signal) signal.addEventListener('abort', onAbort);
  return () => {
    if (timer) clearTimeout(timer);
    if (signal) signal.removeEventListener('abort', onAbort);
  };
}

function messageOf(err) {
  if (err && typeof err.message === 'string') return err.message;
  return String(err);
}

// ---------------------------------------------------------------------------------------------
// What gotalk.js 1.2.1 exports besides the API: Buf, the protocol's constants, its header
// helpers and its protocol errors, with the same shapes. The client itself uses none of the
// helpers: everything it sends and reads goes through the Rust codec.

// Buf(Uint8Array) is the array itself, Buf(ArrayBuffer) a view of it, Buf(n) n zero bytes.
gotalk.Buf = function Buf(v) {
  return v instanceof Uint8Array ? v : new Uint8Array(v);
};

const utf8out = new TextEncoder();

function hex(n, digits) {
  return n.toString(16).padStart(digits, '0');
}

// A hex number of `n` digits at `at` in a header's bytes.
function hexAt(b, at, n) {
  const digits = String.fromCharCode(...b.subarray(at, at + n));
  if (!/^[0-9a-f]+$/i.test(digits)) throw new Error('gotalk: invalid number "' + digits + '" in a header');
  return parseInt(digits, 16);
}

// A message header's helpers over Uint8Array (binary) or strings (text), as gotalk.js 1.2.1's
// protocol.binary and protocol.text: makeMsg(t, id, name, wait, size), parseMsg(header) →
// {t, id, name, wait, size} (for a heartbeat, wait is the load and size the time),
// makeHeartbeatMsg(load), makeFixnum(n, digits), versionBuf and parseVersion.
function headers(bin) {
  const out = (s) => (bin ? utf8out.encode(s) : s);
  const bytes = (m) => (typeof m === 'string' ? utf8out.encode(m) : gotalk.Buf(m));
  return {
    makeFixnum: (n, digits) => out(hex(n, digits)),
    versionBuf: out(hex(1, 2)),
    parseVersion: (v) => hexAt(bytes(v), 0, 2),
    makeHeartbeatMsg: (load) => out('h' + hex(load, 4) + hex(Math.round(Date.now() / 1000), 8)),
    makeMsg(t, id, name, wait, size) {
      const rest = (name ? hex(utf8out.encode(name).length, 3) + name : '') +
        (t === 0x65 ? hex(wait, 8) : '') + hex(size, 8);
      id = id && id.length === 4 ? id : '';
      if (!bin) return String.fromCharCode(t) + id + rest;
      const idBytes = typeof id === 'string' ? Array.from(id, (c) => c.charCodeAt(0)) : id;
      const tail = utf8out.encode(rest), b = new Uint8Array(1 + idBytes.length + tail.length);
      b[0] = t;
      b.set(idBytes, 1);
      b.set(tail, 1 + idBytes.length);
      return b;
    },
    parseMsg(m) {
      const b = bytes(m), t = b[0];
      let z = 1, id, name, wait = 0;
      if (t === 0x68) {
        wait = hexAt(b, 1, 4);
        z = 5;
      } else if (t !== 0x6e && t !== 0x66) {
        id = b.subarray(1, 5);
        if (!bin) id = text(id);
        z = 5;
      }
      if (t === 0x72 || t === 0x73 || t === 0x6e) {
        const n = hexAt(b, z, 3);
        name = text(b.subarray(z + 3, z + 3 + n));
        z += 3 + n;
      } else if (t === 0x65) {
        wait = hexAt(b, z, 8);
        z += 8;
      }
      return { t, id, name, wait, size: hexAt(b, z, 8) };
    },
  };
}

gotalk.protocol = Object.freeze({
  Version: 1,
  MsgTypeSingleReq: 0x72,
  MsgTypeStreamReq: 0x73,
  MsgTypeStreamReqPart: 0x70,
  MsgTypeSingleRes: 0x52,
  MsgTypeStreamRes: 0x53,
  MsgTypeErrorRes: 0x45,
  MsgTypeRetryRes: 0x65,
  MsgTypeNotification: 0x6e,
  MsgTypeHeartbeat: 0x68,
  MsgTypeProtocolError: 0x66,
  ErrorAbnormal: 0,
  ErrorUnsupported: 1,
  ErrorInvalidMsg: 2,
  ErrorTimeout: 3,
  HeartbeatMsgMaxLoad: 0xffff,
  binary: headers(true),
  text: headers(false),
});

// A close after a protocol error (ours or the server's `f` message) carries an Error marked
// the same way, with the details of that close in its message.
function protocolError(code, message) {
  return Object.assign(new Error(message), { isGotalkProtocolError: true, code });
}
gotalk.ErrAbnormal = protocolError(0, 'abnormal protocol error');
gotalk.ErrUnsupported = protocolError(1, 'unsupported protocol');
gotalk.ErrInvalidMsg = protocolError(2, 'invalid protocol message');
gotalk.ErrTimeout = protocolError(3, 'timeout');

// ---------------------------------------------------------------------------------------------
// Handlers: what a page offers the server.

function Handlers() {
  if (!(this instanceof Handlers)) return new Handlers();
  this.reqHandlers = {};
  this.reqFallbackHandler = null;
  this.noteHandlers = {};
  this.noteFallbackHandler = null;
  this.streamHandlers = {};
  this.streamFallbackHandler = null;
}

function setHandler(table, fallback, self, key, handler) {
  if (handler !== null && typeof handler !== 'function') {
    throw new TypeError('handler must be a function');
  }
  if (key) {
    self[table][key] = handler;
  } else {
    self[fallback] = handler;
  }
}

// An empty op registers the fallback, called for any op without a handler of its own.
Handlers.prototype.handleBufferRequest = function (op, handler) {
  setHandler('reqHandlers', 'reqFallbackHandler', this, op, handler);
};

Handlers.prototype.handleRequest = function (op, handler) {
  this.handleBufferRequest(op, (buf, result, op) => {
    let value;
    try {
      value = decodeJSON(buf);
    } catch (err) {
      return result.error('invalid JSON in the request: ' + messageOf(err));
    }
    const resultJSON = (value) => result(encodeJSON(value));
    resultJSON.error = result.error;
    handler(value, resultJSON, op);
  });
};

Handlers.prototype.handleBufferNotification = function (name, handler) {
  setHandler('noteHandlers', 'noteFallbackHandler', this, name, handler);
};

Handlers.prototype.handleNotification = function (name, handler) {
  this.handleBufferNotification(name, (buf, name) => {
    let value;
    try {
      value = decodeJSON(buf);
    } catch (err) {
      return warn('ignoring notification "' + name + '" with invalid JSON:', err);
    }
    handler(value, name);
  });
};

// Streaming requests from the server (gotalk.js has none). The handler gets a stream with
// `data` and `end` events for the request's parts, and `write`, `end` and `error` to answer.
Handlers.prototype.handleBufferStreamRequest = function (op, handler) {
  setHandler('streamHandlers', 'streamFallbackHandler', this, op, handler);
};

Handlers.prototype.handleStreamRequest = function (op, handler) {
  this.handleBufferStreamRequest(op, (stream, op) => {
    stream.json = true;
    handler(stream, op);
  });
};

Handlers.prototype.findRequestHandler = function (op) {
  return this.reqHandlers[op] || this.reqFallbackHandler;
};

Handlers.prototype.findNotificationHandler = function (name) {
  return this.noteHandlers[name] || this.noteFallbackHandler;
};

Handlers.prototype.findStreamHandler = function (op) {
  return this.streamHandlers[op] || this.streamFallbackHandler;
};

gotalk.Handlers = Handlers;
gotalk.defaultHandlers = new Handlers();
gotalk.handle = (op, h) => gotalk.defaultHandlers.handleRequest(op, h);
gotalk.handleRequest = gotalk.handle;
gotalk.handleBufferRequest = (op, h) => gotalk.defaultHandlers.handleBufferRequest(op, h);
gotalk.handleNotification = (name, h) => gotalk.defaultHandlers.handleNotification(name, h);
gotalk.handleBufferNotification = (name, h) =>
  gotalk.defaultHandlers.handleBufferNotification(name, h);
gotalk.handleStreamRequest = (op, h) => gotalk.defaultHandlers.handleStreamRequest(op, h);
gotalk.handleBufferStreamRequest = (op, h) =>
  gotalk.defaultHandlers.handleBufferStreamRequest(op, h);

// ---------------------------------------------------------------------------------------------
// Loading the wasm. Calls made before it is ready wait here, in order. It starts loading at
// the first call that needs it, or once the page has had its turn to configure() it: after
// the document is parsed and the task that ran this script is over (a bundle's code runs in
// that task, an inline script after gotalk.js before the document is parsed).

let wasmSource;
let loading = false;
let loaded = false;
let loadError = null;
const waiting = [];
let readySettled;

gotalk.ready = new Promise((resolve, reject) => (readySettled = (err) => (err ? reject(err) : resolve())));

function load() {
  if (loading) return;
  loading = true;
  const source = wasmSource || defaultWasm();
  const url = typeof source === 'string' || source instanceof URL;
  const where = url ? source : 'the wasm given to configure';
  // The download and compile start once the requests the early sockets sent (see Early) are
  // answered, or after EARLY_WAIT ms: they take the CPU those answers need (on one core, all
  // of it). Checked after the task that asked for the wasm, where a page's first requests
  // are made.
  const input = new Promise((resolve) => queueMicrotask(() => afterEarly(resolve))).then(() =>
    url ? fetch(source) : source,
  );
  glue()({ module_or_path: input })
    .catch((err) => {
      loadError = new Error('gotalk: could not load ' + where + ': ' + messageOf(err));
    })
    .then(() => {
      loaded = true;
      for (const fn of waiting.splice(0)) guard(fn);
      readySettled(loadError);
    });
}

// Requests sent on early sockets and not yet answered, and what waits for none to be.
const EARLY_WAIT = 50;
let earlyOut = 0;
const earlyIdle = [];

function afterEarly(fn) {
  if (!earlyOut) return fn();
  earlyIdle.push(fn);
  setTimeout(() => earlyAnswered(0, true), EARLY_WAIT);
}

function earlyAnswered(n, late) {
  earlyOut -= n;
  if (!earlyOut || late) for (const fn of earlyIdle.splice(0)) fn();
}

function whenReady(fn) {
  if (loaded) {
    fn();
  } else {
    waiting.push(fn);
    load();
  }
}

function loadSoon() {
  setTimeout(load);
}

if (typeof document !== 'undefined' && document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', loadSoon);
} else {
  loadSoon();
}

// configure({wasm, address}) for a page that serves or bundles gotalk.js apart from its
// server. `wasm` (a URL, or a Response, bytes or a WebAssembly.Module, or a promise of one)
// only until the wasm starts loading; `address` is the default address from then on.
gotalk.configure = function (options) {
  if (options.wasm !== undefined) {
    if (loading) throw new Error('gotalk: configure({ wasm }) comes too late: the wasm is loading already');
    wasmSource = options.wasm;
  }
  if (options.address !== undefined) gotalk.defaultResponderAddress = options.address;
  return gotalk;
};

// ---------------------------------------------------------------------------------------------
// Addresses. By default, the folder gotalk.js was served from (ws://host/gotalk/ for
// /gotalk/gotalk.js), as the original does; a bundled page sets its own with configure().

function wsUrl(url) {
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  return url;
}

gotalk.defaultResponderAddress = scriptUrl ? wsUrl(new URL('./', scriptUrl)).href : '';

function isLocal(host) {
  return host === 'localhost' || host === '127.0.0.1' || host === '[::1]' || host.endsWith('.local');
}

gotalk.developmentMode = scriptUrl ? isLocal(new URL(scriptUrl).hostname) : false;

function resolveAddress(addr) {
  addr = addr || gotalk.defaultResponderAddress;
  if (!addr) {
    throw new Error('gotalk: no address given, and gotalk.js was not loaded from a gotalk server');
  }
  const base = typeof location !== 'undefined' ? location.href : scriptUrl;
  return wsUrl(new URL(addr, base)).href;
}

// ---------------------------------------------------------------------------------------------
// Sock: one connection, kept alive or not.

// `proto` (gotalk.js 1.2.1's choice of text or binary headers) is kept as `sock.protocol`;
// the client always writes binary headers, which every gotalk server reads.
function Sock(handlers, proto) {
  if (!(this instanceof Sock)) return new Sock(handlers, proto);
  Object.defineProperties(this, {
    handlers: { value: handlers || gotalk.defaultHandlers, enumerable: true },
    protocol: { value: proto || gotalk.protocol.binary, enumerable: true, writable: true },
    _core: { value: null, writable: true },
    // The socket opened while the wasm loads, which sends requests until then (see Early).
    _early: { value: null, writable: true },
    _settings: { value: { heartbeatInterval: 20000, sendBufferLimit: 100, requestTimeout: 0 }, writable: true },
    _streams: { value: new Map() },
    _incoming: { value: new Map() },
    _calls: { value: new Map() },
    _listeners: { value: null, writable: true },
    _opening: { value: false, writable: true },
    _lastToken: { value: 0, writable: true },
    _relayId: { value: null, writable: true },
    // The relay session's token (`$session`), kept for the next connection to resume.
    _session: { value: null, writable: true },
    // A `$resume` is in flight: `$id` waits in _nextId, so the page hears one id.
    _resuming: { value: false, writable: true },
    _nextId: { value: null, writable: true },
    // Runs once the id is known, after a refused `$resume`.
    _onId: { value: null, writable: true },
    // Connections opened since open()/openKeepAlive(), and a number bumped at every open and
    // close: what was started for one connection stops when it is no longer the current one.
    _opens: { value: 0, writable: true },
    _gen: { value: 0, writable: true },
    _keep: { value: false, writable: true },
    // See openKeepAlive.
    onReconnect: { value: null, writable: true, enumerable: true },
  });
}

EventEmitter.mixin(Sock.prototype);
gotalk.Sock = Sock;

// Runs fn(core) now, or once the wasm has loaded. Before then a Sock is "connecting" if an
// open was asked for. When the wasm could not load, fail(err) runs instead, after the call
// (so a listener the page adds next hears it); by default a Sock that was connecting closes
// with the error, and any other call throws it.
Sock.prototype._with = function (fn, fail) {
  // What waits for the Core goes out after what the early socket sent, so nothing may go
  // that way any more: the order calls are made in is the order they go out in.
  if (this._early) this._early.taking = false;
  whenReady(() => {
    if (loadError) return queueMicrotask(() => (fail || this._failed).call(this, loadError));
    if (!this._core) {
      const core = new wasm_bindgen.Core(hostFor(this));
      core.set(SET_HEARTBEAT_MS, this._settings.heartbeatInterval);
      core.set(SET_SEND_LIMIT, this._settings.sendBufferLimit);
      this._core = core;
    }
    fn(this._core);
  });
};

Sock.prototype._failed = function (err) {
  if (!this._opening) throw err;
  this._opening = false;
  this.emit('close', err);
  this.emit('state', 'closed');
};

function setting(name, kind) {
  return {
    get() { return this._settings[name]; },
    set(value) {
      this._settings[name] = value;
      if (this._core) this._core.set(kind, value);
    },
    enumerable: true,
  };
}

Object.defineProperties(Sock.prototype, {
  // Milliseconds between heartbeats (default 20000); 0 sends none. From the next connection.
  heartbeatInterval: setting('heartbeatInterval', SET_HEARTBEAT_MS),
  // Messages that may wait for the connection (default 100, as gotalk.js).
  sendBufferLimit: setting('sendBufferLimit', SET_SEND_LIMIT),
  // The deadline (ms) of a request that gives no `timeout` of its own; 0 (the default): none.
  requestTimeout: {
    get() { return this._settings.requestTimeout; },
    set(value) { this._settings.requestTimeout = value > 0 ? value : 0; },
    enumerable: true,
  },
  // "connecting", "open", "reconnecting", "offline", "refused" or "closed".
  state: {
    get() { return this._core ? this._core.get(GET_STATE) : (this._opening ? 'connecting' : 'closed'); },
    enumerable: true,
  },
  // When the next reconnect attempt is due (milliseconds, as Date.now()), or null.
  nextReconnectAt: {
    get() { return (this._core && this._core.get(GET_NEXT_RECONNECT)) || null; },
    enumerable: true,
  },
  // Messages waiting for the connection.
  queued: {
    get() { return this._core ? this._core.get(GET_QUEUED) : 0; },
    enumerable: true,
  },
});

// open([addr][, cb]): connect once; cb(err) on failure or cb(null, sock) when open.
Sock.prototype.open = function (addr, cb) {
  if (typeof addr === 'function') {
    cb = addr;
    addr = undefined;
  }
  const url = resolveAddress(addr);
  if (cb) {
    const onOpen = () => { this.removeListener('close', onClose); cb(null, this); };
    const onClose = (err) => { this.removeListener('open', onOpen); cb(err || new Error('gotalk: closed')); };
    this.once('open', onOpen);
    this.once('close', onClose);
  }
  this._opening = true;
  this._openCore(url, false, undefined);
  return this;
};

// While the wasm loads (the most of the wait before a first answer), the socket connects
// already: the Core takes it over when it opens, and hears what the socket heard meanwhile.
// The URL carries the query the Core adds (see protocol/src/retry.rs); the Core takes the
// socket only if the two agree, and this closes it otherwise.
Sock.prototype._openCore = function (url, keepalive, options) {
  let ws = null, early = null;
  const heard = [];
  const hear = (event) => heard.push(event);
  if (!loaded && typeof WebSocket === 'function') {
    try {
      const wanted = url + (url.includes('?') ? '&' : '?') + 'gotalk-retry=1';
      ws = new WebSocket(wanted);
      ws.binaryType = 'arraybuffer';
      early = new Early(this, ws, hear, ws.url === wanted);
    } catch (err) {
      ws = null; // The Core reports a malformed address itself.
    }
  }
  this._opens = 0;
  this._keep = keepalive;
  this._with(
    (core) => {
      if (this._early === early) this._early = null;
      let taken = false;
      try {
        // The first connection sends its queue at once; see _opened.
        core.set(SET_HOLD, 0);
        core.open(url, keepalive, options, ws);
        taken = ws && ws.onopen !== early.opened;
      } finally {
        if (ws && !taken) ws.close();
        // Even when open threw (bad options): the early requests are settled either way.
        if (early) early.handOver(core, taken);
      }
      if (keepalive) this._watch(core);
      for (const event of heard.splice(0)) ws['on' + event.type](event);
    },
    (err) => {
      if (ws) ws.close();
      if (early) early.fail(err);
      // The page may have had answers on the early socket, and called end() since: it still
      // hears the socket close, with why.
      if (early && early.sent) this._opening = true;
      this._failed(err);
    },
  );
  this._early = early;
};

// Requests made while the wasm loads go out on the early socket, and their answers are read
// here: compiling and starting the wasm takes longer than a round trip, and a page's first
// answer need not wait for it. Only the plain case is done here: a request with a string or
// bytes, answered by a SingleResult in a message of its own (as our server sends frames to
// this client), after the version. The first message that is anything else ends the reading
// here, and it and all that follow wait for the Core, which then takes over the socket and
// the requests not yet answered. What the Core needs to send (a notification, a stream)
// ends the sending here, so what the page sends keeps its order.
function Early(sock, ws, hear, taking) {
  Object.assign(this, { sock, ws, taking, reading: true, version: false, sent: false, ids: 0 });
  // Unanswered requests by id: [op, payload, token]; messages waiting for the socket to open.
  this.calls = new Map();
  this.queue = [];
  this.opened = (event) => {
    hear(event);
    if (this.queue.length) this.send(this.queue.splice(0));
  };
  ws.onopen = this.opened;
  ws.onmessage = (event) => this.read(event.data) || hear(event);
  ws.onclose = hear;
}

const VERSION_BYTES = utf8out.encode('01');

// Sends `messages` as one WebSocket message (servers read messages as one byte stream), after
// the version if it has not gone out yet.
Early.prototype.send = function (messages) {
  if (!this.sent) messages.unshift(VERSION_BYTES);
  this.sent = true;
  const all = new Uint8Array(messages.reduce((n, m) => n + m.length, 0));
  messages.reduce((at, m) => (all.set(m, at), at + m.length), 0);
  this.ws.send(all);
};

// Sends the request, or queues it until the socket opens; false when it must wait for the Core.
Early.prototype.request = function (op, buf, token) {
  const payload = typeof buf === 'string' ? utf8out.encode(buf) : buf instanceof Uint8Array ? buf :
    buf instanceof ArrayBuffer ? new Uint8Array(buf) : buf == null ? new Uint8Array(0) : null;
  const name = utf8out.encode(op), state = this.ws.readyState;
  if (!this.taking || !payload || name.length > 0xfff || state > 1 ||
      (state === 0 && this.queue.length >= this.sock._settings.sendBufferLimit)) {
    this.taking = false;
    return false;
  }
  // 'r', the id (the Core's numbering: a u32's bytes, little-endian), the name, the payload.
  const id = this.ids++;
  const head = utf8out.encode(hex(name.length, 3) + op + hex(payload.length, 8));
  const m = new Uint8Array(5 + head.length + payload.length);
  m.set([0x72, id & 255, (id >> 8) & 255, (id >> 16) & 255, id >>> 24]);
  m.set(head, 5);
  m.set(payload, 5 + head.length);
  this.calls.set(id, [op, buf, token]);
  earlyOut++;
  if (state === 1) this.send([m]);
  else this.queue.push(m);
  return true;
};

// Settles the request a SingleResult answers; false for what the Core is to read. This keeps
// reading only while every message is one whole frame (the version first), so that what it
// takes out leaves the Core a stream of whole frames.
Early.prototype.read = function (data) {
  const b = this.reading && data instanceof ArrayBuffer ? new Uint8Array(data) : null;
  if (b && !this.version) {
    this.version = this.reading = b.length === 2 && b[0] === 0x30 && b[1] === 0x31;
    return false;
  }
  if (!b || frameLength(b) !== b.length) return (this.reading = false);
  const id = (b[1] | (b[2] << 8) | (b[3] << 16) | (b[4] << 24)) >>> 0;
  const call = b[0] === 0x52 && this.calls.get(id);
  if (!call) return false;
  this.calls.delete(id);
  settle(this.sock, '', call[2], 0, b.slice(13));
  earlyAnswered(1);
  return true;
};

// The length of the frame `b` begins with, from its header; NaN for what is no frame.
function frameLength(b) {
  const t = String.fromCharCode(b[0]);
  if (t === 'h' || t === 'f') return t === 'h' ? 13 : 9;
  if (!'rspRSEen'.includes(t)) return NaN;
  try {
    let z = t === 'n' ? 1 : 5;
    if ('rsn'.includes(t)) z += 3 + hexAt(b, z, 3);
    if (t === 'e') z += 8;
    return z + 8 + hexAt(b, z, 8);
  } catch (err) {
    return NaN;
  }
}

// The Core is ready. The requests still unanswered are its own if it took the socket they
// went out on; those that never went out are sent by it; those on a socket it did not take
// are lost with it.
Early.prototype.handOver = function (core, taken) {
  this.taking = this.reading = false;
  if (taken && this.sent) core.set(SET_EARLY, this.ids);
  for (const [id, [op, buf, token]] of this.calls) {
    if (!this.sock._calls.has(token)) continue;
    try {
      if (!this.sent) core.request(op, buf, token);
      else if (taken) core.adopt(id, op, buf, token);
      else throw new Error('gotalk: the socket is closed');
    } catch (err) {
      settle(this.sock, '', token, 0, err);
    }
  }
  earlyAnswered(this.calls.size);
  this.calls.clear();
};

// The wasm could not load: the requests fail with its error.
Early.prototype.fail = function (err) {
  for (const [, [, , token]] of this.calls) settle(this.sock, '', token, 0, err);
  earlyAnswered(this.calls.size);
  this.calls.clear();
};

// openKeepAlive([addr][, options]): stay connected until end(), reconnecting with jittered
// exponential backoff. options: {min, max, factor, jitter} (ms; defaults 500, 5000, 2, 0.5),
// retryTimeout (ms after a request is made that its RetryResults are honoured, default
// 30000), maxRetries (a bound on them too; none by default), sendLimit, maxPayload, and
// deadAfter (ms of silence after which the server counts as dead and the connection is given
// up: event `dead`, then `close`; default twice the server's heartbeat gap + 5 s; 0: never),
// requestTimeout (sets `sock.requestTimeout`),
// and refusedRetry (ms to wait after the server refused the page with 4401 or 4403; default
// 0: stop, state `refused`, until resume()). A refusal is the event `refused` ({code,
// reason}), then `close`. onReconnect sets `sock.onReconnect` (see _opened).
Sock.prototype.openKeepAlive = function (addr, options) {
  if (addr && typeof addr === 'object') {
    options = addr;
    addr = undefined;
  }
  if (options && options.requestTimeout !== undefined) this.requestTimeout = options.requestTimeout;
  if (options && options.onReconnect !== undefined) this.onReconnect = options.onReconnect;
  const url = resolveAddress(addr);
  this._opening = true;
  this._openCore(url, true, options);
  return this;
};

// Tell the keepalive when the browser comes online or goes offline, and when the tab is
// visible again.
Sock.prototype._watch = function (core) {
  if (this._listeners || typeof addEventListener !== 'function') return;
  const network = (e) => core.event(EVENT_ONLINE, e.type === 'online' ? 1 : 0);
  const visible = () => {
    if (typeof document === 'undefined' || document.visibilityState === 'visible') {
      core.event(EVENT_VISIBLE, 0);
    }
  };
  addEventListener('online', network);
  addEventListener('offline', network);
  if (typeof document !== 'undefined') document.addEventListener('visibilitychange', visible);
  this._listeners = { network, visible };
};

Sock.prototype._unwatch = function () {
  const l = this._listeners;
  if (!l) return;
  removeEventListener('online', l.network);
  removeEventListener('offline', l.network);
  if (typeof document !== 'undefined') document.removeEventListener('visibilitychange', l.visible);
  this._listeners = null;
};

// Closes once the results still outstanding are in; a second call closes at once.
Sock.prototype.end = function () {
  this._opening = false;
  // A peer that says goodbye does not come back as itself.
  this._session = null;
  this._unwatch();
  this._with((core) => core.end(), () => {});
};

// A keepalive that was refused (or waits to reconnect) tries again now: after a login.
Sock.prototype.resume = function () {
  this._with((core) => core.event(EVENT_RESUME, 0), () => {});
};

Sock.prototype.address = function () {
  return (this._core && this._core.get(GET_ADDRESS)) || null;
};

// A request's promise, settled by the Core through `settle` (below) by its token, or here
// at its deadline or when its signal aborts. The Core is then told to drop the call, so a
// result that comes later is dropped; the server is not told (the protocol cannot say it).
Sock.prototype._call = function (op, buf, options) {
  options = callOptions(this, options);
  return new Promise((resolve, reject) => {
    if (options.signal && options.signal.aborted) return reject(abortReason(options.signal));
    const token = ++this._lastToken;
    let sent = false;
    const stop = deadline(options, '"' + op + '"', (err) => {
      if (!this._calls.delete(token)) return;
      stop();
      if (sent && this._core) this._core.event(EVENT_CANCEL, token);
      reject(err);
    });
    const settled = (fn) => (value) => {
      stop();
      fn(value);
    };
    this._calls.set(token, [settled(resolve), settled(reject)]);
    const send = (core) => {
      if (!this._calls.has(token)) return;
      try {
        core.request(op, buf, token);
        sent = true;
      } catch (err) {
        this._calls.delete(token);
        settled(reject)(err);
      }
    };
    if (this._core) send(this._core);
    else if (this._early && this._early.request(op, buf, token)) sent = true;
    else this._with(send, (err) => this._calls.delete(token) && settled(reject)(err));
  });
};

// {timeout, signal} with the sock's default timeout where none is given.
function callOptions(sock, options) {
  const o = options && typeof options === 'object' ? options : {};
  return { timeout: o.timeout !== undefined ? o.timeout : sock._settings.requestTimeout, signal: o.signal };
}

// (op, payload[, options][, cb]), as gotalk.js's (op, payload[, cb]) with options between.
function callArgs(options, cb) {
  return typeof options === 'function' ? [undefined, options] : [options, cb];
}

Sock.prototype.bufferRequest = function (op, buf, options, cb) {
  [options, cb] = callArgs(options, cb);
  return callback(this._call(op, buf, options), cb);
};

Sock.prototype.request = function (op, value, options, cb) {
  if (typeof value === 'function' && options === undefined) {
    cb = value;
    value = undefined;
  }
  [options, cb] = callArgs(options, cb);
  const p = this._call(op, encodeJSON(value), options).then(decodeJSON);
  return callback(p, cb);
};

// Deprecated names from gotalk.js.
Sock.prototype.requestp = function (op, value) { return this.request(op, value); };
Sock.prototype.bufferRequestp = function (op, buf) { return this.bufferRequest(op, buf); };

function callback(promise, cb) {
  if (typeof cb === 'function') {
    promise.then((value) => cb(null, value), (err) => cb(err, null));
  }
  return promise;
}

// Throws at once when the send queue is full or the socket is closed (once loaded).
Sock.prototype.bufferNotify = function (name, buf) {
  if (this._core) return this._core.send(SEND_NOTIFY, 0, name, buf);
  this._with((core) => core.send(SEND_NOTIFY, 0, name, buf));
};

Sock.prototype.notify = function (name, value) {
  return this.bufferNotify(name, encodeJSON(value));
};

// load in [0, 1].
Sock.prototype.sendHeartbeat = function (load) {
  this._with((core) => core.event(EVENT_HEARTBEAT, load || 0));
};

// A stream request: nothing is sent until the first write. write(buf) sends a part (an empty
// one, or end(), finishes the request); `data` events carry the result's parts and `end`
// (null, or the Error) its end. Options {timeout, signal} bound the whole exchange: at the
// deadline or the abort, the request is ended and `end` carries the TimeoutError or the
// signal's reason. No deadline unless given here: a stream may last as long as its socket.
function StreamRequest(sock, op, options) {
  Object.defineProperties(this, {
    op: { value: op, enumerable: true },
    id: { value: ++sock._lastToken, enumerable: true },
    _sock: { value: sock },
    _ended: { value: false, writable: true },
    _stop: { value: null, writable: true },
  });
  const o = options || {};
  if (o.timeout > 0 || o.signal) {
    // Ends the request stream, as end() would, and stops listening to its result.
    const giveUp = (err) => {
      this._stop();
      if (!this._ended && sock._streams.get(this.id) === this && sock._core) {
        guard(() => sock._core.send(SEND_STREAM, this.id, this.op, null));
      }
      this._ended = true;
      sock._streams.delete(this.id);
      this.emit('end', err);
    };
    this._stop = deadline(o, 'stream "' + op + '"', giveUp);
    if (o.signal && o.signal.aborted) queueMicrotask(() => !this._ended && giveUp(abortReason(o.signal)));
    this.once('end', () => this._stop());
  }
}
EventEmitter.mixin(StreamRequest.prototype);
gotalk.StreamRequest = StreamRequest;

StreamRequest.prototype.write = function (buf) {
  if (this._ended) return;
  if (buf === null || buf === undefined || buf.length === 0 || buf.byteLength === 0) {
    this._ended = true;
    buf = null;
  }
  const streams = this._sock._streams;
  streams.set(this.id, this);
  this._sock._with(
    // Not once the stream was given up on while the wasm loaded.
    (core) => streams.get(this.id) === this && core.send(SEND_STREAM, this.id, this.op, buf),
    (err) => {
      if (streams.delete(this.id)) {
        this._ended = true;
        this.emit('end', err);
      }
    },
  );
};

StreamRequest.prototype.end = function () {
  this.write(null);
};

Sock.prototype.streamRequest = function (op, options) {
  return new StreamRequest(this, op, options);
};

// ---------------------------------------------------------------------------------------------
// Sources: one request answered by many streams, each with a header and its own frames (see
// docs/sources.md). Rust reads the result parts (source_part); the control parts are short
// ASCII. Sources and each Source are async iterators (of sources, of frames) and event
// emitters ('source' / 'data', then 'end' with null or the Error): listeners take what arrives
// while they are attached, the iterator the rest. Credit goes back as items are taken: `grant`
// is called with the count each time half the window has been taken.

function hex8(n) {
  return n.toString(16).padStart(8, '0');
}

// Items for an iterator or for listeners of `event`, then an end (null or an Error).
function Feed(owner, event, window, grant) {
  let count = 0;
  Object.assign(this, { owner, event, items: [], waiters: [], ended: undefined });
  this.take = () => {
    if (++count >= Math.max(1, window >> 1)) {
      grant(count);
      count = 0;
    }
  };
}

Feed.prototype.push = function (item) {
  if (this.ended !== undefined) return;
  const w = this.waiters.shift();
  if (!w && !this.owner.listeners(this.event).length) return this.items.push(item);
  this.take();
  w ? w[0]({ value: item }) : this.owner.emit(this.event, item);
};

Feed.prototype.end = function (err) {
  if (this.ended !== undefined) return;
  this.ended = err || null;
  for (const w of this.waiters.splice(0)) err ? w[1](err) : w[0]({ done: true });
  this.owner.emit('end', this.ended);
};

Feed.prototype.next = function () {
  if (this.items.length) {
    this.take();
    return Promise.resolve({ value: this.items.shift() });
  }
  if (this.ended !== undefined) return this.ended ? Promise.reject(this.ended) : Promise.resolve({ done: true });
  return new Promise((resolve, reject) => this.waiters.push([resolve, reject]));
};

function feedOf(proto) {
  EventEmitter.mixin(proto);
  proto[Symbol.asyncIterator] = function () {
    return { next: () => this._feed.next() };
  };
}

function Sources(sock, op, body, options) {
  options = options || {};
  const frames = Math.max(1, options.frameWindow || 1024), sources = Math.max(1, options.sourceWindow || 128);
  const stream = (this._stream = sock.streamRequest(op));
  Object.assign(this, { op, _sock: sock, _open: new Map(), _frames: frames });
  this._feed = new Feed(this, 'source', sources, (n) => stream.write('s' + hex8(n)));
  stream.on('data', (part) => this._part(part));
  stream.on('end', (err) => this._end(err));
  const enc = new TextEncoder(), prefix = enc.encode('o00' + hex8(frames) + hex8(sources));
  body = typeof body === 'string' ? enc.encode(body) : new Uint8Array(body || 0);
  const first = new Uint8Array(prefix.length + body.length);
  first.set(prefix);
  first.set(body, prefix.length);
  stream.write(first);
}
feedOf(Sources.prototype);

// Cancels every source still open and every one not yet announced.
Sources.prototype.cancel = function () { this._stream.write('X'); };

Sources.prototype._part = function (part) {
  const info = wasm_bindgen.source_part(part);
  const tag = Math.floor(info / 4294967296), id = info % 4294967296, body = part.slice(9);
  const source = this._open.get(id);
  if (info < 0 || (tag === 0x61) === !!source) {
    // The server broke the mapping: stop it, and end everything with the error.
    this.cancel();
    this._stream.end();
    return this._end(new Error('gotalk: malformed sources part'));
  }
  if (tag === 0x61) {
    const s = new Source(this, id, body);
    this._open.set(id, s);
    this._feed.push(s);
  } else if (tag === 0x66) {
    source._feed.push(body);
  } else {
    this._open.delete(id);
    source._feed.end(tag === 0x78 ? new Error(text(body)) : null);
  }
};

Sources.prototype._end = function (err) {
  for (const s of this._open.values()) s._feed.end(err || new Error('gotalk: the response ended first'));
  this._open.clear();
  this._feed.end(err);
};

function Source(sources, id, header) {
  const stream = sources._stream;
  Object.assign(this, { id, header, remoteAddress: sources._sock.address(), _stream: stream });
  this._feed = new Feed(this, 'data', sources._frames, (n) => stream.write('f' + hex8(id) + hex8(n)));
}
feedOf(Source.prototype);

// Stops the source: the server drops its producer and ends it aborted ('cancelled').
Source.prototype.cancel = function () { this._stream.write('x' + hex8(this.id)); };

// Sends `body` to the source service `op`; options: frameWindow (1024), sourceWindow (128).
Sock.prototype.sources = function (op, body, options) {
  return new Sources(this, op, body, options);
};

// A streaming request from the server, as its handler sees it.
function IncomingStream(core, op, conn, id) {
  Object.defineProperties(this, {
    op: { value: op, enumerable: true },
    json: { value: false, writable: true },
    _core: { value: core },
    _conn: { value: conn },
    _id: { value: id },
    _done: { value: false, writable: true },
  });
}
EventEmitter.mixin(IncomingStream.prototype);

IncomingStream.prototype.write = function (value) {
  if (!this._done) {
    this._core.answer(ANSWER_PART, this._conn, this._id, this.json ? encodeJSON(value) : value);
  }
};

IncomingStream.prototype.end = function () {
  if (!this._done) {
    this._done = true;
    this._core.answer(ANSWER_END, this._conn, this._id, null);
  }
};

IncomingStream.prototype.error = function (err) {
  if (!this._done) {
    this._done = true;
    this._core.answer(ANSWER_ERROR, this._conn, this._id, messageOf(err));
  }
};

// What the Rust Core calls (see ON_ in wasm-client/src/core/mod.rs); each entry point keeps
// the page's faults away from the client.
function hostFor(sock) {
  const on = [request, stream, part, notification, streamData, streamEnd, settle];
  return {
    emit(name, arg) {
      if (name === 'open') sock._opened();
      if (name === 'close') {
        sock._gen++;
        sock._resuming = false;
        sock._onId = null;
        // A refusal (4000 + an HTTP status, see the gateway's Refusal) is told first as such.
        const code = arg && arg.closeCode;
        if (code >= 4400 && code <= 4999) sock.emit('refused', { code, reason: arg.closeReason });
        sock._opening = false;
        // Ids belong to connections: a reconnect gets a new one.
        sock._relayId = null;
      }
      sock.emit(name, arg);
    },
    on(kind, name, a, b, payload) {
      on[kind](sock, name, a, b, payload);
    },
    online() {
      return typeof navigator === 'undefined' || navigator.onLine !== false;
    },
  };
}

function request(sock, op, conn, id, payload) {
  const core = sock._core;
  let done = false;
  const answer = (kind, value) => {
    if (done) return;
    done = true;
    core.answer(kind, conn, id, value);
  };
  const result = (value) => answer(ANSWER_RESULT, value);
  result.error = (err) => answer(ANSWER_ERROR, messageOf(err));
  const handler = sock.handlers.findRequestHandler(op);
  if (typeof handler !== 'function') {
    return result.error('no such operation "' + op + '"');
  }
  try {
    handler(payload, result, op);
  } catch (err) {
    result.error('internal error');
    report(err);
  }
}

function stream(sock, op, conn, id) {
  const s = new IncomingStream(sock._core, op, conn, id);
  const handler = sock.handlers.findStreamHandler(op);
  if (typeof handler !== 'function') {
    return s.error('no such operation "' + op + '"');
  }
  sock._incoming.set(conn + ':' + id, s);
  try {
    handler(s, op);
  } catch (err) {
    s.error('internal error');
    report(err);
  }
}

// A Uint8Array, null at the end, or an Error when the connection was lost first.
function part(sock, _name, conn, id, payload) {
  const key = conn + ':' + id;
  const s = sock._incoming.get(key);
  if (!s) return;
  if (payload instanceof Uint8Array) {
    let value = payload;
    if (s.json) {
      try {
        value = decodeJSON(payload);
      } catch (err) {
        return s.error('invalid JSON in the stream: ' + messageOf(err));
      }
    }
    return s.emit('data', value);
  }
  sock._incoming.delete(key);
  s.emit('end', payload);
}

function notification(sock, name, _a, _b, payload) {
  if (RELAY_NOTES[name]) return guard(() => RELAY_NOTES[name](sock, decodeJSON(payload)));
  const handler = sock.handlers.findNotificationHandler(name);
  if (typeof handler === 'function') guard(() => handler(payload, name));
  sock.emit('notification', { name, data: payload });
}

function streamData(sock, _name, token, _b, payload) {
  const s = sock._streams.get(token);
  if (s) s.emit('data', payload);
}

// A request's result (a Uint8Array) or its failure (an Error).
function settle(sock, _name, token, _b, value) {
  const call = sock._calls.get(token);
  sock._calls.delete(token);
  if (call) call[value instanceof Uint8Array ? 0 : 1](value);
}

function streamEnd(sock, _name, token, _b, err) {
  const s = sock._streams.get(token);
  if (!s) return;
  sock._streams.delete(token);
  s._ended = true;
  s.emit('end', err);
}

// ---------------------------------------------------------------------------------------------
// The relay (a gateway with it on): peers message each other by id and topic. The envelope
// is JSON (see protocol/src/relay.rs); the server validates it and adds the sender's id.

// Resolves once the message is queued for the recipient; rejects with the fault (`unknown
// peer`, `bad header: …`, `too large: …`). A full queue is retried like any RetryResult.
Sock.prototype.relay = function (to, topic, body) {
  return this.request('$relay', { to, topic, body });
};

// Fire and forget: a failure comes back as the `undelivered` event.
Sock.prototype.relayNotify = function (to, topic, body) {
  return this.notify('$relay', { to, topic, body });
};

// This connection's id, from the `$id` notification the server sends first; null until then
// and after a close.
Object.defineProperty(Sock.prototype, 'id', {
  get() { return this._relayId; },
  enumerable: true,
});

// Without a prototype, so a notification named `constructor` is not taken for one of these.
const RELAY_NOTES = Object.assign(Object.create(null), {
  $id(sock, id) {
    if (sock._resuming) sock._nextId = id;
    else sock._setId(id);
  },
  $session(sock, token) { sock._session = token; },
  $relay(sock, message) { sock.emit('relay', message); },
  $undelivered(sock, notice) { sock.emit('undelivered', notice); },
});

Sock.prototype._setId = function (id) {
  if (id !== this._relayId) {
    this._relayId = id;
    this.emit('id', id);
  }
  const then = this._onId;
  this._onId = null;
  if (then) then();
};

// Resumable sessions. A keepalive's connections after the first open with the send queue held
// (SET_HOLD). First of all, before anything queued or anything an `open` listener sends,
// `$resume` asks for the session of the last connection by its token: the same id, groups
// and the messages held meanwhile. Then the page hears `session` ({resumed, id}) and its
// `onReconnect(resumed)` hook runs; once what it returns resolves, the queue goes out. What
// the hook (or anyone) sends meanwhile goes out at once, ahead of the queue: a rejoin or a
// login comes before the messages that need it. A hook that throws or rejects fails the
// queue with its error (requests reject with it), rather than send it in a state the hook
// could not restore; the error is also reported as uncaught.
Sock.prototype._opened = function () {
  const gen = ++this._gen, core = this._core;
  if (this._opens++ === 0) {
    if (this._keep) core.set(SET_HOLD, 1);
    return;
  }
  const token = this._session;
  // A server that no longer keeps sessions sends no new token: do not ask it again.
  this._session = null;
  if (!token) return this._rejoin(gen, false);
  this._resuming = true;
  this._nextId = null;
  const settled = (resumed, id, refused) => {
    if (gen !== this._gen) return;
    this._resuming = false;
    if (id) this._setId(id);
    // Refused, the connection keeps the id it was given, which the server tells next.
    if (!this._relayId && refused) this._onId = () => this._rejoin(gen, false);
    else this._rejoin(gen, resumed);
  };
  this._call('$resume', encodeJSON(token), { timeout: 0 }).then(
    (id) => settled(true, decodeJSON(id)),
    (err) => settled(false, this._nextId, messageOf(err) === 'resume refused'),
  );
};

Sock.prototype._rejoin = function (gen, resumed) {
  const release = (err) => gen === this._gen && this._core.send(SEND_RELEASE, 0, '', err);
  this.emit('session', { resumed, id: this._relayId });
  const hook = this.onReconnect;
  if (typeof hook !== 'function') return release(null);
  new Promise((resolve) => resolve(hook.call(this, resumed))).then(
    () => release(null),
    (err) => {
      report(err);
      release(err == null ? new Error('gotalk: the onReconnect hook failed') : err);
    },
  );
};

// ---------------------------------------------------------------------------------------------
// Module-level shortcuts, as in gotalk.js.

// A Sock kept connected (reconnecting as needed) until end().
// gotalk.js 1.2.1 took a protocol where the options go.
gotalk.connection = function (addr, handlers, options) {
  if (addr && typeof addr === 'object') {
    options = addr;
    addr = undefined;
  }
  const p = gotalk.protocol;
  const proto = options === p.text || options === p.binary ? options : undefined;
  return new Sock(handlers, proto).openKeepAlive(addr, proto ? undefined : options);
};

gotalk.open = function (addr, cb, handlers, proto) {
  return new Sock(handlers, proto).open(addr, cb);
};
