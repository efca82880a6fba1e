//! How a WebSocket client tells a gateway that it understands RetryResult.
//!
//! The original gotalk.js drops the connection on a RetryResult, so a gateway may send one
//! only to clients that say they can take it. Ours say so in the query of the URL they
//! connect to; the server reads it back from the upgrade request. The same declaration says
//! the client reads its messages as one byte stream, so a gateway may send each frame as one
//! message (the original gotalk.js needs a header and its payload in messages apart).

/// The query pair our clients add to the WebSocket URL.
pub const QUERY: &str = "gotalk-retry=1";

/// `url` with [`QUERY`] in its query (once, however often this is applied), before any
/// fragment.
pub fn with_query(url: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let mut out = String::from(base);
    if !declared(base.split_once('?').map(|(_, query)| query)) {
        out.push(if base.contains('?') { '&' } else { '?' });
        out.push_str(QUERY);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// True when a URL's query declares that the client understands RetryResult.
pub fn declared(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| pair == QUERY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declaration_is_added_to_any_url_once() {
        assert_eq!(with_query("ws://h/gotalk/"), "ws://h/gotalk/?gotalk-retry=1");
        assert_eq!(with_query("ws://h/g?a=1"), "ws://h/g?a=1&gotalk-retry=1");
        assert_eq!(with_query("ws://h/g#x"), "ws://h/g?gotalk-retry=1#x");
        assert_eq!(with_query("ws://h/g?gotalk-retry=1"), "ws://h/g?gotalk-retry=1");
        assert_eq!(with_query(&with_query("ws://h/g?a#f")), "ws://h/g?a&gotalk-retry=1#f");
    }

    #[test]
    fn only_the_exact_pair_declares() {
        assert!(declared(Some("gotalk-retry=1")));
        assert!(declared(Some("a=b&gotalk-retry=1")));
        assert!(!declared(None));
        assert!(!declared(Some("gotalk-retry=10")));
        assert!(!declared(Some("xgotalk-retry=1")));
    }
}
