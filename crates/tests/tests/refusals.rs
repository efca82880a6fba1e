//! Refusals a peer can read over TCP and TLS: the `on_connect` hook of the TCP server, what a
//! client of ours and another gotalk peer are told, and TLS client certificates verified by
//! the listener and seen by handlers.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{serve, within};
use gotalk::tcp::{connect, connect_tls, Server};
use gotalk::{Config, Error, Handlers, Refusal, Sock, TransportKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Handlers with `whoami`: the DER of the peer's certificate, or nothing.
fn whoami() -> Arc<Handlers> {
    Arc::new(whoami_handlers())
}

fn whoami_handlers() -> Handlers {
    let mut h = Handlers::new();
    h.handle_buffer("whoami", |sock: Sock, _: Bytes| async move {
        let der = sock.peer_certificate().map(|c| Bytes::copy_from_slice(c.as_ref()));
        Ok::<_, String>(der.unwrap_or_default())
    });
    h
}

/// A server whose hook refuses every peer.
fn refusing(handlers: Arc<Handlers>) -> Server {
    Server::new(handlers, Config::default()).on_connect(|info| async move {
        assert!(info.remote_addr.is_some(), "the hook sees the peer's address");
        Err(Refusal::unauthorized("log in first"))
    })
}

#[tokio::test]
async fn a_refused_client_of_ours_fails_to_connect_with_the_code_and_reason() {
    let server = serve(refusing(whoami())).await;
    let err = within("connect", connect(server.addr, Arc::new(Handlers::new()), Config::default()))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, Error::Refused { code: 4401, reason } if reason == "log in first"),
        "{err:?}"
    );
    assert_eq!(server.connections.len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn another_gotalk_peer_is_sent_the_version_and_an_abnormal_protocol_error_only() {
    let server = serve(refusing(whoami())).await;
    // As Go's gotalk: its version and nothing else; no hello, so no `$` message for it.
    let mut peer = TcpStream::connect(server.addr).await.unwrap();
    peer.write_all(b"01").await.unwrap();
    let mut got = Vec::new();
    within("the refusal and the close", peer.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"01f00000000");
    server.stop().await;
}

#[tokio::test]
async fn a_hook_that_accepts_lets_the_connection_open_with_what_it_saw() {
    let server = Server::new(whoami(), Config::default()).on_connect(|info| async move {
        match info.remote_addr {
            Some(addr) if addr.ip().is_loopback() => Ok(info),
            _ => Err(Refusal::forbidden("local peers only")),
        }
    });
    let server = serve(server).await;
    let client = within("connect", connect(server.addr, whoami(), Config::default()))
        .await
        .expect("accepted");
    assert_eq!(client.buffer_request("whoami", "").await.unwrap(), "");
    server.stop().await;
}

/// A CA, a server certificate for `localhost` and a client certificate, each signed by it.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    client_der: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = issue(vec!["localhost".into()]);
    let (client_cert, client_key) = issue(vec!["alice.example".into()]);
    Pki {
        ca_pem: ca_cert.pem(),
        server: (server_cert.pem(), server_key.serialize_pem()),
        client_der: client_cert.der().to_vec(),
        client: (client_cert.pem(), client_key.serialize_pem()),
    }
}

