//! HTTP tests of [`Assets`] against a real server on `127.0.0.1:0`, over real sockets.
//!
//! The client is a few lines of raw HTTP/1.1 with `Connection: close`: it reads everything the
//! server sends until the socket closes, so no header is added, merged or hidden and a body
//! byte sent where none belongs (after a HEAD or a 304) would show.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use gotalk_gateway::Assets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The most any single step of a test may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

const JS: &str = "application/javascript; charset=utf-8";
const NO_CACHE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {WAIT:?}"),
    }
}

/// A few KB of repetitive JavaScript: gzip and brotli both shrink it.
fn js_body() -> Vec<u8> {
    let mut body = String::new();
    for i in 0..200 {
        body.push_str(&format!(
            "export function op{i}(sock, x) {{ return sock.request('op{i}', x); }}\n"
        ));
    }
    body.into_bytes()
}

/// A wasm module header followed by compressible filler.
fn wasm_body() -> Vec<u8> {
    let mut body = b"\0asm\x01\0\0\0".to_vec();
    body.extend((0..4096u32).map(|i| (i % 7) as u8));
    body
}

/// The files every test serves, compressed once per test binary.
fn fixtures() -> Assets {
    static FIXTURES: OnceLock<Assets> = OnceLock::new();
    FIXTURES
        .get_or_init(|| {
            let mut assets = Assets::new();
            assets
                .insert("gotalk.js", js_body())
                .insert("gotalk_bg.wasm", wasm_body())
                .insert("gotalk.d.ts", "export {};\n")
                .insert("index.html", "<!DOCTYPE html><title>root</title>")
                .insert("docs/index.html", "<!DOCTYPE html><title>docs</title>")
                .insert("tiny.txt", "hi\n");
            assets
        })
        .clone()
}

/// A server on an ephemeral port; dropping it starts a graceful shutdown.
struct Site {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

async fn serve(assets: Assets) -> Site {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, assets.into_router())
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await
    });
    Site { addr, _shutdown: shutdown }
}

/// One response exactly as it came off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Lower-case names, in the order sent.
    headers: Vec<(String, String)>,
    /// Every byte after the header block, up to the end of the connection.
    body: Vec<u8>,
}

impl Reply {
    /// The value of header `name`, which must appear at most once.
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let value = values.next();
        assert_eq!(values.next(), None, "header {name} repeated in {:?}", self.headers);
        value
    }

    /// The value of header `name`, which must appear exactly once.
    fn must(&self, name: &str) -> &str {
        self.header(name).unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// Every header but `date` (which changes by the second) and `connection` (which is about
    /// the connection, not the response), sorted by name.
    fn fields(&self) -> BTreeMap<&str, &str> {
        let fields: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .filter(|(name, _)| name != "date" && name != "connection")
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let kept = self.headers.iter().filter(|(name, _)| name != "date" && name != "connection");
        assert_eq!(kept.count(), fields.len(), "repeated header in {:?}", self.headers);
        fields
    }

    /// The header names of [`fields`](Self::fields).
    fn names(&self) -> Vec<&str> {
        self.fields().into_keys().collect()
    }
}

impl Site {
    /// Sends `method target` with `headers` and reads the whole response.
    async fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nhost: {}\r\n", self.addr);
        raw.push_str("connection: close\r\n");
        if matches!(method, "POST" | "PUT" | "PATCH") {
            raw.push_str("content-length: 0\r\n");
        }
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        self.request_raw(raw.as_bytes()).await
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", target, headers).await
    }

    /// Sends `raw` bytes as the request and reads until the server closes.
    async fn request_raw(&self, raw: &[u8]) -> Reply {
        let received = within("HTTP exchange", async {
            let mut stream = TcpStream::connect(self.addr).await.expect("connect");
            stream.write_all(raw).await.expect("send request");
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.expect("read response");
            received
        })
        .await;
        parse(&received)
    }
}

fn parse(raw: &[u8]) -> Reply {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = std::str::from_utf8(&raw[..end]).expect("ASCII header block");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().and_then(|s| s.parse().ok()).expect("status code");
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Reply { status, headers, body: raw[end + 4..].to_vec() }
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out).expect("valid gzip");
    out
}

fn unbrotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(body, 4096).read_to_end(&mut out).expect("valid brotli");
    out
}

