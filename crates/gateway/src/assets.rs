//! Static files served from memory: the browser client bundle, and any site an app adds.
//!
//! The browser client bundle (this package's `client/` folder) is compiled into the binary (see
//! `build.rs`), so the server needs no files at run time and the client it serves always matches
//! the server that serves it. [`Assets`] compresses each file once, when it is added (gzip and
//! brotli, each kept only if smaller), and gives each representation its own strong ETag: a
//! cache that stored the gzip bytes must not revalidate them with the ETag of the identity bytes
//! (RFC 9110 §8.8.3), which is what the Go server gets wrong by tagging every encoding alike.
//!
//! A request negotiates the encoding from `Accept-Encoding` q-values, revalidates with
//! `If-None-Match` (lists, `W/` tags and `*`), and gets `Cache-Control: no-cache` unless it
//! names the file's current version in its query (`?v=…`), which makes the response immutable.
//!
//! # Examples
//! ```
//! use gotalk_gateway::Assets;
//!
//! let mut assets = Assets::new();
//! assets.insert("index.html", "<!DOCTYPE html><title>hi</title>");
//! assert!(assets.contains("index.html"));
//! let router: axum::Router = assets.into_router();
//! # drop(router);
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, VARY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use crate::compress;

/// A file compiled into the crate, with the compressed forms the build script made (each
/// only when smaller than `body`).
struct Embedded {
    /// `gotalk/` and the path in `client/`.
    path: &'static str,
    body: &'static [u8],
    gzip: Option<&'static [u8]>,
    br: Option<&'static [u8]>,
}

// Defines `EMBEDDED`: every file of the bundle.
include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// The folder the bundle's files are embedded under.
const BUNDLE_PREFIX: &str = "gotalk/";

/// For an unversioned URL: the file name carries no version and gotalk.js must match its wasm
/// exactly, so a cache revalidates on every use (a 304 costs only headers).
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
/// For a URL whose `v=` names the current content: that URL can never change.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const ALLOWED: HeaderValue = HeaderValue::from_static("GET, HEAD");
const ACCEPT_ENCODING_VALUE: HeaderValue = HeaderValue::from_static("accept-encoding");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// A set of files served from memory. Cheap to clone (Arc inside).
///
/// Paths are relative, with `/` between segments, and match request paths exactly: there is
/// no percent-decoding and no normalisation, so `..`, `%2e%2e`, a leading `/` or a backslash
/// can never reach a file that was not inserted under that exact name.
#[derive(Clone, Default)]
pub struct Assets {
    files: Arc<HashMap<String, Arc<File>>>,
}

impl fmt::Debug for Assets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut paths: Vec<&str> = self.paths().collect();
        paths.sort_unstable();
        f.debug_struct("Assets").field("paths", &paths).finish()
    }
}

