//! The WebSocket opening handshake (RFC 6455, section 4.2) over HTTP/1.1: the request's checks,
//! and the 101 that hands the connection to our own framing. No extension (such as
//! permessage-deflate) and no subprotocol is ever agreed to.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gotalk::ws::{ServerReader, ServerWriter};
use gotalk::Config;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::either::Either;

/// A request that may become a WebSocket.
pub(super) struct Upgrade {
    key: HeaderValue,
    /// Resolves to the connection once the 101 has been sent.
    pub(super) on_upgrade: OnUpgrade,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade").field("key", &self.key).finish_non_exhaustive()
    }
}

/// The only WebSocket version there is.
const VERSION: &str = "13";

/// Why a request cannot become a WebSocket, as the HTTP response that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refused {
    status: StatusCode,
    message: &'static str,
    /// RFC 6455 4.2.2: a refused version is answered with the version this server speaks.
    name_version: bool,
}

impl Refused {
    const fn new(status: StatusCode, message: &'static str) -> Self {
        Refused { status, message, name_version: false }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        if self.name_version {
            response.headers_mut().insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
        }
        response
    }
}

/// Checks that `parts` asks for a WebSocket, taking the connection's upgrade from its
/// extensions.
pub(super) fn check(parts: &mut http::request::Parts) -> Result<Upgrade, Refused> {
    if parts.method != Method::GET {
        return Err(Refused::new(StatusCode::METHOD_NOT_ALLOWED, "Request method must be `GET`"));
    }
    if !has_token(&parts.headers, CONNECTION, "upgrade") {
        let message = "Connection header did not include 'upgrade'";
        return Err(Refused::new(StatusCode::BAD_REQUEST, message));
    }
    if !has_token(&parts.headers, http::header::UPGRADE, "websocket") {
        let message = "`Upgrade` header did not include 'websocket'";
        return Err(Refused::new(StatusCode::BAD_REQUEST, message));
    }
    if parts.headers.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != VERSION.as_bytes()) {
        let message = "`Sec-WebSocket-Version` header did not include '13'";
        return Err(Refused {
            name_version: true,
            ..Refused::new(StatusCode::BAD_REQUEST, message)
        });
    }
    let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY).cloned() else {
        let message = "`Sec-WebSocket-Key` header missing";
        return Err(Refused::new(StatusCode::BAD_REQUEST, message));
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        let message = "WebSocket request couldn't be upgraded since no upgrade state was present";
        return Err(Refused::new(StatusCode::UPGRADE_REQUIRED, message));
    };
    Ok(Upgrade { key, on_upgrade })
}

impl Upgrade {
    /// The 101 response that switches the connection to WebSocket.
    pub(super) fn accept(&self) -> Response {
        switching(&self.key)
    }
}

/// The 101 response to a request with `key`.
fn switching(key: &HeaderValue) -> Response {
    let accept = derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// True when a comma-separated header holds `token`, in any case.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The reading end of an upgraded connection: the TCP stream's own half when it is one.
pub(super) type ReadSide = Either<OwnedReadHalf, ReadHalf<TokioIo<Upgraded>>>;
/// The writing end of an upgraded connection, as [`ReadSide`].
pub(super) type WriteSide = Either<OwnedWriteHalf, WriteHalf<TokioIo<Upgraded>>>;

/// The upgraded connection as the gateway's side of a WebSocket. A plain TCP connection (as
/// our HTTP server and `axum::serve` make) is taken out of hyper's wrapping and split into
/// the stream's own halves, which share no lock: every read and write then goes to the
/// socket directly, without the wrapping's dynamic call, its read-ahead check and the lock
/// tokio's `split` takes around each. Anything else (TLS) is split by tokio.
pub(super) fn websocket(
    upgraded: Upgraded,
    config: &Config,
) -> (ServerReader<ReadSide, WriteSide>, ServerWriter<ReadSide, WriteSide>) {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let (read, write) = parts.io.into_inner().into_split();
            // A copy: the bytes hyper hands back share its whole read buffer, kilobytes an idle
            // socket would hold for nothing, even when there are none.
            let ahead = Bytes::copy_from_slice(&parts.read_buf);
            gotalk::ws::server_halves(Either::Left(read), Either::Left(write), ahead, config)
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            gotalk::ws::server_halves(
                Either::Right(read),
                Either::Right(write),
                Bytes::new(),
                config,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    /// What `check` answers to a GET with `VALID`'s headers, `without` one and with `extra`.
    fn refusal(method: Method, without: &str, extra: &[(&str, &str)]) -> Response {
        let mut builder = http::Request::builder().method(method).uri("/gotalk/");
        for (name, value) in VALID.iter().filter(|(name, _)| *name != without).chain(extra) {
            builder = builder.header(*name, *value);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        check(&mut parts).expect_err("refused").into_response()
    }

    #[test]
    fn each_missing_part_of_the_handshake_is_refused() {
        assert_eq!(refusal(Method::POST, "", &[]).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refusal(Method::GET, "connection", &[]).status(), StatusCode::BAD_REQUEST);
        assert_eq!(refusal(Method::GET, "upgrade", &[]).status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            refusal(Method::GET, "sec-websocket-key", &[]).status(),
            StatusCode::BAD_REQUEST
        );
        // Everything is there, but not on a connection that can be upgraded.
        assert_eq!(refusal(Method::GET, "", &[]).status(), StatusCode::UPGRADE_REQUIRED);
    }

    #[test]
    fn a_bad_version_is_told_the_version_we_speak() {
        for version in [None, Some("8")] {
            let extra: Vec<_> = version.map(|v| ("sec-websocket-version", v)).into_iter().collect();
            let refused = refusal(Method::GET, "sec-websocket-version", &extra);
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
            assert_eq!(refused.headers()[SEC_WEBSOCKET_VERSION], "13", "{version:?}");
        }
    }

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        let response = switching(&HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()[SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!response.headers().contains_key(http::header::SEC_WEBSOCKET_EXTENSIONS));
    }
}
