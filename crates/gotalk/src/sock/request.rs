//! The HTTP request a WebSocket connection was opened with, kept for the connection's life.
//!
//! An HTTP server parses a request into slices of its read buffer: hyper's URI and header
//! values all point into the 8 KiB it read the request into. Kept as they are, they would
//! keep that whole buffer for as long as the WebSocket stays open, the largest part of an
//! idle socket's memory. So the request is kept as a copy in one buffer of exactly its size.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Uri};

/// The HTTP request that a WebSocket connection was opened with, as a handler sees it.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct UpgradeRequest {
    /// The URI the client asked for, mount point and query included.
    pub uri: Uri,
    /// The request's headers.
    pub headers: HeaderMap,
    /// Values set by middleware or by the gateway's `on_connect` hook, such as the
    /// authenticated user.
    pub extensions: http::Extensions,
}

impl UpgradeRequest {
    /// A request with this URI and these headers, and no extensions. They are copied into
    /// one buffer of their own, so whatever buffer they were parsed from can be freed.
    pub fn new(uri: Uri, headers: HeaderMap) -> Self {
        let (uri, headers) = compact(uri, headers);
        UpgradeRequest { uri, headers, extensions: http::Extensions::new() }
    }
}

/// The URI and the header values copied into one buffer they share.
fn compact(uri: Uri, headers: HeaderMap) -> (Uri, HeaderMap) {
    let text = uri.to_string();
    let size = text.len() + headers.values().map(HeaderValue::len).sum::<usize>();
    let mut copy = BytesMut::with_capacity(size);
    copy.extend_from_slice(text.as_bytes());
    for value in headers.values() {
        copy.extend_from_slice(value.as_bytes());
    }
    let mut copy: Bytes = copy.freeze();
    let uri = Uri::from_maybe_shared(copy.split_to(text.len())).unwrap_or(uri);
    let mut compacted = HeaderMap::with_capacity(headers.len());
    let mut name = None;
    // Each name comes once, followed by its values in order.
    for (next, value) in headers {
        if next.is_some() {
            name = next;
        }
        let Some(name) = &name else { continue };
        let shared = copy.split_to(value.len());
        let mut kept = HeaderValue::from_maybe_shared(shared).unwrap_or_else(|_| value.clone());
        kept.set_sensitive(value.is_sensitive());
        compacted.append(name.clone(), kept);
    }
    (uri, compacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request parsed into slices of one large buffer, as an HTTP server does.
    fn parsed() -> (Bytes, Uri, HeaderMap) {
        let mut read = BytesMut::with_capacity(8192);
        read.extend_from_slice(b"/gotalk/?retry=1hostexample.orgsession=abcv1v2");
        read.resize(8192, 0);
        let read = read.freeze();
        let uri = Uri::from_maybe_shared(read.slice(0..16)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_maybe_shared(read.slice(20..31)).unwrap());
        let mut cookie = HeaderValue::from_maybe_shared(read.slice(31..42)).unwrap();
        cookie.set_sensitive(true);
        headers.insert("cookie", cookie);
        headers.append("x-multi", HeaderValue::from_maybe_shared(read.slice(42..44)).unwrap());
        headers.append("x-multi", HeaderValue::from_maybe_shared(read.slice(44..46)).unwrap());
        (read, uri, headers)
    }

    #[test]
    fn the_copy_has_every_value_in_order_and_none_in_the_parse_buffer() {
        let (read, uri, headers) = parsed();
        let request = UpgradeRequest::new(uri, headers);
        assert_eq!(request.uri, "/gotalk/?retry=1");
        assert_eq!(request.uri.query(), Some("retry=1"));
        assert_eq!(request.headers["host"], "example.org");
        assert_eq!(request.headers["cookie"], "session=abc");
        assert!(request.headers["cookie"].is_sensitive(), "sensitivity is kept");
        let multi: Vec<_> = request.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["v1", "v2"]);

        let buffer = read.as_ptr_range();
        let outside = |bytes: &[u8]| !buffer.contains(&bytes.as_ptr());
        assert!(outside(request.uri.path().as_bytes()));
        assert!(request.headers.values().all(|v| outside(v.as_bytes())), "no value points into it");
    }
}