impl Assets {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file; the Content-Type comes from the extension. Precompresses it once (gzip and
    /// brotli, each kept only if smaller than the original) and computes one strong ETag per
    /// representation.
    ///
    /// Compression runs on the calling thread (brotli at quality 11 is slow), so build the set
    /// before serving, not per request. Clones made earlier do not see the new file. A file
    /// already at `path` is replaced.
    ///
    /// Content types: `.js`/`.mjs` `application/javascript; charset=utf-8`, `.wasm`
    /// `application/wasm` (which `WebAssembly.instantiateStreaming` requires), `.ts`/`.d.ts`
    /// `application/typescript; charset=utf-8`, `.html`, `.css`, `.json`, `.map`, `.svg`,
    /// `.png`, `.jpg`, `.gif`, `.webp`, `.ico`, `.woff2`, `.txt`; anything else
    /// `application/octet-stream`.
    ///
    /// # Panics
    /// If `path` is not a clean relative path: empty, or with a leading or trailing `/`, an
    /// empty, `.` or `..` segment, a backslash or a control character. Such a file could never
    /// be requested.
    pub fn insert(&mut self, path: &str, body: impl Into<Bytes>) -> &mut Self {
        self.insert_typed(path, content_type(path), body)
    }

    /// Adds a file with an explicit Content-Type; otherwise as [`insert`](Self::insert).
    ///
    /// # Panics
    /// If `path` is not a clean relative path (see [`insert`](Self::insert)) or `content_type`
    /// is not a valid header value.
    pub fn insert_typed(
        &mut self,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> &mut Self {
        assert!(is_clean(path), "Assets::insert: {path:?} is not a clean relative path");
        let Ok(content_type) = HeaderValue::from_str(content_type) else {
            panic!("Assets::insert: {content_type:?} is not a valid Content-Type");
        };
        let file = File::new(content_type, body.into());
        Arc::make_mut(&mut self.files).insert(path.to_owned(), Arc::new(file));
        self
    }

    /// Every file compiled into the binary: the bundle, under `gotalk/`.
    ///
    /// The files were compressed when the crate was built (gzip level 9, brotli quality 11);
    /// the first call only hashes them for their ETags, and every later one shares the set.
    pub fn embedded() -> Self {
        static EMBEDDED_ASSETS: OnceLock<Assets> = OnceLock::new();
        EMBEDDED_ASSETS
            .get_or_init(|| {
                let mut assets = Assets::new();
                for embedded in EMBEDDED {
                    let file = File::precompressed(
                        HeaderValue::from_static(content_type(embedded.path)),
                        Bytes::from_static(embedded.body),
                        embedded.gzip.map(Bytes::from_static),
                        embedded.br.map(Bytes::from_static),
                    );
                    let files = Arc::make_mut(&mut assets.files);
                    files.insert(embedded.path.to_owned(), Arc::new(file));
                }
                assets
            })
            .clone()
    }

    /// The browser client bundle: the embedded files under `gotalk/`, with that prefix removed.
    pub fn bundle() -> Self {
        Self::embedded().under(BUNDLE_PREFIX)
    }

    /// How many files the set holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the set holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// True when a file is stored at exactly `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// The path of every file, in no particular order.
    pub fn paths(&self) -> impl Iterator<Item = &str> + '_ {
        self.files.keys().map(String::as_str)
    }

    /// The version of the file at `path`: a short hex hash of its content.
    ///
    /// A URL with `?v=<version>` is served as immutable (cached for a year without
    /// revalidation) as long as the file still has that version; link to the bundle that way
    /// from pages that are themselves revalidated.
    pub fn version(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|file| file.version.as_str())
    }

