// gotalk.js 0.1.0: the gotalk browser client, in Rust compiled to wasm (gotalk_bg.wasm).
// Built by scripts/build-client.sh from wasm-client/; do not edit.
// A classic script: defines the global `gotalk` and loads gotalk_bg.wasm from its own folder.
(function () {
'use strict';
const scriptUrl = (typeof document !== 'undefined' && document.currentScript && document.currentScript.src) || '';
let wasm_bindgen = (function(exports) {
let script_src;
if (typeof document !== 'undefined' && document.currentScript !== null) {
script_src = new URL(document.currentScript.src, location.href).toString();
}
class Core {
__destroy_into_raw() {
const ptr = this.__wbg_ptr;
this.__wbg_ptr = 0;
CoreFinalization.unregister(this);
return ptr;
}
free() {
const ptr = this.__destroy_into_raw();
wasm.__wbg_core_free(ptr, 0);
}
answer(kind, conn, id, payload) {
wasm.core_answer(this.__wbg_ptr, kind, conn, id, payload);
}
end() {
wasm.core_end(this.__wbg_ptr);
}
event(kind, value) {
wasm.core_event(this.__wbg_ptr, kind, value);
}
get(kind) {
const ret = wasm.core_get(this.__wbg_ptr, kind);
return ret;
}
constructor(host) {
const ret = wasm.core_new(host);
this.__wbg_ptr = ret;
CoreFinalization.register(this, this.__wbg_ptr, this);
return this;
}
open(url, keepalive, options) {
const val2 = +keepalive;
const ptr0 = passStringToWasm0(url, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
const len0 = WASM_VECTOR_LEN;
const ret = wasm.core_open(this.__wbg_ptr, ptr0, len0, val2, options);
if (ret[1]) {
throw takeFromExternrefTable0(ret[0]);
}
}
request(op, payload) {
const ptr0 = passStringToWasm0(op, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
const len0 = WASM_VECTOR_LEN;
const ret = wasm.core_request(this.__wbg_ptr, ptr0, len0, payload);
return ret;
}
send(kind, token, name_, payload) {
const val2 = +kind;
const val3 = +token;
const ptr0 = passStringToWasm0(name_, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
const len0 = WASM_VECTOR_LEN;
const ret = wasm.core_send(this.__wbg_ptr, val2, val3, ptr0, len0, payload);
if (ret[1]) {
throw takeFromExternrefTable0(ret[0]);
}
}
set(kind, value) {
wasm.core_set(this.__wbg_ptr, kind, value);
}
}
if (Symbol.dispose) Core.prototype[Symbol.dispose] = Core.prototype.free;
exports.Core = Core;
function __wbg_get_imports() {
const import0 = {
__proto__: null,
__wbg___wbindgen_is_null_c22311b1cc228e3a: function(arg0) {
const ret = arg0 === null;
return ret;
},
__wbg___wbindgen_is_undefined_be5b34249ff1fc15: function(arg0) {
const ret = arg0 === undefined;
return ret;
},
__wbg___wbindgen_number_get_934b640d0889af78: function(arg0, arg1) {
const obj = arg1;
const ret = typeof(obj) === 'number' ? obj : undefined;
getDataViewMemory0().setFloat64((arg0 >>> 0) + 8 * 1, isLikeNone(ret) ? 0 : ret, true);
getDataViewMemory0().setInt32((arg0 >>> 0) + 4 * 0, !isLikeNone(ret), true);
},
__wbg___wbindgen_string_get_7ce8eee7fd327545: function(arg0, arg1) {
const obj = arg1;
const ret = typeof(obj) === 'string' ? obj : undefined;
var ptr1 = isLikeNone(ret) ? 0 : passStringToWasm0(ret, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
var len1 = WASM_VECTOR_LEN;
getDataViewMemory0().setInt32((arg0 >>> 0) + 4 * 1, len1, true);
getDataViewMemory0().setInt32((arg0 >>> 0) + 4 * 0, ptr1, true);
},
__wbg___wbindgen_throw_4c88d8bf264fd984: function(arg0, arg1) {
throw new Error(getStringFromWasm0(arg0, arg1));
},
__wbg__wbg_cb_unref_09736879a3f67559: function(arg0) {
arg0._wbg_cb_unref();
},
__wbg_call_a410eb4b59ed5965: function() { return handleError(function (arg0, arg1, arg2) {
const ret = arg0.call(arg1, arg2);
return ret;
}, arguments); },
__wbg_clearTimeout_fc63102f87d72e6d: function(arg0) {
clearTimeout(arg0);
},
__wbg_close_297c4419d0990129: function() { return handleError(function (arg0, arg1) {
arg0.close(arg1);
}, arguments); },
__wbg_code_3e6881d821eab2c4: function(arg0) {
const ret = arg0.code;
return ret;
},
__wbg_data_c7e5e8500f1bca2f: function(arg0) {
const ret = arg0.data;
return ret;
},
__wbg_emit_02a4501f296fe3c3: function() { return handleError(function (arg0, arg1, arg2, arg3) {
arg0.emit(getStringFromWasm0(arg1, arg2), arg3);
}, arguments); },
__wbg_get_2080c49015e35254: function() { return handleError(function (arg0, arg1) {
const ret = Reflect.get(arg0, arg1);
return ret;
}, arguments); },
__wbg_instanceof_ArrayBuffer_12cdaa4161423e6b: function(arg0) {
let result;
try {
result = arg0 instanceof ArrayBuffer;
} catch (_) {
result = false;
}
const ret = result;
return ret;
},
__wbg_instanceof_Uint8Array_d7aeb0dcb3108fea: function(arg0) {
let result;
try {
result = arg0 instanceof Uint8Array;
} catch (_) {
result = false;
}
const ret = result;
return ret;
},
__wbg_length_186163212ffe79c3: function(arg0) {
const ret = arg0.length;
return ret;
},
__wbg_new_13de428334042d26: function(arg0) {
const ret = new Uint8Array(arg0);
return ret;
},
__wbg_new_3e95cd7386bb9a6c: function(arg0) {
const ret = new Date(arg0);
return ret;
},
__wbg_new_787b9fb330d55d78: function(arg0, arg1) {
const ret = new Error(getStringFromWasm0(arg0, arg1));
return ret;
},
__wbg_new_ba40181b3f24ac80: function(arg0, arg1) {
try {
var state0 = {a: arg0, b: arg1};
var cb0 = (arg0, arg1) => {
const a = state0.a;
state0.a = 0;
try {
return wasm_bindgen__convert__closures_____invoke__hb7bae8d1ceda1975(a, state0.b, arg0, arg1);
} finally {
state0.a = a;
}
};
const ret = new Promise(cb0);
return ret;
} finally {
state0.a = 0;
}
},
__wbg_new_cd4348290afae586: function() {
const ret = new Object();
return ret;
},
__wbg_new_d72daa1c90ded389: function() { return handleError(function (arg0, arg1) {
const ret = new WebSocket(getStringFromWasm0(arg0, arg1));
return ret;
}, arguments); },
__wbg_new_from_slice_b8daf545a41c6aa0: function(arg0, arg1) {
const ret = new Uint8Array(getArrayU8FromWasm0(arg0, arg1));
return ret;
},
__wbg_now_463ac581d2fc7ea3: function() {
const ret = Date.now();
return ret;
},
__wbg_on_9dec1bb6522eb684: function() { return handleError(function (arg0, arg1, arg2, arg3, arg4, arg5, arg6) {
arg0.on(arg1 >>> 0, getStringFromWasm0(arg2, arg3), arg4 >>> 0, arg5 >>> 0, arg6);
}, arguments); },
__wbg_online_c0d1a7552b6c6b49: function(arg0) {
const ret = arg0.online();
return ret;
},
__wbg_prototypesetcall_13162965d1fe7aa3: function(arg0, arg1, arg2) {
Uint8Array.prototype.set.call(getArrayU8FromWasm0(arg0, arg1), arg2);
},
__wbg_random_df36b90cd78a7d54: function() {
const ret = Math.random();
return ret;
},
__wbg_reject_334b730b3c00849b: function(arg0) {
const ret = Promise.reject(arg0);
return ret;
},
__wbg_send_d83d0891cf698779: function() { return handleError(function (arg0, arg1, arg2) {
arg0.send(getArrayU8FromWasm0(arg1, arg2));
}, arguments); },
__wbg_setTimeout_1780432f293b6cc3: function(arg0, arg1) {
const ret = setTimeout(arg0, arg1);
return ret;
},
__wbg_set_2793479888329cb6: function() { return handleError(function (arg0, arg1, arg2) {
const ret = Reflect.set(arg0, arg1, arg2);
return ret;
}, arguments); },
__wbg_set_binaryType_d5b4dafd0f127fb2: function(arg0, arg1) {
arg0.binaryType = __wbindgen_enum_BinaryType[arg1];
},
__wbg_set_onclose_078935cf8d0fb024: function(arg0, arg1) {
arg0.onclose = arg1;
},
__wbg_set_onmessage_26abc49cfa5f9ffc: function(arg0, arg1) {
arg0.onmessage = arg1;
},
__wbg_set_onopen_757be120cc7b1ea6: function(arg0, arg1) {
arg0.onopen = arg1;
},
__wbg_url_eb8098cc36a9c8e2: function(arg0, arg1) {
const ret = arg1.url;
const ptr1 = passStringToWasm0(ret, wasm.__wbindgen_malloc, wasm.__wbindgen_realloc);
const len1 = WASM_VECTOR_LEN;
getDataViewMemory0().setInt32((arg0 >>> 0) + 4 * 1, len1, true);
getDataViewMemory0().setInt32((arg0 >>> 0) + 4 * 0, ptr1, true);
},
__wbindgen_generic_0000000000000001: function(arg0, arg1) {
const ret = makeMutClosure(arg0, arg1, wasm_bindgen__convert__closures_____invoke__h68ebbf8f4211867a);
return ret;
},
__wbindgen_generic_0000000000000002: function(arg0, arg1) {
const ret = makeMutClosure(arg0, arg1, wasm_bindgen__convert__closures_____invoke__h68ebbf8f4211867a_11);
return ret;
},
__wbindgen_generic_0000000000000003: function(arg0, arg1) {
const ret = makeMutClosure(arg0, arg1, wasm_bindgen__convert__closures_____invoke__ha19a200fbd0c6728);
return ret;
},
__wbindgen_generic_0000000000000004: function(arg0) {
const ret = arg0;
return ret;
},
__wbindgen_generic_0000000000000005: function(arg0, arg1) {
const ret = getStringFromWasm0(arg0, arg1);
return ret;
},
__wbindgen_init_externref_table: function() {
const table = wasm.__wbindgen_externrefs;
table.set(0, undefined);
table.set(1024, undefined);
table.set(1025, null);
table.set(1026, true);
table.set(1027, false);
},
};
return {
__proto__: null,
"./gotalk_bg.js": import0,
};
}
function wasm_bindgen__convert__closures_____invoke__ha19a200fbd0c6728(arg0, arg1) {
wasm.wasm_bindgen__convert__closures_____invoke__ha19a200fbd0c6728(arg0, arg1);
}
function wasm_bindgen__convert__closures_____invoke__h68ebbf8f4211867a(arg0, arg1, arg2) {
wasm.wasm_bindgen__convert__closures_____invoke__h68ebbf8f4211867a(arg0, arg1, arg2);
}
function wasm_bindgen__convert__closures_____invoke__h68ebbf8f4211867a_11(arg0, arg1, arg2) {
wasm.wasm_bindgen__convert__closures_____invoke__h68ebbf8f4211867a_11(arg0, arg1, arg2);
}
function wasm_bindgen__convert__closures_____invoke__hb7bae8d1ceda1975(arg0, arg1, arg2, arg3) {
wasm.wasm_bindgen__convert__closures_____invoke__hb7bae8d1ceda1975(arg0, arg1, arg2, arg3);
}
const __wbindgen_enum_BinaryType = ["blob", "arraybuffer"];
const CoreFinalization = (typeof FinalizationRegistry === 'undefined')
? { register: () => {}, unregister: () => {} }
: new FinalizationRegistry(ptr => wasm.__wbg_core_free(ptr, 1));
function addToExternrefTable0(obj) {
const idx = wasm.__externref_table_alloc();
wasm.__wbindgen_externrefs.set(idx, obj);
return idx;
}
const CLOSURE_DTORS = (typeof FinalizationRegistry === 'undefined')
? { register: () => {}, unregister: () => {} }
: new FinalizationRegistry(state => wasm.__wbindgen_destroy_closure(state.a, state.b));
function getArrayU8FromWasm0(ptr, len) {
ptr = ptr >>> 0;
return getUint8ArrayMemory0().subarray(ptr / 1, ptr / 1 + len);
}
let cachedDataViewMemory0 = null;
function getDataViewMemory0() {
if (cachedDataViewMemory0 === null || cachedDataViewMemory0.buffer.detached === true || (cachedDataViewMemory0.buffer.detached === undefined && cachedDataViewMemory0.buffer !== wasm.memory.buffer)) {
cachedDataViewMemory0 = new DataView(wasm.memory.buffer);
}
return cachedDataViewMemory0;
}
function getStringFromWasm0(ptr, len) {
ptr = ptr >>> 0;
return decodeText(getUint8ArrayMemory0().subarray(ptr, ptr + len));
}
let cachedUint8ArrayMemory0 = null;
function getUint8ArrayMemory0() {
if (cachedUint8ArrayMemory0 === null || cachedUint8ArrayMemory0.byteLength === 0) {
cachedUint8ArrayMemory0 = new Uint8Array(wasm.memory.buffer);
}
return cachedUint8ArrayMemory0;
}
function handleError(f, args) {
try {
return f.apply(this, args);
} catch (e) {
const idx = addToExternrefTable0(e);
wasm.__wbindgen_exn_store(idx);
}
}
function isLikeNone(x) {
return x === undefined || x === null;
}
function makeMutClosure(arg0, arg1, f) {
const state = { a: arg0, b: arg1, cnt: 1 };
const real = (...args) => {
state.cnt++;
const a = state.a;
state.a = 0;
try {
return f(a, state.b, ...args);
} finally {
state.a = a;
real._wbg_cb_unref();
}
};
real._wbg_cb_unref = () => {
if (--state.cnt === 0) {
wasm.__wbindgen_destroy_closure(state.a, state.b);
state.a = 0;
CLOSURE_DTORS.unregister(state);
}
};
CLOSURE_DTORS.register(real, state, state);
return real;
}
function passStringToWasm0(arg, malloc, realloc) {
if (realloc === undefined) {
const buf = cachedTextEncoder.encode(arg);
const ptr = malloc(buf.length, 1) >>> 0;
getUint8ArrayMemory0().subarray(ptr, ptr + buf.length).set(buf);
WASM_VECTOR_LEN = buf.length;
return ptr;
}
let len = arg.length;
let ptr = malloc(len, 1) >>> 0;
const mem = getUint8ArrayMemory0();
let offset = 0;
for (; offset < len; offset++) {
const code = arg.charCodeAt(offset);
if (code > 0x7F) break;
mem[ptr + offset] = code;
}
if (offset !== len) {
if (offset !== 0) {
arg = arg.slice(offset);
}
ptr = realloc(ptr, len, len = offset + arg.length * 3, 1) >>> 0;
const view = getUint8ArrayMemory0().subarray(ptr + offset, ptr + len);
const ret = cachedTextEncoder.encodeInto(arg, view);
offset += ret.written;
ptr = realloc(ptr, len, offset, 1) >>> 0;
}
WASM_VECTOR_LEN = offset;
return ptr;
}
function takeFromExternrefTable0(idx) {
const value = wasm.__wbindgen_externrefs.get(idx);
wasm.__externref_table_dealloc(idx);
return value;
}
let cachedTextDecoder = new TextDecoder('utf-8', { ignoreBOM: true });
cachedTextDecoder.decode();
function decodeText(bytes) {
return cachedTextDecoder.decode(bytes);
}
const cachedTextEncoder = new TextEncoder();
if (!('encodeInto' in cachedTextEncoder)) {
cachedTextEncoder.encodeInto = function (arg, view) {
const buf = cachedTextEncoder.encode(arg);
view.set(buf);
return {
read: arg.length,
written: buf.length
};
};
}
let WASM_VECTOR_LEN = 0;
let wasmModule, wasmInstance, wasm;
function __wbg_finalize_init(instance, module) {
wasmInstance = instance;
wasm = instance.exports;
wasmModule = module;
cachedDataViewMemory0 = null;
cachedUint8ArrayMemory0 = null;
wasm.__wbindgen_start();
return wasm;
}
async function __wbg_load(module, imports) {
if (typeof Response === 'function' && module instanceof Response) {
if (!module.ok) {
throw new Error(`failed to fetch Wasm: ${module.status} ${module.statusText} fetching '${module.url}'`);
}
if (typeof WebAssembly.instantiateStreaming === 'function') {
try {
return await WebAssembly.instantiateStreaming(module, imports);
} catch (e) {
const validResponse = expectedResponseType(module.type);
if (validResponse && module.headers.get('Content-Type') !== 'application/wasm') {
console.warn("`WebAssembly.instantiateStreaming` failed because your server does not serve Wasm with `application/wasm` MIME type. Falling back to `WebAssembly.instantiate` which is slower. Original error:\n", e);
} else { throw e; }
}
}
const bytes = await module.arrayBuffer();
return await WebAssembly.instantiate(bytes, imports);
} else {
const instance = await WebAssembly.instantiate(module, imports);
if (instance instanceof WebAssembly.Instance) {
return { instance, module };
} else {
return instance;
}
}
function expectedResponseType(type) {
switch (type) {
case 'basic': case 'cors': case 'default': return true;
}
return false;
}
}
function initSync(module) {
if (wasm !== undefined) return wasm;
if (module !== undefined) {
if (Object.getPrototypeOf(module) === Object.prototype) {
({module} = module)
} else {
console.warn('using deprecated parameters for `initSync()`; pass a single object instead')
}
}
const imports = __wbg_get_imports();
if (!(module instanceof WebAssembly.Module)) {
module = new WebAssembly.Module(module);
}
const instance = new WebAssembly.Instance(module, imports);
return __wbg_finalize_init(instance, module);
}
let __wbg_init_promise;
async function __wbg_init(module_or_path) {
if (wasm !== undefined) return wasm;
if (__wbg_init_promise === undefined) {
__wbg_init_promise = __wbg_init_once(module_or_path);
__wbg_init_promise.catch(() => { __wbg_init_promise = undefined; });
}
return __wbg_init_promise;
}
async function __wbg_init_once(module_or_path) {
if (module_or_path !== undefined) {
if (Object.getPrototypeOf(module_or_path) === Object.prototype) {
({module_or_path} = module_or_path)
} else {
console.warn('using deprecated parameters for the initialization function; pass a single object instead')
}
}
if (module_or_path === undefined && script_src !== undefined) {
module_or_path = script_src.replace(/\.js$/, "_bg.wasm");
}
const imports = __wbg_get_imports();
if (typeof module_or_path === 'string' || (typeof Request === 'function' && module_or_path instanceof Request) || (typeof URL === 'function' && module_or_path instanceof URL)) {
module_or_path = fetch(module_or_path);
}
const { instance, module } = await __wbg_load(await module_or_path, imports);
return __wbg_finalize_init(instance, module);
}
return Object.assign(__wbg_init, { initSync }, exports);
})({ __proto__: null });
const gotalk = {};
gotalk.version = '0.1.0';
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
});
const SEND_NOTIFY = 0, SEND_STREAM = 1;
const ANSWER_RESULT = 0, ANSWER_ERROR = 1, ANSWER_PART = 2, ANSWER_END = 3;
const EVENT_ONLINE = 0, EVENT_VISIBLE = 1, EVENT_HEARTBEAT = 2;
const GET_STATE = 0, GET_NEXT_RECONNECT = 1, GET_ADDRESS = 2, GET_QUEUED = 3;
const SET_HEARTBEAT_MS = 0, SET_SEND_LIMIT = 1;
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
const utf8 = new TextDecoder();
function text(buf) {
return typeof buf === 'string' ? buf : utf8.decode(buf);
}
function decodeJSON(buf) {
if (!buf || buf.length === 0) return null;
return JSON.parse(text(buf));
}
function encodeJSON(value) {
const json = JSON.stringify(value);
return json === undefined ? '' : json;
}
function messageOf(err) {
if (err && typeof err.message === 'string') return err.message;
return String(err);
}
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
let loaded = false;
let loadError = null;
const waiting = [];
function whenReady(fn) {
if (loaded) {
fn();
} else {
waiting.push(fn);
}
}
const wasmUrl = new URL('gotalk_bg.wasm', scriptUrl || (typeof location !== 'undefined' ? location.href : 'http://localhost/'));
gotalk.ready = wasm_bindgen({ module_or_path: wasmUrl })
.catch((err) => {
loadError = new Error('gotalk: could not load ' + wasmUrl + ': ' + messageOf(err));
})
.then(() => {
loaded = true;
for (const fn of waiting.splice(0)) guard(fn);
if (loadError) throw loadError;
});
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
function Sock(handlers) {
if (!(this instanceof Sock)) return new Sock(handlers);
Object.defineProperties(this, {
handlers: { value: handlers || gotalk.defaultHandlers, enumerable: true },
_core: { value: null, writable: true },
_settings: { value: { heartbeatInterval: 20000, sendBufferLimit: 100 }, writable: true },
_streams: { value: new Map() },
_incoming: { value: new Map() },
_listeners: { value: null, writable: true },
_opening: { value: false, writable: true },
_lastToken: { value: 0, writable: true },
_relayId: { value: null, writable: true },
});
}
EventEmitter.mixin(Sock.prototype);
gotalk.Sock = Sock;
Sock.prototype._with = function (fn) {
whenReady(() => {
if (loadError) throw loadError;
if (!this._core) {
const core = new wasm_bindgen.Core(hostFor(this));
core.set(SET_HEARTBEAT_MS, this._settings.heartbeatInterval);
core.set(SET_SEND_LIMIT, this._settings.sendBufferLimit);
this._core = core;
}
fn(this._core);
});
};
Sock.prototype._promise = function (fn) {
if (this._core) return fn(this._core);
return new Promise((resolve, reject) => {
whenReady(() => {
if (loadError) return reject(loadError);
this._with((core) => fn(core).then(resolve, reject));
});
});
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
heartbeatInterval: setting('heartbeatInterval', SET_HEARTBEAT_MS),
sendBufferLimit: setting('sendBufferLimit', SET_SEND_LIMIT),
state: {
get() { return this._core ? this._core.get(GET_STATE) : (this._opening ? 'connecting' : 'closed'); },
enumerable: true,
},
nextReconnectAt: {
get() { return (this._core && this._core.get(GET_NEXT_RECONNECT)) || null; },
enumerable: true,
},
queued: {
get() { return this._core ? this._core.get(GET_QUEUED) : 0; },
enumerable: true,
},
});
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
this._with((core) => core.open(url, false, undefined));
return this;
};
Sock.prototype.openKeepAlive = function (addr, options) {
if (addr && typeof addr === 'object') {
options = addr;
addr = undefined;
}
const url = resolveAddress(addr);
this._opening = true;
this._with((core) => {
core.open(url, true, options);
this._watch(core);
});
return this;
};
Sock.prototype._watch = function (core) {
if (this._listeners || typeof addEventListener !== 'function') return;
const online = () => core.event(EVENT_ONLINE, 0);
const visible = () => {
if (typeof document === 'undefined' || document.visibilityState === 'visible') {
core.event(EVENT_VISIBLE, 0);
}
};
addEventListener('online', online);
if (typeof document !== 'undefined') document.addEventListener('visibilitychange', visible);
this._listeners = { online, visible };
};
Sock.prototype._unwatch = function () {
const l = this._listeners;
if (!l) return;
removeEventListener('online', l.online);
if (typeof document !== 'undefined') document.removeEventListener('visibilitychange', l.visible);
this._listeners = null;
};
Sock.prototype.end = function () {
this._opening = false;
this._unwatch();
this._with((core) => core.end());
};
Sock.prototype.address = function () {
return (this._core && this._core.get(GET_ADDRESS)) || null;
};
Sock.prototype.bufferRequest = function (op, buf, cb) {
const p = this._promise((core) => core.request(op, buf));
return callback(p, cb);
};
Sock.prototype.request = function (op, value, cb) {
if (typeof value === 'function' && cb === undefined) {
cb = value;
value = undefined;
}
const p = this._promise((core) => core.request(op, encodeJSON(value)).then(decodeJSON));
return callback(p, cb);
};
Sock.prototype.requestp = function (op, value) { return this.request(op, value); };
Sock.prototype.bufferRequestp = function (op, buf) { return this.bufferRequest(op, buf); };
function callback(promise, cb) {
if (typeof cb === 'function') {
promise.then((value) => cb(null, value), (err) => cb(err, null));
}
return promise;
}
Sock.prototype.bufferNotify = function (name, buf) {
if (this._core) return this._core.send(SEND_NOTIFY, 0, name, buf);
this._with((core) => core.send(SEND_NOTIFY, 0, name, buf));
};
Sock.prototype.notify = function (name, value) {
return this.bufferNotify(name, encodeJSON(value));
};
Sock.prototype.sendHeartbeat = function (load) {
this._with((core) => core.event(EVENT_HEARTBEAT, load || 0));
};
function StreamRequest(sock, op) {
Object.defineProperties(this, {
op: { value: op, enumerable: true },
id: { value: ++sock._lastToken, enumerable: true },
_sock: { value: sock },
_ended: { value: false, writable: true },
});
}
EventEmitter.mixin(StreamRequest.prototype);
gotalk.StreamRequest = StreamRequest;
StreamRequest.prototype.write = function (buf) {
if (this._ended) return;
if (buf === null || buf === undefined || buf.length === 0 || buf.byteLength === 0) {
this._ended = true;
buf = null;
}
this._sock._streams.set(this.id, this);
this._sock._with((core) => core.send(SEND_STREAM, this.id, this.op, buf));
};
StreamRequest.prototype.end = function () {
this.write(null);
};
Sock.prototype.streamRequest = function (op) {
return new StreamRequest(this, op);
};
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
function hostFor(sock) {
const on = [request, stream, part, notification, streamData, streamEnd];
return {
emit(name, arg) {
if (name === 'close') {
sock._opening = false;
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
function streamEnd(sock, _name, token, _b, err) {
const s = sock._streams.get(token);
if (!s) return;
sock._streams.delete(token);
s._ended = true;
s.emit('end', err);
}
Sock.prototype.relay = function (to, topic, body) {
return this.request('$relay', { to, topic, body });
};
Sock.prototype.relayNotify = function (to, topic, body) {
return this.notify('$relay', { to, topic, body });
};
Object.defineProperty(Sock.prototype, 'id', {
get() { return this._relayId; },
enumerable: true,
});
const RELAY_NOTES = Object.assign(Object.create(null), {
$id(sock, id) {
sock._relayId = id;
sock.emit('id', id);
},
$relay(sock, message) { sock.emit('relay', message); },
$undelivered(sock, notice) { sock.emit('undelivered', notice); },
});
gotalk.connection = function (addr, handlers, options) {
if (addr && typeof addr === 'object') {
options = addr;
addr = undefined;
}
return new Sock(handlers).openKeepAlive(addr, options);
};
gotalk.open = function (addr, cb, handlers) {
return new Sock(handlers).open(addr, cb);
};
globalThis.gotalk = gotalk;
})();
