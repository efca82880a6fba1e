//! The gateway's Host check against DNS rebinding, with raw HTTP requests over real sockets: a
//! page on a name that resolves to the loopback address sends Origin and Host that agree, so
//! only the Host name can give it away.

mod common;

use std::net::SocketAddr;

use common::handlers;
use common::raw_ws::{Head, RawWs};
use common::web::WebServer;
use gotalk::Config;
use gotalk_gateway::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The upgrade a page whose origin is `http://HOST` sends to `ws://HOST/gotalk/`: its status
/// and the response's text.
async fn upgrade(server: SocketAddr, host: &str) -> (u16, String) {
    let stream = TcpStream::connect(server).await.unwrap();
    let origin = format!("http://{host}");
    match RawWs::upgrade(stream, "/gotalk/", host, &[("Origin", &origin)]).await {
        Ok(_) => (101, String::new()),
        Err(Head { status, text }) => (status, text),
    }
}

/// A GET of `path` with `host` in its Host header: the status and the whole response.
async fn get(server: SocketAddr, path: &str, host: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    common::within("response", stream.read_to_string(&mut response)).await.unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

async fn assert_served(server: SocketAddr, hosts: &[String]) {
    for host in hosts {
        let (status, text) = upgrade(server, host).await;
        assert_eq!(status, 101, "{host}: {text}");
    }
}

async fn assert_refused(server: SocketAddr, hosts: &[String]) {
    for host in hosts {
        let (status, text) = upgrade(server, host).await;
        assert_eq!(status, 421, "{host}: {text}");
        assert!(text.contains(&format!("host {host:?} is not allowed")), "{host}: {text}");
    }
}

#[tokio::test]
async fn on_loopback_only_loopback_names_are_served() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let port = server.http.port();
    let at = |name: &str| format!("{name}:{port}");
    let served = [
        "localhost",
        "LOCALHOST",
        "localhost.",
        "app.localhost",
        "127.0.0.1",
        "127.0.0.2",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
    ];
    assert_served(server.http, &served.map(at)).await;
    // Without a port too: any port is the same name.
    assert_served(server.http, &["localhost".to_owned(), "127.0.0.1".to_owned()]).await;

    // The rebinding page: its origin and the Host agree, so only the name gives it away.
    let refused = [
        "evil.example",
        "EVIL.EXAMPLE",
        "evil.example.",
        "localhost.evil.example",
        "127.1",
        "[::2]",
    ];
    assert_refused(server.http, &refused.map(at)).await;

    // The files under the mount are refused too, with the same reason.
    let (status, text) = get(server.http, "/gotalk/gotalk.js", &at("evil.example")).await;
    assert_eq!(status, 421, "{text}");
    assert!(text.contains("evil.example"), "{text}");
    let (status, text) = get(server.http, "/gotalk/gotalk.js", &at("localhost")).await;
    assert_eq!(status, 200, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn an_allowed_host_is_served_on_loopback_whatever_its_case_or_trailing_dot() {
    let server =
        WebServer::start(handlers(), Config::default(), |g| g.allow_host("evil.example")).await;
    let port = server.http.port();
    let at = |name: &str| format!("{name}:{port}");
    let served = ["evil.example", "EVIL.example", "evil.example.", "localhost", "127.0.0.1"];
    assert_served(server.http, &served.map(at)).await;
    // The name itself, not its subdomains or a longer name.
    let refused = ["sub.evil.example", "evil.example.com", "xevil.example"];
    assert_refused(server.http, &refused.map(at)).await;
    server.stop().await;

    let server = WebServer::start(handlers(), Config::default(), |g| {
        g.allow_host("*.app.example").allow_host("*")
    })
    .await;
    assert_served(server.http, &[format!("anything.example:{}", server.http.port())]).await;
    server.stop().await;
}

#[tokio::test]
async fn an_ipv6_loopback_listener_checks_hosts_too() {
    let server =
        WebServer::start_at("[::1]:0", handlers(), Config::default(), |g| g, |http| http).await;
    let port = server.http.port();
    let at = |name: &str| format!("{name}:{port}");
    assert_served(server.http, &["[::1]", "localhost", "127.0.0.1"].map(at)).await;
    assert_refused(server.http, &["evil.example", "[2001:db8::1]"].map(at)).await;
    server.stop().await;
}

/// A request as an HTTP server hands it to the gateway, with the addresses it came over.
fn request(host: &str, local: Option<&str>, peer: Option<&str>) -> http::Request<()> {
    let mut request = http::Request::get("/gotalk/").header("host", host).body(()).unwrap();
    if let Some(local) = local {
        request.extensions_mut().insert(gotalk_gateway::http::LocalAddr(local.parse().unwrap()));
    }
    if let Some(peer) = peer {
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    }
    request
}

#[test]
fn elsewhere_any_host_is_served_until_one_is_allowed() {
    let gateway = Gateway::new(std::sync::Arc::new(handlers()), Config::default());
    let lan = Some("192.0.2.1:1234");
    assert!(gateway.check_host(&request("evil.example", lan, None)).is_ok());
    assert!(gateway.check_host(&request("anything", lan, lan)).is_ok());
    // On a dual-stack listener a loopback connection arrives at a mapped address.
    let mapped = Some("[::ffff:127.0.0.1]:1234");
    let refusal = gateway.check_host(&request("evil.example", mapped, None)).unwrap_err();
    assert_eq!(refusal.status(), http::StatusCode::MISDIRECTED_REQUEST);
    // Without the local address, a loopback peer says the connection is on loopback.
    assert!(gateway.check_host(&request("evil.example", None, Some("127.0.0.1:5"))).is_err());
    assert!(gateway.check_host(&request("evil.example", None, lan)).is_ok());
    // Knowing neither, the gateway cannot tell: any host, until one is allowed.
    assert!(gateway.check_host(&request("evil.example", None, None)).is_ok());

    let gateway = gateway.allow_host("app.example");
    assert!(gateway.check_host(&request("app.example:443", lan, None)).is_ok());
    assert!(gateway.check_host(&request("evil.example", lan, None)).is_err());
    assert!(gateway.check_host(&request("evil.example", None, None)).is_err());
    assert!(gateway.check_host(&request("localhost", lan, None)).is_err());
    assert!(gateway.check_host(&request("localhost", Some("127.0.0.1:1"), None)).is_ok());
}

#[test]
fn allow_host_takes_names_addresses_and_wildcards_only() {
    for good in ["example.com", "*.example.com", "*", "10.0.0.1", "::1", "[::1]"] {
        assert!(gotalk_gateway::valid_host(good), "{good}");
    }
    for bad in ["", "example.com:80", "http://example.com", "a b", "*.", "[127.0.0.1]"] {
        assert!(!gotalk_gateway::valid_host(bad), "{bad}");
    }
}
