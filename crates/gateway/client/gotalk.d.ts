// TypeScript declarations for gotalk.js, the gotalk browser client as a classic script.
//
//   <script src="/gotalk/gotalk.js"></script>       → the global `gotalk`
//
// gotalk.d.mts declares the ES module (gotalk.mjs): this object as its default export, and
// its functions as named exports.

export default gotalk;
export as namespace gotalk;

declare namespace gotalk {
  /** This library's version. */
  const version: string;
  /**
   * Resolves once the wasm has loaded, or rejects with the Error saying why it could not;
   * calls made before then wait for it. It starts loading at the first call that needs it, or
   * once the document is parsed and the task that ran gotalk.js is over.
   */
  const ready: Promise<void>;
  /**
   * The address connections use when given none: by default the folder gotalk.js was served
   * from, as a ws:// or wss:// URL. `configure({ address })` sets it too.
   */
  let defaultResponderAddress: string;
  /** When true (pages on localhost), gotalk logs warnings about ignored input. */
  let developmentMode: boolean;

  /**
   * Where the client comes from and connects to, for a page that bundles gotalk or serves it
   * apart from its gotalk server. Returns `gotalk`.
   */
  function configure(options: Configuration): typeof gotalk;

  interface Configuration {
    /**
     * gotalk_bg.wasm: its URL, or the module itself or its bytes (or a promise of them). By
     * default the gotalk_bg.wasm beside gotalk.js (or beside gotalk.mjs, which bundlers see
     * and emit). Only before the wasm starts loading: after that, configure throws.
     */
    wasm?: string | URL | Request | Response | BufferSource | WebAssembly.Module | Promise<Response | BufferSource | WebAssembly.Module>;
    /** The default address from now on (`defaultResponderAddress`): a ws://, wss://, http(s):// or relative URL. */
    address?: string;
  }

  /** The handlers used by `connection()`, `open()` and the module-level `handle*` functions. */
  const defaultHandlers: Handlers;

  /**
   * A Sock that stays connected, reconnecting as needed, until `end()`. In place of the
   * options, a `protocol.text` or `protocol.binary` (gotalk.js 1.2.1's third argument) becomes
   * `sock.protocol`.
   */
  function connection(addr?: string, handlers?: Handlers, options?: KeepAliveOptions | Protocol<any>): Sock;
  function connection(options: KeepAliveOptions): Sock;

  /** A Sock connected once; `cb` hears the outcome. */
  function open(
    addr?: string,
    cb?: (err: Error | null, s: Sock) => void,
    handlers?: Handlers,
    proto?: Protocol<any>,
  ): Sock;
  function open(cb: (err: Error | null, s: Sock) => void): Sock;

  /** `Buf(n)`: n zero bytes; `Buf(buffer)`: a view of an ArrayBuffer; a Uint8Array as is. */
  function Buf(v: number | ArrayBuffer | Uint8Array): Uint8Array;

  /**
   * An Error from a protocol error, as gotalk.js 1.2.1 marks it: `code` is one of
   * `protocol.ErrorAbnormal` (0), `ErrorUnsupported` (1), `ErrorInvalidMsg` (2) or
   * `ErrorTimeout` (3), or another code a server sent.
   */
  interface ProtocolError extends Error {
    readonly isGotalkProtocolError: true;
    readonly code: number;
  }

  /**
   * An Error from the peer's ErrorResult: `message` is its text and, when the text begins
   * with an error code (`[not_found] no such room`), `code` is that code (`"not_found"`).
   * Servers built with gotalk for Rust send a code with each error a handler chose to show,
   * and `internal` with a reference for any other.
   */
  interface RemoteError extends Error {
    readonly code?: string;
  }

  /**
   * Why a connection closed, as the `close` event reports it. After a protocol error (the
   * server's `f` message, or a fault this client found) it is a ProtocolError; when the
   * server closed the WebSocket, `closeCode` is its close code (1009: a message of ours was
   * over the server's size limit) and the message ends with the server's reason.
   */
  interface CloseError extends Error {
    readonly isGotalkProtocolError?: true;
    readonly code?: number;
    readonly closeCode?: number;
    /** The reason of the server's close frame, when it gave one. */
    readonly closeReason?: string;
  }