    /// Answers a request for `path` (relative, no leading slash; "" or a path ending in '/'
    /// means that folder's index.html). None when no such file exists, so the caller can
    /// route the request elsewhere (the gateway turns other paths into WebSocket upgrades).
    ///
    /// GET and HEAD get 200 or, when `If-None-Match` matches the ETag of the representation
    /// that would be sent, 304. Any other method gets 405 with `Allow: GET, HEAD`. `query` is
    /// the URL's query string without the `?`; see [`version`](Self::version).
    ///
    /// `Vary: Accept-Encoding` is sent for files that have a compressed variant and omitted
    /// for the others, since their response does not depend on that header. A request that
    /// accepts none of the available encodings (`identity;q=0` on a file that did not
    /// compress) gets identity anyway: RFC 9110 §12.1 lets a server disregard the header
    /// rather than answer 406, and a browser is better served by the file.
    pub fn respond(
        &self,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Option<Response> {
        let key = if path.is_empty() || path.ends_with('/') {
            Cow::Owned(format!("{path}index.html"))
        } else {
            Cow::Borrowed(path)
        };
        // Keys are clean (insert checks), so this only spares the lookup; it also keeps the
        // rule visible here, where untrusted paths arrive.
        if !is_clean(&key) {
            return None;
        }
        let file = self.files.get(key.as_ref())?;
        Some(file.respond(method, headers, query))
    }

    /// A router serving every file at its path (and index.html for folders); 404 for others.
    ///
    /// Each file is its own route, so the router can be merged into another one; paths are
    /// matched exactly as requested, without percent-decoding.
    pub fn into_router(self) -> Router {
        let mut routes: Vec<(String, String)> = Vec::new();
        for path in self.files.keys() {
            routes.push((format!("/{}", escape_route(path)), path.clone()));
            // A folder's URL ("/", "docs/") serves its index.html.
            if let Some(folder) = path.strip_suffix("index.html") {
                if folder.is_empty() || folder.ends_with('/') {
                    routes.push((format!("/{}", escape_route(folder)), folder.to_owned()));
                }
            }
        }
        routes.sort_unstable();

        // Our paths are literal file names, so a segment starting with ':' or '*' is a file,
        // not axum 0.7 capture syntax.
        let mut router = Router::new().without_v07_checks();
        for (route, key) in routes {
            let assets = self.clone();
            router = router.route(
                &route,
                any(move |method: Method, headers: HeaderMap, uri: Uri| async move {
                    assets.respond(&key, &method, &headers, uri.query()).unwrap_or_else(not_found)
                }),
            );
        }
        router
    }

    /// The files under `prefix`, with the prefix removed.
    fn under(&self, prefix: &str) -> Self {
        let files = self
            .files
            .iter()
            .filter_map(|(path, file)| Some((path.strip_prefix(prefix)?.to_owned(), file.clone())))
            .filter(|(path, _)| !path.is_empty())
            .collect();
        Assets { files: Arc::new(files) }
    }
}

/// One file: its bytes in every encoding worth keeping, each with its own ETag.
struct File {
    content_type: HeaderValue,
    /// A short hex hash of the identity bytes, for `?v=` URLs.
    version: String,
    identity: Representation,
    gzip: Option<Representation>,
    br: Option<Representation>,
}

/// The bytes of a file in one content coding, and their strong ETag.
struct Representation {
    body: Bytes,
    etag: HeaderValue,
}

impl Representation {
    fn new(body: Bytes) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        // 128 bits of SHA-256 cannot collide by accident; a hex string is a valid header value
        // and a valid opaque-tag.
        let tag = format!("\"{}\"", hex(&digest.as_ref()[..16]));
        let etag = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""));
        Representation { body, etag }
    }
}

impl File {
    fn new(content_type: HeaderValue, body: Bytes) -> Self {
        let (gzip, br) = if worth_compressing(&content_type) {
            // A variant that is not smaller would only cost bytes and a Vary header. The
            // encoders write to memory, so they do not fail.
            let smaller = |compressed: std::io::Result<Vec<u8>>| {
                compressed.ok().filter(|c| c.len() < body.len()).map(Bytes::from)
            };
            (smaller(compress::gzip(&body)), smaller(compress::brotli(&body, BROTLI_QUALITY)))
        } else {
            (None, None)
        };
        Self::precompressed(content_type, body, gzip, br)
    }

    /// A file whose compressed forms were made already (each only if smaller).
    fn precompressed(
        content_type: HeaderValue,
        body: Bytes,
        gzip: Option<Bytes>,
        br: Option<Bytes>,
    ) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        File {
            content_type,
            version: hex(&digest.as_ref()[..8]),
            identity: Representation::new(body),
            gzip: gzip.map(Representation::new),
            br: br.map(Representation::new),
        }
    }

    fn get(&self, coding: Coding) -> Option<&Representation> {
        match coding {
            Coding::Br => self.br.as_ref(),
            Coding::Gzip => self.gzip.as_ref(),
            Coding::Identity => Some(&self.identity),
        }
    }

    /// Whether the response depends on Accept-Encoding.
    fn has_alternatives(&self) -> bool {
        self.gzip.is_some() || self.br.is_some()
    }

    fn respond(&self, method: &Method, headers: &HeaderMap, query: Option<&str>) -> Response {
        let head = *method == Method::HEAD;
        if *method != Method::GET && !head {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response.headers_mut().insert(ALLOW, ALLOWED);
            response.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(0));
            return response;
        }

        let accept = AcceptEncoding::from_headers(headers);
        let coding = choose(accept.as_ref(), |coding| self.get(coding).is_some());
        let representation = self.get(coding).unwrap_or(&self.identity);
        let cache_control = if names_version(query, &self.version) { IMMUTABLE } else { NO_CACHE };

        // These are the headers a 304 must repeat from the 200 it stands for (RFC 9110
        // §15.4.5).
        let mut response = Response::new(Body::empty());
        let out = response.headers_mut();
        out.insert(ETAG, representation.etag.clone());
        out.insert(CACHE_CONTROL, cache_control);
        if self.has_alternatives() {
            out.insert(VARY, ACCEPT_ENCODING_VALUE);
        }

        let length = HeaderValue::from(representation.body.len());
        if none_match(headers, &representation.etag) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            if head {
                // axum fills in `content-length: 0` for a bodiless response that has none,
                // and hyper sends it on a HEAD, where it would claim an empty file. The real
                // length is allowed (RFC 9110 §8.6). On a GET, hyper drops the header anyway.
                response.headers_mut().insert(CONTENT_LENGTH, length);
            }
            return response;
        }

        let out = response.headers_mut();
        out.insert(CONTENT_TYPE, self.content_type.clone());
        // Set by hand, because a HEAD response has an empty body but the length of the GET's.
        out.insert(CONTENT_LENGTH, length);
        out.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
        if let Some(encoding) = coding.content_encoding() {
            out.insert(CONTENT_ENCODING, encoding);
        }
        if !head {
            *response.body_mut() = Body::from(representation.body.clone());
        }
        response
    }
}

