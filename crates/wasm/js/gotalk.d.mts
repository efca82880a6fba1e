// TypeScript declarations for gotalk.mjs, the gotalk browser client as an ES module.
//
//   import gotalk, { connection, configure } from 'gotalk-client';   // the npm package
//   import gotalk from '/gotalk/gotalk.mjs';                          // from a gotalk server
//
// The default export is the object the classic script defines as the global `gotalk`
// (declared in gotalk.d.ts); the named exports are its functions and constants, the same
// values, and the types keep the names gotalk.d.ts gives them.

import gotalk from './gotalk.js';

export default gotalk;

export declare const version: typeof gotalk.version;
export declare const ready: typeof gotalk.ready;
export declare const configure: typeof gotalk.configure;
export declare const connection: typeof gotalk.connection;
export declare const open: typeof gotalk.open;
export declare const defaultHandlers: typeof gotalk.defaultHandlers;
export declare const handle: typeof gotalk.handle;
export declare const handleRequest: typeof gotalk.handleRequest;
export declare const handleBufferRequest: typeof gotalk.handleBufferRequest;
export declare const handleNotification: typeof gotalk.handleNotification;
export declare const handleBufferNotification: typeof gotalk.handleBufferNotification;
export declare const handleStreamRequest: typeof gotalk.handleStreamRequest;
export declare const handleBufferStreamRequest: typeof gotalk.handleBufferStreamRequest;
export declare const Sock: typeof gotalk.Sock;
export declare const Handlers: typeof gotalk.Handlers;
export declare const EventEmitter: typeof gotalk.EventEmitter;
export declare const protocol: typeof gotalk.protocol;
export declare const Buf: typeof gotalk.Buf;
export declare const ErrAbnormal: typeof gotalk.ErrAbnormal;
export declare const ErrUnsupported: typeof gotalk.ErrUnsupported;
export declare const ErrInvalidMsg: typeof gotalk.ErrInvalidMsg;
export declare const ErrTimeout: typeof gotalk.ErrTimeout;

export type Sock = gotalk.Sock;
export type Handlers = gotalk.Handlers;
export type EventEmitter<M> = gotalk.EventEmitter<M>;
export type Configuration = gotalk.Configuration;
export type KeepAliveOptions = gotalk.KeepAliveOptions;
export type CallOptions = gotalk.CallOptions;
export type State = gotalk.State;
export type SockEventMap = gotalk.SockEventMap;
export type Payload = gotalk.Payload;
export type RequestHandler<In, Out> = gotalk.RequestHandler<In, Out>;
export type StreamHandler<In, Out> = gotalk.StreamHandler<In, Out>;
export type Resolver<T> = gotalk.Resolver<T>;
export type Listener<T> = gotalk.Listener<T>;
export type ProtocolError = gotalk.ProtocolError;
export type CloseError = gotalk.CloseError;
export type Refused = gotalk.Refused;
export type ReconnectHook = gotalk.ReconnectHook;
export type SessionEvent = gotalk.SessionEvent;
export type RelayMessage<T = any> = gotalk.RelayMessage<T>;
export type RelayUndelivered = gotalk.RelayUndelivered;
export type StreamRequest = gotalk.StreamRequest;
export type SourcesOptions = gotalk.SourcesOptions;
export type Sources = gotalk.Sources;
export type Source = gotalk.Source;
export type IncomingStream<In, Out> = gotalk.IncomingStream<In, Out>;
export type Protocol<T> = gotalk.Protocol<T>;
export type ParsedMsg<T> = gotalk.ParsedMsg<T>;