  /** Marked as the errors of a close after protocol error 0, 1, 2 or 3 are; compare `code`. */
  const ErrAbnormal: ProtocolError;
  const ErrUnsupported: ProtocolError;
  const ErrInvalidMsg: ProtocolError;
  const ErrTimeout: ProtocolError;

  /** JSON request handler the server can call. An empty `op` registers the fallback. */
  function handle<In = any, Out = any>(op: string, h: RequestHandler<In, Out>): void;
  function handleRequest<In = any, Out = any>(op: string, h: RequestHandler<In, Out>): void;
  function handleBufferRequest(op: string, h: RequestHandler<Uint8Array, Payload>): void;
  function handleNotification<In = any>(name: string, h: (value: In, name: string) => void): void;
  function handleBufferNotification(name: string, h: (data: Uint8Array, name: string) => void): void;
  /** A streaming request from the server, with JSON parts. */
  function handleStreamRequest<In = any, Out = any>(op: string, h: StreamHandler<In, Out>): void;
  function handleBufferStreamRequest(op: string, h: StreamHandler<Uint8Array, Payload>): void;

  /** What a page may send: text goes as UTF-8. */
  type Payload = string | Uint8Array | ArrayBuffer | null | undefined;

  type RequestHandler<In, Out> = (value: In, result: Resolver<Out>, op: string) => void;
  type StreamHandler<In, Out> = (stream: IncomingStream<In, Out>, op: string) => void;

  interface Resolver<T> {
    (value: T): void;
    /** Answers with an ErrorResult carrying the message. */
    error(err: Error | string): void;
  }

  /** Keepalive settings; every field is optional. */
  interface KeepAliveOptions {
    /** The first reconnect delay, ms. Default 500. */
    min?: number;
    /** The largest reconnect delay, ms. Default 5000. */
    max?: number;
    /** How much each failed attempt multiplies the delay by. Default 2. */
    factor?: number;
    /** The randomised fraction of each delay, 0 to 1. Default 0.5. */
    jitter?: number;
    /**
     * Milliseconds from a request being made to its deadline: until then each RetryResult's
     * wait is honoured and the request sent again; a RetryResult whose wait would end past
     * it fails the request. Default 30000.
     */
    retryTimeout?: number;
    /** At most this many RetryResults honoured per request as well. Default: no bound. */
    maxRetries?: number;
    /** Sets `Sock.requestTimeout`: the deadline (ms) of requests that give none. */
    requestTimeout?: number;
    /** Messages that may wait for the connection. Default 100. */
    sendLimit?: number;
    /** The largest payload accepted from the server, bytes. Default 16 MiB. */
    maxPayload?: number;
    /**
     * Milliseconds without anything from the server after which it counts as dead: the
     * connection is given up (`dead`, then `close`) and the keepalive reconnects. Default:
     * twice the gap between the server's heartbeats plus 5 s, once two have arrived (45 s
     * at the server's default of 20 s). 0 never gives up.
     */
    deadAfter?: number;
    /**
     * Milliseconds to wait before trying again after the server refused the connection for
     * who the page is (close code 4401 or 4403). Default 0: stop (state `refused`) until
     * `resume()`, after the user has logged in; a refused page would only be refused again.
     */
    refusedRetry?: number;
    /** Sets `Sock.onReconnect`: what runs after each reconnect before the queue is sent. */
    onReconnect?: ReconnectHook | null;
  }

  /**
   * Runs after each reconnect of a keepalive, told whether the relay session was resumed
   * (same id, same groups, messages held meanwhile delivered next). Messages queued while
   * offline wait until the promise it returns resolves; what it sends itself (a rejoin, a
   * login) goes out at once, ahead of them. If it throws or rejects, the queued messages fail
   * with its error (queued requests reject with it) and the error is reported as uncaught.
   */
  type ReconnectHook = (this: Sock, resumed: boolean) => unknown;