/// The plain 404 of [`Assets::into_router`], for the route of a file that has since vanished
/// (which cannot happen: routes are made from the same set they serve).
fn not_found() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// A content coding the server can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Br,
    Gzip,
    Identity,
}

impl Coding {
    /// Every coding, in the order that breaks ties: the smallest representation first.
    const PREFERENCE: [Coding; 3] = [Coding::Br, Coding::Gzip, Coding::Identity];

    fn content_encoding(self) -> Option<HeaderValue> {
        match self {
            Coding::Br => Some(HeaderValue::from_static("br")),
            Coding::Gzip => Some(HeaderValue::from_static("gzip")),
            Coding::Identity => None,
        }
    }
}

/// The weights an `Accept-Encoding` field gives the codings we serve, in thousandths (a
/// qvalue has at most three decimals, so integers are exact).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct AcceptEncoding {
    br: Option<u16>,
    gzip: Option<u16>,
    identity: Option<u16>,
    /// The weight of `*`: every coding not named.
    any: Option<u16>,
}

impl AcceptEncoding {
    /// Reads every `Accept-Encoding` field of a request; None when there is none.
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(ACCEPT_ENCODING).iter().peekable();
        values.peek()?;
        let mut accept = AcceptEncoding::default();
        for value in values {
            accept.add(value.as_bytes());
        }
        Some(accept)
    }

    /// Adds the codings of one field value. A malformed element (a bad qvalue, an empty
    /// coding) is skipped rather than guessed at; when a coding is listed twice the first
    /// weight counts.
    fn add(&mut self, value: &[u8]) {
        for element in value.split(|&b| b == b',') {
            let mut parts = element.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let mut weight = Some(1000);
            for param in parts {
                let param = param.trim_ascii();
                if param.len() >= 2 && param[..2].eq_ignore_ascii_case(b"q=") {
                    weight = parse_qvalue(param[2..].trim_ascii());
                }
            }
            let Some(weight) = weight else { continue };
            let slot = if coding.eq_ignore_ascii_case(b"br") {
                &mut self.br
            } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip")
            {
                // RFC 9110 §8.4.1.3: x-gzip is gzip.
                &mut self.gzip
            } else if coding.eq_ignore_ascii_case(b"identity") {
                &mut self.identity
            } else if coding == b"*" {
                &mut self.any
            } else {
                continue;
            };
            slot.get_or_insert(weight);
        }
    }

    /// The weight of `coding`; 0 means not acceptable.
    fn weight(&self, coding: Coding) -> u16 {
        match coding {
            Coding::Br => self.br.or(self.any).unwrap_or(0),
            Coding::Gzip => self.gzip.or(self.any).unwrap_or(0),
            // Identity stays acceptable unless excluded (RFC 9110 §12.5.3), but a client that
            // names only `gzip;q=0.5` still prefers gzip, so the unnamed identity weighs less
            // than any named coding.
            Coding::Identity => self.identity.or(self.any).unwrap_or(1),
        }
    }
}