fn tls_server(pki: &Pki, client_ca: &str, required: bool) -> Server {
    let config = gotalk::tls::server_config_verifying_clients(
        pki.server.0.as_bytes(),
        pki.server.1.as_bytes(),
        client_ca.as_bytes(),
        required,
    )
    .unwrap();
    Server::new(whoami(), Config::default()).tls(config)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Sock, Error> {
    within("tls connect", connect_tls(addr, "localhost", tls, whoami(), Config::default())).await
}

#[tokio::test]
async fn a_verified_client_certificate_reaches_handlers() {
    let pki = pki();
    let server = serve(tls_server(&pki, &pki.ca_pem, true)).await;
    let with_cert = gotalk::tls::client_config_with_cert(
        pki.ca_pem.as_bytes(),
        pki.client.0.as_bytes(),
        pki.client.1.as_bytes(),
    )
    .unwrap();
    let client = tls_connect(server.addr, with_cert).await.expect("a client with a certificate");
    assert_eq!(client.info().transport, TransportKind::Tls);
    assert_eq!(&client.buffer_request("whoami", "").await.unwrap()[..], &pki.client_der[..]);
    let server_side = server.only_connection().await;
    let chain = server_side.info().peer_certificates.clone().expect("the chain");
    assert_eq!(chain[0].as_ref(), &pki.client_der[..]);
    server.stop().await;
}

#[tokio::test]
async fn a_required_certificate_turns_away_clients_without_one_or_with_a_stranger_s() {
    let pki = pki();
    let server = serve(tls_server(&pki, &pki.ca_pem, true)).await;
    let anonymous = gotalk::tls::client_config(pki.ca_pem.as_bytes()).unwrap();
    // TLS 1.3: the client's handshake ends before the server has checked; the refusal
    // arrives as an alert on the first read, so either step may fail.
    match tls_connect(server.addr, anonymous).await {
        Err(_) => {}
        Ok(sock) => assert!(sock.buffer_request("whoami", "").await.is_err()),
    }
    let stranger = pki_other_ca(&pki);
    match tls_connect(server.addr, stranger).await {
        Err(_) => {}
        Ok(sock) => assert!(sock.buffer_request("whoami", "").await.is_err()),
    }
    assert_eq!(server.connections.len(), 0);
    server.stop().await;
}

/// A client trusting the server's CA but presenting a certificate from another CA.
fn pki_other_ca(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let other = self::pki();
    gotalk::tls::client_config_with_cert(
        pki.ca_pem.as_bytes(),
        other.client.0.as_bytes(),
        other.client.1.as_bytes(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_optional_certificate_lets_anonymous_clients_in_and_the_hook_decide() {
    let pki = pki();
    let server = tls_server(&pki, &pki.ca_pem, false).on_connect(|info| async move {
        match info.peer_certificates {
            Some(_) => Ok(info),
            None => Err(Refusal::unauthorized("a client certificate is needed for this")),
        }
    });
    let server = serve(server).await;
    let anonymous = gotalk::tls::client_config(pki.ca_pem.as_bytes()).unwrap();
    let err = tls_connect(server.addr, anonymous).await.expect_err("refused by the hook");
    assert!(matches!(&err, Error::Refused { code: 4401, .. }), "{err:?}");
    let with_cert = gotalk::tls::client_config_with_cert(
        pki.ca_pem.as_bytes(),
        pki.client.0.as_bytes(),
        pki.client.1.as_bytes(),
    )
    .unwrap();
    let client = tls_connect(server.addr, with_cert).await.expect("accepted");
    assert_eq!(&client.buffer_request("whoami", "").await.unwrap()[..], &pki.client_der[..]);
    server.stop().await;
}

/// The same over `wss://`: the gateway's HTTPS server verifies the client's certificate, and
/// the socket's handlers see the chain.
#[tokio::test]
async fn a_verified_client_certificate_reaches_websocket_handlers() {
    let pki = pki();
    let server_tls = gotalk::tls::server_config_verifying_clients(
        pki.server.0.as_bytes(),
        pki.server.1.as_bytes(),
        pki.ca_pem.as_bytes(),
        true,
    )
    .unwrap();
    let server = common::web::WebServer::start_with(
        whoami_handlers(),
        Config::default(),
        |g| g,
        |http| http.tls(server_tls),
    )
    .await;
    let with_cert = gotalk::tls::client_config_with_cert(
        pki.ca_pem.as_bytes(),
        pki.client.0.as_bytes(),
        pki.client.1.as_bytes(),
    )
    .unwrap();
    let url = format!("wss://localhost:{}/gotalk/", server.http.port());
    let connector = gotalk::ws::Connector::new().tls(with_cert);
    let connect = connector.connect(&url, whoami(), Config::default());
    let client = within("wss connect", connect).await.expect("a client with a certificate");
    assert_eq!(&client.buffer_request("whoami", "").await.unwrap()[..], &pki.client_der[..]);
    server.stop().await;
}