  /** The outcome of a reconnect: whether the relay session was resumed, and the id now. */
  interface SessionEvent {
    resumed: boolean;
    /** The connection's relay id: the old one when resumed; null when not known yet (`id` follows). */
    id: string | null;
  }

  type State = 'connecting' | 'open' | 'reconnecting' | 'offline' | 'refused' | 'closed';

  /**
   * The server refused the connection (its `on_connect` hook): `code` is 4000 + an HTTP
   * status (4401 unauthorized, 4403 forbidden), `reason` what the server said.
   */
  interface Refused {
    code: number;
    reason: string;
  }

  interface SockEventMap {
    open: null;
    /** null for a normal close, else why (the Error from `ready` when the wasm could not load). */
    close: CloseError | null;
    heartbeat: { time: Date; load: number };
    notification: { name: string; data: Uint8Array };
    state: State;
    /** The server went silent for too long (see `deadAfter`); `close` follows. */
    dead: Error;
    /** The server refused the connection; `close` follows. On 4401 and 4403 a keepalive
     * stops (state `refused`) until `resume()` (see `refusedRetry`). */
    refused: Refused;
    /** The server is shutting down gracefully; it closes the connection when it is done. */
    done: null;
    /** The relay gave this connection an id (on every connection, so again after a reconnect). */
    id: string;
    /**
     * After each reconnect of a keepalive: whether the connection resumed the relay session
     * of the one before (with its token, sent first). `onReconnect` runs next.
     */
    session: SessionEvent;
    /** A message relayed from another peer. */
    relay: RelayMessage;
    /** A `relayNotify` message that could not be delivered. */
    undelivered: RelayUndelivered;
  }

  /** A relayed message: the sender's id as the server knows it, the topic and the body. */
  interface RelayMessage<T = any> {
    from: string;
    topic: string;
    body: T;
  }

  /** Why a fire-and-forget relay message was not delivered. */
  interface RelayUndelivered {
    to: string | null;
    topic: string | null;
    /** `unknown peer`, `bad header: …`, `too large: …` or `recipient's queue is full`. */
    error: string;
  }

  type Listener<T> = (arg: T) => void;

  interface EventEmitter<M> {
    on<K extends keyof M>(name: K, fn: Listener<M[K]>): this;
    addListener<K extends keyof M>(name: K, fn: Listener<M[K]>): this;
    once<K extends keyof M>(name: K, fn: Listener<M[K]>): this;
    off<K extends keyof M>(name: K, fn: Listener<M[K]>): this;
    removeListener<K extends keyof M>(name: K, fn: Listener<M[K]>): this;
    removeListeners<K extends keyof M>(name: K): void;
    removeAllListeners(name?: keyof M): void;
    listeners<K extends keyof M>(name: K): Listener<M[K]>[];
    emit<K extends keyof M>(name: K, arg?: M[K]): void;
  }

  interface Sock extends EventEmitter<SockEventMap> {
    readonly handlers: Handlers;
    /** The protocol given to the constructor (default `protocol.binary`); the client writes
     * binary headers whatever it is, which every gotalk server reads. */
    protocol: Protocol<any>;
    /** Where the connection stands. */
    readonly state: State;
    /** When the next reconnect attempt is due (ms, as `Date.now()`), or null. */
    readonly nextReconnectAt: number | null;
    /** Messages waiting for the connection. */
    readonly queued: number;
    /** Milliseconds between heartbeats; 0 sends none. Default 20000. */
    heartbeatInterval: number;
    /** Messages that may wait for the connection. Default 100. */
    sendBufferLimit: number;
    /**
     * The deadline (ms) of a request or bufferRequest that gives no `timeout` of its own;
     * past it the call rejects with a `TimeoutError`. Default 0: none.
     */
    requestTimeout: number;
    /**
     * Runs after each reconnect, before what was queued while offline is sent (see
     * `ReconnectHook`). Default null: the queue goes out at once (after the session is
     * resumed, when there is one).
     *
     * ```js
     * s.onReconnect = async (resumed) => {
     *   if (!resumed) await s.request('join', { room, name }); // a new id: join again
     * };
     * ```
     */
    onReconnect: ReconnectHook | null;