/// Parses a qvalue (`0`, `0.5`, `1.000`…) into thousandths; None if malformed.
fn parse_qvalue(s: &[u8]) -> Option<u16> {
    let (whole, fraction) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &b""[..]),
    };
    let mut weight: u16 = match whole {
        b"0" => 0,
        b"1" => 1000,
        _ => return None,
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    for (digit, scale) in fraction.iter().zip([100, 10, 1]) {
        weight += u16::from(digit - b'0') * scale;
    }
    (weight <= 1000).then_some(weight)
}

/// Picks the acceptable available coding with the highest weight, preferring br, then gzip,
/// then identity on ties. No `Accept-Encoding` means identity; so does a field that accepts
/// nothing available (see [`Assets::respond`]).
fn choose(accept: Option<&AcceptEncoding>, available: impl Fn(Coding) -> bool) -> Coding {
    let Some(accept) = accept else { return Coding::Identity };
    let mut best: Option<(Coding, u16)> = None;
    for coding in Coding::PREFERENCE {
        let weight = accept.weight(coding);
        if weight == 0 || !available(coding) {
            continue;
        }
        // Strictly greater, so an earlier (preferred) coding keeps a tie.
        if best.is_none_or(|(_, best_weight)| weight > best_weight) {
            best = Some((coding, weight));
        }
    }
    best.map_or(Coding::Identity, |(coding, _)| coding)
}

/// Whether any `If-None-Match` field of a request matches `etag`.
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|value| matches_etag(value.as_bytes(), etag.as_bytes()))
}

/// Whether an `If-None-Match` field value (`*` or a list of entity tags) matches `etag`, by
/// weak comparison (RFC 9110 §13.1.2): opaque tags equal, whatever their `W/` prefixes.
///
/// Commas may appear inside a quoted tag, so the list is scanned rather than split. An
/// element that is not a quoted tag is skipped up to the next comma; an unterminated quote
/// ends the list.
fn matches_etag(value: &[u8], etag: &[u8]) -> bool {
    let value = value.trim_ascii();
    if value == b"*" {
        return true;
    }
    let etag = etag.strip_prefix(b"W/").unwrap_or(etag);
    let mut rest = value;
    loop {
        let start = rest.iter().position(|&b| b != b',' && !b.is_ascii_whitespace());
        let Some(start) = start else { return false };
        rest = &rest[start..];
        let tag = rest.strip_prefix(b"W/").unwrap_or(rest);
        if tag.first() == Some(&b'"') {
            let Some(end) = tag[1..].iter().position(|&b| b == b'"') else { return false };
            let (opaque, after) = tag.split_at(end + 2);
            if opaque == etag {
                return true;
            }
            rest = after;
        } else {
            let Some(comma) = rest.iter().position(|&b| b == b',') else { return false };
            rest = &rest[comma + 1..];
        }
    }
}

/// Whether the query string has a `v` parameter equal to `version`.
fn names_version(query: Option<&str>, version: &str) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .any(|(k, v)| k == "v" && v == version)
    })
}

/// Whether `path` is relative, `/`-separated, and free of empty, `.` and `..` segments,
/// backslashes and control characters.
fn is_clean(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(|c: char| c == '\\' || c.is_control())
        && path.split('/').all(|segment| !matches!(segment, "" | "." | ".."))
}