/// The ETag the server should give exactly these bytes: 128 bits of their SHA-256.
fn etag_of(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// A content coding as the tests name it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Coding {
    Identity,
    Gzip,
    Br,
}

/// Asserts a complete 200 for a file that has compressed variants: every header, and a body
/// that is `original` once decoded and whose hash is the ETag. Returns the ETag.
fn assert_full(reply: &Reply, coding: Coding, content_type: &str, original: &[u8]) -> String {
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut names = vec![
        "cache-control",
        "content-length",
        "content-type",
        "etag",
        "vary",
        "x-content-type-options",
    ];
    if coding != Coding::Identity {
        names.push("content-encoding");
        names.sort_unstable();
    }
    assert_eq!(reply.names(), names);
    assert_eq!(reply.must("content-type"), content_type);
    assert_eq!(reply.must("cache-control"), NO_CACHE);
    assert_eq!(reply.must("vary"), "accept-encoding");
    assert_eq!(reply.must("x-content-type-options"), "nosniff");
    assert_eq!(reply.must("content-length"), reply.body.len().to_string());
    assert_eq!(reply.must("etag"), etag_of(&reply.body));
    let decoded = match coding {
        Coding::Identity => reply.body.clone(),
        Coding::Gzip => {
            assert_eq!(reply.must("content-encoding"), "gzip");
            gunzip(&reply.body)
        }
        Coding::Br => {
            assert_eq!(reply.must("content-encoding"), "br");
            unbrotli(&reply.body)
        }
    };
    if coding != Coding::Identity {
        assert!(reply.body.len() < original.len(), "{coding:?} is not smaller");
    }
    assert_eq!(decoded, original);
    reply.must("etag").to_owned()
}

/// Asserts a 304: the validators and caching headers of the 200 it stands for, and nothing
/// else, with no body.
fn assert_not_modified(reply: &Reply, etag: &str, cache_control: &str) {
    assert_eq!(reply.status, 304, "{reply:?}");
    assert_eq!(reply.names(), ["cache-control", "etag", "vary"]);
    assert_eq!(reply.must("etag"), etag);
    assert_eq!(reply.must("cache-control"), cache_control);
    assert_eq!(reply.must("vary"), "accept-encoding");
    assert!(reply.body.is_empty(), "304 with a body: {reply:?}");
}

/// The ETags of gotalk.js in identity, gzip and br, as served.
async fn js_etags(site: &Site) -> [String; 3] {
    let js = js_body();
    let identity = assert_full(&site.get("/gotalk.js", &[]).await, Coding::Identity, JS, &js);
    let gzip = site.get("/gotalk.js", &[("accept-encoding", "gzip")]).await;
    let gzip = assert_full(&gzip, Coding::Gzip, JS, &js);
    let br = site.get("/gotalk.js", &[("accept-encoding", "br")]).await;
    let br = assert_full(&br, Coding::Br, JS, &js);
    [identity, gzip, br]
}

#[tokio::test]
async fn serves_identity_without_accept_encoding() {
    let site = serve(fixtures()).await;
    let reply = site.get("/gotalk.js", &[]).await;
    assert_full(&reply, Coding::Identity, JS, &js_body());
}