    open(addr?: string, cb?: (err: Error | null, s: this) => void): this;
    open(cb: (err: Error | null, s: this) => void): this;
    openKeepAlive(addr?: string, options?: KeepAliveOptions): this;
    openKeepAlive(options: KeepAliveOptions): this;

    /** A request with JSON in and out. */
    request<R = any>(op: string, value?: any, cb?: (err: Error | null, result: R) => void): Promise<R>;
    request<R = any>(op: string, value: any, options?: CallOptions, cb?: (err: Error | null, result: R) => void): Promise<R>;
    /** A request with raw bytes in and out. */
    bufferRequest(op: string, buf: Payload, cb?: (err: Error | null, result: Uint8Array) => void): Promise<Uint8Array>;
    bufferRequest(op: string, buf: Payload, options?: CallOptions, cb?: (err: Error | null, result: Uint8Array) => void): Promise<Uint8Array>;
    /**
     * A request whose parts the page writes and whose result parts arrive as `data`. With
     * options, its deadline or abort ends it: `end` carries the TimeoutError or the reason.
     */
    streamRequest(op: string, options?: CallOptions): StreamRequest;
    /** A request answered by sources, each with a header and its own frames. */
    sources(op: string, body?: Payload, options?: SourcesOptions): Sources;
    notify(name: string, value: any): void;
    bufferNotify(name: string, buf: Payload): void;
    /** Sends a heartbeat now; `load` from 0 to 1. */
    sendHeartbeat(load: number): void;
    /** The connected URL, or null. */
    address(): string | null;
    /** Closes once outstanding results are in; a second call closes at once. */
    end(): void;
    /** A keepalive that was refused (or is waiting to reconnect) connects again now, from
     * the start of its backoff: call it once the user has logged in. */
    resume(): void;

    /** This connection's relay id, once the server has sent it; null before and after a
     * close. After a reconnect that resumed the session, the same id as before. */
    readonly id: string | null;
    /**
     * Sends `body` (any JSON value) to the peer `to` on `topic` through the server's relay.
     * Resolves once it is queued for the recipient; rejects with the fault.
     */
    relay(to: string, topic: string, body?: any): Promise<void>;
    /** Sends without an answer; a failure arrives as the `undelivered` event. */
    relayNotify(to: string, topic: string, body?: any): void;

    /** @deprecated use request */
    requestp<R = any>(op: string, value?: any): Promise<R>;
    /** @deprecated use bufferRequest */
    bufferRequestp(op: string, buf: Payload): Promise<Uint8Array>;
  }

  /**
   * A call's deadline and cancellation. Past `timeout` ms (default: the sock's
   * `requestTimeout`; 0: none) the call rejects with an Error named `TimeoutError`; when
   * `signal` aborts, with its reason (an `AbortError` unless given another), as fetch() does.
   * Either way its result is dropped if it comes later; the server is not told, and its
   * handler runs on until it answers or the connection closes.
   */
  interface CallOptions {
    timeout?: number;
    signal?: AbortSignal;
  }

  interface StreamRequest extends EventEmitter<{ data: Uint8Array; end: Error | null }> {
    readonly op: string;
    /** Sends a part; an empty one ends the request. */
    write(buf: Payload): void;
    /** Ends the request. */
    end(): void;
  }

  interface SourcesOptions {
    /** Frames a source may send ahead of the page. Default 1024. */
    frameWindow?: number;
    /** Sources the server may announce ahead of the page. Default 128. */
    sourceWindow?: number;
  }

  /** The sources answering one request: iterate them, or listen for `source`. `end` is null
   * once every source is finished, or the request's Error. */
  interface Sources extends EventEmitter<{ source: Source; end: Error | null }>, AsyncIterable<Source> {
    readonly op: string;
    /** Cancels every source still open and every one not yet announced. */
    cancel(): void;
  }