/// The Content-Type for a file name, from its extension.
fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name.rsplit_once('.').map_or("", |(_, extension)| extension);
    match extension.to_ascii_lowercase().as_str() {
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        // Covers `.d.ts` as well.
        "ts" | "mts" => "application/typescript; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// False for formats that are compressed already, where gzip and brotli would only spend
/// start-up time to save nothing.
fn worth_compressing(content_type: &HeaderValue) -> bool {
    !matches!(
        content_type.as_bytes(),
        b"image/png" | b"image/jpeg" | b"image/gif" | b"image/webp" | b"font/woff2"
    )
}

/// Brotli's quality: the best in release builds. Unoptimised, quality 11 takes seconds for a
/// few hundred kilobytes, which would make every debug start of the server (and every test
/// that starts one) wait; quality 5 is within a few percent of its size, in milliseconds. (The
/// embedded bundle is compressed at 11 by the build script either way.)
const BROTLI_QUALITY: i32 = if cfg!(debug_assertions) { 5 } else { 11 };

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// `path` as a literal axum route: `{` and `}` are doubled so they are not captures.
fn escape_route(path: &str) -> String {
    path.replace('{', "{{").replace('}', "}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> AcceptEncoding {
        let mut accept = AcceptEncoding::default();
        accept.add(value.as_bytes());
        accept
    }

    fn pick(value: Option<&str>) -> Coding {
        choose(value.map(accept).as_ref(), |_| true)
    }

    #[test]
    fn qvalues_parse_strictly() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1."), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0.001"), Some(1));
        for bad in [&b""[..], b"1.5", b"1.001", b"2", b"0.0001", b"-1", b".5", b"0,5", b"q", b"0.x"]
        {
            assert_eq!(parse_qvalue(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn accept_encoding_reads_weights() {
        assert_eq!(
            accept(" GZip ;Q=0.5 , br;q=0, identity ; q=1, *;q=0.1"),
            AcceptEncoding { br: Some(0), gzip: Some(500), identity: Some(1000), any: Some(100) }
        );
        assert_eq!(accept("x-gzip").gzip, Some(1000));
        // The first weight of a repeated coding counts; unknown codings are ignored.
        assert_eq!(accept("br;q=0.2, br, zstd, deflate").br, Some(200));
        // A malformed weight drops its element, not the field.
        assert_eq!(
            accept("br;q=high, gzip"),
            AcceptEncoding { gzip: Some(1000), ..Default::default() }
        );
        // Other parameters are ignored.
        assert_eq!(accept("gzip;level=9;q=0.3").gzip, Some(300));
    }

    #[test]
    fn accept_encoding_survives_garbage() {
        for garbage in
            ["", ",,,", ";;;", "q=1", ";q=0.5", "\u{fffd}\u{0}", "br;q=", "*;q=1.5", "\"br\""]
        {
            let parsed = accept(garbage);
            assert_eq!(parsed.br, None, "{garbage:?}");
            assert_eq!(parsed.gzip, None, "{garbage:?}");
        }
        let mut raw = AcceptEncoding::default();
        raw.add(&[0xff, b',', 0x80, b';', b'q', b'=', 0xc3]);
        assert_eq!(raw, AcceptEncoding::default());
    }

    #[test]
    fn negotiation_follows_weights_then_preference() {
        assert_eq!(pick(None), Coding::Identity);
        assert_eq!(pick(Some("")), Coding::Identity);
        assert_eq!(pick(Some("gzip, deflate, br")), Coding::Br);
        assert_eq!(pick(Some("gzip, br;q=0")), Coding::Gzip);
        assert_eq!(pick(Some("br;q=0.5, gzip;q=0.8")), Coding::Gzip);
        assert_eq!(pick(Some("gzip;q=0.5")), Coding::Gzip);
        assert_eq!(pick(Some("*")), Coding::Br);
        assert_eq!(pick(Some("*;q=0.1, gzip;q=0.2")), Coding::Gzip);
        assert_eq!(pick(Some("identity, gzip")), Coding::Gzip);
        assert_eq!(pick(Some("identity;q=1, gzip;q=0.9")), Coding::Identity);
        assert_eq!(pick(Some("br;q=0, gzip;q=0")), Coding::Identity);
        assert_eq!(pick(Some("*;q=0, identity")), Coding::Identity);
        // Nothing acceptable: the header is disregarded.
        assert_eq!(pick(Some("identity;q=0, *;q=0")), Coding::Identity);
        // Only what exists can be chosen.
        let gzip_only = |coding| coding != Coding::Br;
        assert_eq!(choose(Some(&accept("br, gzip;q=0.1")), gzip_only), Coding::Gzip);
        assert_eq!(choose(Some(&accept("br")), gzip_only), Coding::Identity);
    }

    const TAG: &[u8] = b"\"0123abcd\"";

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(matches_etag(b"\"0123abcd\"", TAG));
        assert!(matches_etag(b"W/\"0123abcd\"", TAG));
        assert!(matches_etag(b"  \"0123abcd\"  ", TAG));
        assert!(matches_etag(b"\"0123abcd\"", b"W/\"0123abcd\""));
        assert!(!matches_etag(b"\"0123abcde\"", TAG));
        assert!(!matches_etag(b"\"0123ABCD\"", TAG));
        assert!(!matches_etag(b"0123abcd", TAG));
        assert!(!matches_etag(b"w/\"0123abcd\"", TAG));
    }

    #[test]
    fn if_none_match_reads_lists_and_star() {
        assert!(matches_etag(b"*", TAG));
        assert!(matches_etag(b" * ", TAG));
        assert!(matches_etag(b"\"a\", \"0123abcd\", \"b\"", TAG));
        assert!(matches_etag(b"\"a\",W/\"0123abcd\"", TAG));
        assert!(matches_etag(b",, \"a\" ,,\"0123abcd\"", TAG));
        // A comma inside a tag does not split it.
        assert!(!matches_etag(b"\"x,\"0123abcd\"\"", TAG));
        assert!(matches_etag(b"\"x,y\", \"0123abcd\"", TAG));
        // A malformed element is skipped.
        assert!(matches_etag(b"bogus, \"0123abcd\"", TAG));
        assert!(!matches_etag(b"\"a\", \"b\"", TAG));
    }

    #[test]
    fn if_none_match_survives_garbage() {
        let garbage: [&[u8]; 12] = [
            b"",
            b"W/",
            b"W/\"",
            b"\"",
            b"\"0123abcd",
            b",",
            b"**",
            b"\"\"",
            b"W/W/\"0123abcd\"",
            &[0xff, 0xfe, b'"', 0x80],
            b"\"a\"\"0123abcd",
            b"*, \"a\"",
        ];
        for value in garbage {
            assert!(!matches_etag(value, TAG), "{:?}", String::from_utf8_lossy(value));
        }
        // Juxtaposed tags without a comma are read leniently, one after the other.
        assert!(matches_etag(b"\"a\"\"0123abcd\"", TAG));
    }

    #[test]
    fn version_query_must_name_the_version() {
        assert!(names_version(Some("v=abc"), "abc"));
        assert!(names_version(Some("x=1&v=abc"), "abc"));
        assert!(!names_version(Some("v=abd"), "abc"));
        assert!(!names_version(Some("v=abc1"), "abc"));
        assert!(!names_version(Some("vv=abc"), "abc"));
        assert!(!names_version(Some("v"), "abc"));
        assert!(!names_version(Some(""), "abc"));
        assert!(!names_version(None, "abc"));
    }

    #[test]
    fn only_clean_paths_are_keys() {
        for clean in ["index.html", "gotalk/gotalk.js", "a/b/c.d.ts", "..a", "a..", "%2e%2e"] {
            assert!(is_clean(clean), "{clean:?}");
        }
        for dirty in [
            "",
            "/",
            "/index.html",
            "a/",
            "a//b",
            "../a",
            "a/../b",
            "a/..",
            "./a",
            "a\\b",
            "a\0",
            "a\nb",
        ] {
            assert!(!is_clean(dirty), "{dirty:?}");
        }
    }

    #[test]
    fn content_types_come_from_extensions() {
        assert_eq!(content_type("gotalk/gotalk.js"), "application/javascript; charset=utf-8");
        assert_eq!(content_type("gotalk.mjs"), "application/javascript; charset=utf-8");
        assert_eq!(content_type("gotalk_bg.wasm"), "application/wasm");
        assert_eq!(content_type("gotalk.d.ts"), "application/typescript; charset=utf-8");
        assert_eq!(content_type("gotalk.d.mts"), "application/typescript; charset=utf-8");
        assert_eq!(content_type("INDEX.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("a.js.map"), "application/json");
        assert_eq!(content_type("favicon.ico"), "image/x-icon");
        assert_eq!(content_type("v1.0/README"), "application/octet-stream");
        assert_eq!(content_type("Makefile"), "application/octet-stream");
    }

    #[test]
    fn each_representation_has_its_own_etag() {
        let body = "function ping() { return 'pong'; }\n".repeat(100);
        let file = File::new(HeaderValue::from_static("text/plain"), Bytes::from(body.clone()));
        let gzip = file.gzip.as_ref().expect("gzip kept");
        let br = file.br.as_ref().expect("br kept");
        assert!(gzip.body.len() < body.len() && br.body.len() < body.len());
        let tags = [&file.identity.etag, &gzip.etag, &br.etag];
        assert_ne!(tags[0], tags[1]);
        assert_ne!(tags[0], tags[2]);
        assert_ne!(tags[1], tags[2]);
        for tag in tags {
            let tag = tag.to_str().expect("ascii");
            assert_eq!(tag.len(), 34, "{tag}");
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        }
        assert_eq!(file.version.len(), 16);
        assert!(file.identity.etag.to_str().expect("ascii")[1..].starts_with(&file.version));
    }

    #[test]
    fn variants_are_kept_only_when_smaller() {
        let file = File::new(HeaderValue::from_static("text/plain"), Bytes::from_static(b"hi"));
        assert!(file.gzip.is_none() && file.br.is_none());
        assert!(!file.has_alternatives());
        let png = File::new(HeaderValue::from_static("image/png"), Bytes::from(vec![0; 4096]));
        assert!(!png.has_alternatives());
    }

    #[test]
    fn the_bundle_is_the_files_under_the_prefix() {
        let mut all = Assets::new();
        all.insert("index.html", "<p>demo</p>")
            .insert("gotalk/gotalk.js", "export {}")
            .insert("gotalk/gotalk_bg.wasm", &b"\0asm\x01\0\0\0"[..])
            .insert("gotalkish.txt", "not the bundle");
        let bundle = all.under(BUNDLE_PREFIX);
        let mut paths: Vec<&str> = bundle.paths().collect();
        paths.sort_unstable();
        assert_eq!(paths, ["gotalk.js", "gotalk_bg.wasm"]);
        assert_eq!(bundle.version("gotalk.js"), all.version("gotalk/gotalk.js"));
    }

    #[test]
    fn requests_for_unclean_paths_find_nothing() {
        let mut assets = Assets::new();
        assets.insert("index.html", "<p>demo</p>").insert("a/index.html", "<p>a</p>");
        let get = |path: &str| assets.respond(path, &Method::GET, &HeaderMap::new(), None);
        assert!(get("").is_some());
        assert!(get("index.html").is_some());
        assert!(get("a/").is_some());
        for path in ["/", "/index.html", "a", "a//", "../index.html", "a/../index.html", "./"] {
            assert!(get(path).is_none(), "{path:?}");
        }
    }

    #[test]
    #[should_panic(expected = "not a clean relative path")]
    fn inserting_an_unclean_path_panics() {
        Assets::new().insert("../secret", "x");
    }

    #[test]
    fn the_bundle_was_compressed_when_the_crate_was_built() {
        use std::io::Read as _;
        assert!(EMBEDDED.iter().any(|e| e.path == "gotalk/gotalk_bg.wasm"));
        for embedded in EMBEDDED {
            let (Some(gzip), Some(br)) = (embedded.gzip, embedded.br) else {
                panic!("{}: text and wasm compress, so both forms must be there", embedded.path);
            };
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(gzip).read_to_end(&mut out).expect("valid gzip");
            assert_eq!(out, embedded.body, "{}", embedded.path);
            out.clear();
            brotli::Decompressor::new(br, 4096).read_to_end(&mut out).expect("valid brotli");
            assert_eq!(out, embedded.body, "{}", embedded.path);
            assert!(br.len() < gzip.len(), "{}: brotli at quality 11 beats gzip", embedded.path);
        }
    }

    #[test]
    fn embedded_files_match_the_generated_table() {
        let embedded = Assets::embedded();
        assert_eq!(embedded.len(), EMBEDDED.len());
        assert_eq!(Assets::bundle().len(), embedded.len());
    }
}