#[tokio::test]
async fn serves_gzip_and_br_with_an_etag_each() {
    let site = serve(fixtures()).await;
    let js = js_body();
    let gzip = site.get("/gotalk.js", &[("accept-encoding", "gzip")]).await;
    assert_full(&gzip, Coding::Gzip, JS, &js);
    let br = site.get("/gotalk.js", &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_full(&br, Coding::Br, JS, &js);

    let [identity, gzip, br] = js_etags(&site).await;
    assert_ne!(identity, gzip);
    assert_ne!(identity, br);
    assert_ne!(gzip, br);
}

#[tokio::test]
async fn negotiates_by_q_value_then_preference() {
    let site = serve(fixtures()).await;
    let js = js_body();
    let cases = [
        ("br;q=0, gzip", Coding::Gzip),
        ("gzip, br;q=0", Coding::Gzip),
        ("br;q=0.5, gzip;q=0.8", Coding::Gzip),
        ("br;q=0.8, gzip;q=0.5", Coding::Br),
        ("gzip;q=0.5", Coding::Gzip),
        ("GZIP ; Q=0.5 ,  BR ; q=0.4", Coding::Gzip),
        ("*", Coding::Br),
        ("*;q=0.1, gzip;q=0.2", Coding::Gzip),
        ("*;q=0.3, br;q=0.2", Coding::Gzip),
        ("identity, gzip", Coding::Gzip),
        ("identity;q=1, br;q=0.9", Coding::Identity),
        ("br;q=0, gzip;q=0", Coding::Identity),
        ("deflate, zstd", Coding::Identity),
        ("", Coding::Identity),
        ("x-gzip", Coding::Gzip),
        ("br;q=nonsense, gzip;q=0.1", Coding::Gzip),
        // Nothing acceptable: the header is disregarded rather than answered with a 406.
        ("identity;q=0, *;q=0", Coding::Identity),
    ];
    for (accept, coding) in cases {
        let reply = site.get("/gotalk.js", &[("accept-encoding", accept)]).await;
        assert_full(&reply, coding, JS, &js);
    }

    // Several Accept-Encoding lines are one list.
    let reply = site
        .get("/gotalk.js", &[("accept-encoding", "gzip;q=0.1"), ("accept-encoding", "br;q=0.2")])
        .await;
    assert_full(&reply, Coding::Br, JS, &js);
}

#[tokio::test]
async fn serves_wasm_and_typescript_with_their_content_types() {
    let site = serve(fixtures()).await;
    let wasm = wasm_body();
    let reply = site.get("/gotalk_bg.wasm", &[]).await;
    assert_full(&reply, Coding::Identity, "application/wasm", &wasm);
    let reply = site.get("/gotalk_bg.wasm", &[("accept-encoding", "gzip, br")]).await;
    assert_full(&reply, Coding::Br, "application/wasm", &wasm);

    // Too short to compress: no variants, so no Vary and no Content-Encoding.
    let reply = site.get("/gotalk.d.ts", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(reply.status, 200);
    let body = b"export {};\n";
    assert_eq!(
        reply.fields(),
        BTreeMap::from([
            ("cache-control", NO_CACHE),
            ("content-length", body.len().to_string().as_str()),
            ("content-type", "application/typescript; charset=utf-8"),
            ("etag", etag_of(body).as_str()),
            ("x-content-type-options", "nosniff"),
        ])
    );
    assert_eq!(reply.body, body);
}

#[tokio::test]
async fn identity_excluded_on_an_uncompressed_file_still_gets_the_file() {
    let site = serve(fixtures()).await;
    let reply = site.get("/tiny.txt", &[("accept-encoding", "identity;q=0")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.names(),
        ["cache-control", "content-length", "content-type", "etag", "x-content-type-options"]
    );
    assert_eq!(reply.must("content-type"), "text/plain; charset=utf-8");
    assert_eq!(reply.must("content-length"), "3");
    assert_eq!(reply.must("etag"), etag_of(b"hi\n"));
    assert_eq!(reply.body, b"hi\n");
}

#[tokio::test]
async fn if_none_match_with_the_etag_is_not_modified() {
    let site = serve(fixtures()).await;
    let [identity, gzip, br] = js_etags(&site).await;

    let reply = site.get("/gotalk.js", &[("if-none-match", &identity)]).await;
    assert_not_modified(&reply, &identity, NO_CACHE);

    // Each compressed representation revalidates with its own ETag.
    let reply =
        site.get("/gotalk.js", &[("accept-encoding", "gzip"), ("if-none-match", &gzip)]).await;
    assert_not_modified(&reply, &gzip, NO_CACHE);
    let reply = site.get("/gotalk.js", &[("accept-encoding", "br"), ("if-none-match", &br)]).await;
    assert_not_modified(&reply, &br, NO_CACHE);
}

#[tokio::test]
async fn if_none_match_reads_lists_weak_tags_and_star() {
    let site = serve(fixtures()).await;
    let [identity, _, br] = js_etags(&site).await;

    let list = format!("\"0000\", {identity}, \"ffff\"");
    let reply = site.get("/gotalk.js", &[("if-none-match", &list)]).await;
    assert_not_modified(&reply, &identity, NO_CACHE);

    let tight = format!("\"a,b\",{br}");
    let reply =
        site.get("/gotalk.js", &[("accept-encoding", "br"), ("if-none-match", &tight)]).await;
    assert_not_modified(&reply, &br, NO_CACHE);

    let weak = format!("W/{identity}");
    let reply = site.get("/gotalk.js", &[("if-none-match", &weak)]).await;
    assert_not_modified(&reply, &identity, NO_CACHE);

    let reply = site.get("/gotalk.js", &[("if-none-match", "*")]).await;
    assert_not_modified(&reply, &identity, NO_CACHE);
    let reply = site.get("/gotalk.js", &[("accept-encoding", "br"), ("if-none-match", "*")]).await;
    assert_not_modified(&reply, &br, NO_CACHE);

    // Several If-None-Match lines are one list.
    let reply = site
        .get("/gotalk.js", &[("if-none-match", "\"0000\""), ("if-none-match", &identity)])
        .await;
    assert_not_modified(&reply, &identity, NO_CACHE);
}

#[tokio::test]
async fn if_none_match_with_another_etag_gets_the_file() {
    let site = serve(fixtures()).await;
    let js = js_body();
    let [identity, gzip, br] = js_etags(&site).await;

    let reply = site.get("/gotalk.js", &[("if-none-match", "\"0000\"")]).await;
    assert_full(&reply, Coding::Identity, JS, &js);

    // The ETag of another encoding of the same file is another representation.
    let reply = site.get("/gotalk.js", &[("if-none-match", &gzip)]).await;
    assert_full(&reply, Coding::Identity, JS, &js);
    let both = format!("{identity}, {gzip}");
    let reply =
        site.get("/gotalk.js", &[("accept-encoding", "br"), ("if-none-match", &both)]).await;
    assert_full(&reply, Coding::Br, JS, &js);
    let reply =
        site.get("/gotalk.js", &[("accept-encoding", "gzip"), ("if-none-match", &br)]).await;
    assert_full(&reply, Coding::Gzip, JS, &js);

    // An unquoted tag is not an entity tag.
    let bare = identity.trim_matches('"').to_owned();
    let reply = site.get("/gotalk.js", &[("if-none-match", &bare)]).await;
    assert_full(&reply, Coding::Identity, JS, &js);
}

#[tokio::test]
async fn malformed_if_none_match_gets_the_file() {
    let site = serve(fixtures()).await;
    let js = js_body();
    for garbage in ["W/", "\"unterminated", "\"", ",,,", "W/W/\"x\"", "*, *", "\"\"", "\"a\" \"b\""]
    {
        let reply = site.get("/gotalk.js", &[("if-none-match", garbage)]).await;
        assert_full(&reply, Coding::Identity, JS, &js);
    }
    // Bytes that are not UTF-8 are covered by the unit tests: hyper answers 400 to them
    // before any handler runs.
}

#[tokio::test]
async fn head_sends_the_headers_of_get_without_a_body() {
    let site = serve(fixtures()).await;
    for accept in ["identity", "gzip", "br"] {
        let headers = [("accept-encoding", accept)];
        let get = site.get("/gotalk.js", &headers).await;
        let head = site.request("HEAD", "/gotalk.js", &headers).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.fields(), get.fields(), "{accept}");
        assert_eq!(head.must("content-length"), get.body.len().to_string());
        assert!(head.body.is_empty(), "HEAD with a body: {head:?}");
    }
}

#[tokio::test]
async fn head_revalidates_like_get() {
    let site = serve(fixtures()).await;
    let [identity, ..] = js_etags(&site).await;
    let reply = site.request("HEAD", "/gotalk.js", &[("if-none-match", &identity)]).await;
    assert_eq!(reply.status, 304, "{reply:?}");
    // The only difference from a GET's 304: the length of the representation, which a HEAD
    // response may carry and which stops axum from claiming 0.
    assert_eq!(reply.names(), ["cache-control", "content-length", "etag", "vary"]);
    assert_eq!(reply.must("content-length"), js_body().len().to_string());
    assert_eq!(reply.must("etag"), identity);
    assert_eq!(reply.must("cache-control"), NO_CACHE);
    assert_eq!(reply.must("vary"), "accept-encoding");
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let site = serve(fixtures()).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let reply = site.request(method, "/gotalk.js", &[("if-none-match", "*")]).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(
            reply.fields(),
            BTreeMap::from([("allow", "GET, HEAD"), ("content-length", "0")])
        );
        assert!(reply.body.is_empty());
    }
}

#[tokio::test]
async fn the_current_version_is_immutable() {
    let assets = fixtures();
    let version = assets.version("gotalk.js").expect("gotalk.js version").to_owned();
    assert_eq!(version.len(), 16);
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let site = serve(assets.clone()).await;
    let js = js_body();

    let target = format!("/gotalk.js?v={version}");
    let reply = site.get(&target, &[("accept-encoding", "br")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.must("cache-control"), IMMUTABLE);
    assert_eq!(reply.must("content-encoding"), "br");
    assert_eq!(reply.must("vary"), "accept-encoding");
    assert_eq!(reply.must("content-type"), JS);
    assert_eq!(reply.must("content-length"), reply.body.len().to_string());
    assert_eq!(reply.must("etag"), etag_of(&reply.body));
    assert_eq!(unbrotli(&reply.body), js);
    let br = reply.must("etag").to_owned();

    // Other parameters may come first.
    let reply = site.get(&format!("/gotalk.js?x=1&v={version}"), &[]).await;
    assert_eq!(reply.must("cache-control"), IMMUTABLE);
    assert_eq!(reply.body, js);

    let reply = site.get(&target, &[("accept-encoding", "br"), ("if-none-match", &br)]).await;
    assert_not_modified(&reply, &br, IMMUTABLE);
}

#[tokio::test]
async fn another_version_gets_the_current_file_uncached() {
    let assets = fixtures();
    let other = assets.version("gotalk_bg.wasm").expect("wasm version").to_owned();
    let site = serve(assets).await;
    let js = js_body();
    for query in ["v=0000000000000000", "v=", "v", &format!("v={other}"), "version=x"] {
        let reply = site.get(&format!("/gotalk.js?{query}"), &[]).await;
        assert_full(&reply, Coding::Identity, JS, &js);
    }
}

#[tokio::test]
async fn unknown_and_traversing_paths_are_not_found() {
    let site = serve(fixtures()).await;
    let targets = [
        "/nope.js",
        "/gotalk.js/",
        "/GOTALK.JS",
        "//gotalk.js",
        "/./gotalk.js",
        "/../gotalk.js",
        "/docs/../gotalk.js",
        "/%2e%2e/gotalk.js",
        "/gotalk%2Ejs",
        "/docs",
        "/docs/..",
        "/..%2fgotalk.js",
        "/..\\gotalk.js",
    ];
    for target in targets {
        let reply = site.get(target, &[]).await;
        assert_eq!(reply.status, 404, "{target}: {reply:?}");
        assert_eq!(reply.fields(), BTreeMap::from([("content-length", "0")]), "{target}");
        assert!(reply.body.is_empty(), "{target}");
    }
}

#[tokio::test]
async fn folders_serve_their_index() {
    let site = serve(fixtures()).await;
    for (target, body) in [
        ("/", &b"<!DOCTYPE html><title>root</title>"[..]),
        ("/index.html", b"<!DOCTYPE html><title>root</title>"),
        ("/docs/", b"<!DOCTYPE html><title>docs</title>"),
        ("/docs/index.html", b"<!DOCTYPE html><title>docs</title>"),
    ] {
        let reply = site.get(target, &[]).await;
        assert_eq!(reply.status, 200, "{target}");
        assert_eq!(reply.must("content-type"), "text/html; charset=utf-8", "{target}");
        assert_eq!(reply.must("content-length"), body.len().to_string(), "{target}");
        assert_eq!(reply.must("etag"), etag_of(body), "{target}");
        assert_eq!(reply.must("cache-control"), NO_CACHE, "{target}");
        assert_eq!(reply.header("content-encoding"), None, "{target}");
        assert_eq!(reply.body, body, "{target}");
    }
}

#[tokio::test]
async fn the_demo_site_serves_its_index_html() {
    let on_disk =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo/page/index.html"))
            .expect("examples/demo/page/index.html");
    assert!(gotalk_demo::site().contains("index.html"));
    assert!(!Assets::embedded().contains("index.html"));
    assert!(!Assets::bundle().contains("index.html"));

    let site = serve(gotalk_demo::site()).await;
    let reply = site.get("/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.must("content-type"), "text/html; charset=utf-8");
    assert_eq!(reply.must("content-length"), on_disk.len().to_string());
    assert_eq!(reply.must("etag"), etag_of(&on_disk));
    assert_eq!(reply.body, on_disk);

    let reply = site.get("/index.html", &[("accept-encoding", "gzip")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.must("content-encoding"), "gzip");
    assert_eq!(reply.must("vary"), "accept-encoding");
    assert_eq!(gunzip(&reply.body), on_disk);
}