  /** One source: its header and its frames (iterate them, or listen for `data`). `end` is null
   * when it completed, or an Error with the reason it was aborted. */
  interface Source extends EventEmitter<{ data: Uint8Array; end: Error | null }>, AsyncIterable<Uint8Array> {
    readonly id: number;
    readonly header: Uint8Array;
    /** The server it came from: the connection's URL. */
    readonly remoteAddress: string | null;
    /** Stops the source; it ends with the Error `cancelled`. */
    cancel(): void;
  }

  interface IncomingStream<In, Out> extends EventEmitter<{ data: In; end: Error | null }> {
    readonly op: string;
    /** Sends a part of the result. */
    write(value: Out): void;
    /** Ends the result. */
    end(): void;
    /** Fails the request with an ErrorResult. */
    error(err: Error | string): void;
  }

  interface Handlers {
    handleRequest<In = any, Out = any>(op: string, h: RequestHandler<In, Out>): void;
    handleBufferRequest(op: string, h: RequestHandler<Uint8Array, Payload>): void;
    handleNotification<In = any>(name: string, h: (value: In, name: string) => void): void;
    handleBufferNotification(name: string, h: (data: Uint8Array, name: string) => void): void;
    handleStreamRequest<In = any, Out = any>(op: string, h: StreamHandler<In, Out>): void;
    handleBufferStreamRequest(op: string, h: StreamHandler<Uint8Array, Payload>): void;
    findRequestHandler(op: string): RequestHandler<Uint8Array, Payload> | null;
    findNotificationHandler(name: string): ((data: Uint8Array, name: string) => void) | null;
    findStreamHandler(op: string): StreamHandler<Uint8Array, Payload> | null;
  }

  const Handlers: { new (): Handlers; (): Handlers };
  const Sock: {
    new (handlers?: Handlers, proto?: Protocol<any>): Sock;
    (handlers?: Handlers, proto?: Protocol<any>): Sock;
  };
  const EventEmitter: { mixin<T extends object>(obj: T): T & EventEmitter<any> };

  const protocol: {
    readonly Version: 1;
    readonly MsgTypeSingleReq: 0x72;
    readonly MsgTypeStreamReq: 0x73;
    readonly MsgTypeStreamReqPart: 0x70;
    readonly MsgTypeSingleRes: 0x52;
    readonly MsgTypeStreamRes: 0x53;
    readonly MsgTypeErrorRes: 0x45;
    readonly MsgTypeRetryRes: 0x65;
    readonly MsgTypeNotification: 0x6e;
    readonly MsgTypeHeartbeat: 0x68;
    readonly MsgTypeProtocolError: 0x66;
    readonly ErrorAbnormal: 0;
    readonly ErrorUnsupported: 1;
    readonly ErrorInvalidMsg: 2;
    readonly ErrorTimeout: 3;
    readonly HeartbeatMsgMaxLoad: 0xffff;
    /** gotalk.js 1.2.1's header helpers over bytes. */
    readonly binary: Protocol<Uint8Array>;
    /** gotalk.js 1.2.1's header helpers over strings. */
    readonly text: Protocol<string>;
  };

  /** A message header as `parseMsg` reads it: for a heartbeat, `wait` is the load and `size`
   * the time (s since the epoch). */
  interface ParsedMsg<T> {
    t: number;
    id?: T;
    name?: string;
    wait: number;
    size: number;
  }

  /** gotalk.js 1.2.1's helpers for message headers, in bytes or in text. */
  interface Protocol<T> {
    /** `n` in hex, `digits` wide. */
    makeFixnum(n: number, digits: number): T;
    /** The version handshake. */
    readonly versionBuf: T;
    parseVersion(data: T): number;
    /** Reads a header (without its payload); throws on a malformed number. */
    parseMsg(data: T): ParsedMsg<T>;
    /** A header for message type `t` (a char code); `wait` counts only for a RetryResult. */
    makeMsg(t: number, id: T | string | null, name: string | null, wait: number, size: number): T;
    makeHeartbeatMsg(load: number): T;
  }
}
