//! Which web pages may open a WebSocket to the gateway.
//!
//! A browser sends cookies with a WebSocket upgrade whatever page opens it, and the same-origin
//! policy does not apply to WebSockets. So a server that accepts any Origin lets every site a
//! user visits talk to it as that user. The default here: no Origin (a program, not a
//! browser) is allowed, the page's own origin is allowed, a configured list is allowed, and
//! everything else, including the opaque origin `null`, is refused.

use http::HeaderMap;

/// An origin as `scheme://host:port`, lowercased, with the port always present.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]`, allowing a bracketed IPv6 address (returned without its brackets).
pub(super) fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ', '?', '#']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let text = text.trim().trim_end_matches('/');
        let (scheme, authority) = text.split_once("://")?;
        if scheme.is_empty()
            || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_authority(authority)?;
        let port = port.or_else(|| default_port(&scheme)).unwrap_or(0);
        Some(Origin { scheme, host: host.to_ascii_lowercase(), port })
    }
}

/// The origins allowed to open a socket, besides the page's own.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    any: bool,
    allowed: Vec<Origin>,
}

/// Why an upgrade's Origin was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

/// True when `origin` can be given to [`OriginPolicy::allow`]: `*`, `null`, or
/// `scheme://host[:port]`.
pub(crate) fn is_valid(origin: &str) -> bool {
    matches!(origin, "*" | "null") || Origin::parse(origin).is_some()
}

impl OriginPolicy {
    /// Allows `origin`: `*` for any origin, `null` for pages with an opaque origin, or
    /// `scheme://host[:port]`. Returns false for anything else.
    pub(crate) fn allow(&mut self, origin: &str) -> bool {
        match origin.trim() {
            "*" => self.any = true,
            "null" => self.allowed.push(Origin { scheme: "null".into(), host: "".into(), port: 0 }),
            text => match Origin::parse(text) {
                Some(origin) => self.allowed.push(origin),
                None => return false,
            },
        }
        true
    }

    /// Checks an upgrade request's Origin against its Host and the allowed list. `secure`
    /// says whether the page reached the server over TLS, when known: then the same-origin
    /// rule also compares the scheme, so `http://host` is not the origin of `https://host`.
    /// Unknown, it compares host and port only.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
        secure: Option<bool>,
    ) -> Result<(), Refused> {
        let Some(value) = headers.get(http::header::ORIGIN) else {
            return Ok(());
        };
        if self.any {
            return Ok(());
        }
        let text = value.to_str().map_err(|_| Refused("origin is not text".into()))?;
        let origin = if text.trim() == "null" {
            Origin { scheme: "null".into(), host: "".into(), port: 0 }
        } else {
            Origin::parse(text).ok_or_else(|| Refused(format!("malformed origin {text:?}")))?
        };
        if self.allowed.contains(&origin) {
            return Ok(());
        }
        let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).or(authority);
        if let Some((host, port)) = host.and_then(split_authority) {
            let (scheme_matches, server_port) = match secure {
                Some(true) => (origin.scheme == "https", 443),
                Some(false) => (origin.scheme == "http", 80),
                None => (origin.scheme != "null", default_port(&origin.scheme).unwrap_or(0)),
            };
            let port = port.unwrap_or(server_port);
            if scheme_matches && host.eq_ignore_ascii_case(&origin.host) && port == origin.port {
                return Ok(());
            }
        }
        Err(Refused(format!("origin {text} is not allowed")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(http::header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    fn check(policy: &OriginPolicy, origin: Option<&str>, host: &str) -> bool {
        policy.check(&headers(origin, host), None, None).is_ok()
    }

    fn check_over(secure: bool, origin: &str, host: &str) -> bool {
        OriginPolicy::default().check(&headers(Some(origin), host), None, Some(secure)).is_ok()
    }

    #[test]
    fn a_known_scheme_must_match_too() {
        assert!(check_over(true, "https://example.com", "example.com"));
        assert!(check_over(true, "https://example.com:8443", "example.com:8443"));
        assert!(!check_over(true, "http://example.com", "example.com"));
        assert!(!check_over(true, "http://example.com:8443", "example.com:8443"));
        assert!(check_over(false, "http://example.com", "example.com"));
        assert!(!check_over(false, "https://example.com", "example.com"));
        assert!(!check_over(false, "https://example.com:80", "example.com"));
        assert!(!check_over(true, "null", "example.com"));
    }

    #[test]
    fn no_origin_and_the_same_origin_are_allowed_by_default() {
        let policy = OriginPolicy::default();
        assert!(check(&policy, None, "example.com"));
        assert!(check(&policy, Some("http://example.com"), "example.com"));
        assert!(check(&policy, Some("https://EXAMPLE.com"), "example.com:443"));
        assert!(check(&policy, Some("http://127.0.0.1:1234"), "127.0.0.1:1234"));
        assert!(check(&policy, Some("http://[::1]:8080"), "[::1]:8080"));
    }

    #[test]
    fn other_origins_are_refused_by_default() {
        let policy = OriginPolicy::default();
        assert!(!check(&policy, Some("https://evil.example"), "example.com"));
        assert!(!check(&policy, Some("http://example.com:8080"), "example.com"));
        assert!(!check(&policy, Some("https://example.com"), "example.com:80"));
        assert!(!check(&policy, Some("http://example.com.evil.example"), "example.com"));
        assert!(!check(&policy, Some("null"), "example.com"));
        assert!(!check(&policy, Some("garbage"), "example.com"));
        assert!(!check(&policy, Some("http://"), "example.com"));
        assert!(!check(&policy, Some("http://a:99999"), "a:99999"));
    }

    #[test]
    fn listed_origins_are_allowed() {
        let mut policy = OriginPolicy::default();
        assert!(policy.allow("https://app.example/"));
        assert!(policy.allow("http://localhost:3000"));
        assert!(!policy.allow("not an origin"));
        assert!(check(&policy, Some("https://app.example"), "api.example"));
        assert!(check(&policy, Some("https://app.example:443"), "api.example"));
        assert!(check(&policy, Some("http://LOCALHOST:3000"), "api.example"));
        assert!(!check(&policy, Some("http://app.example"), "api.example"));
        assert!(!check(&policy, Some("http://localhost:3001"), "api.example"));
    }

    #[test]
    fn star_and_null_must_be_asked_for() {
        let mut policy = OriginPolicy::default();
        policy.allow("null");
        assert!(check(&policy, Some("null"), "example.com"));
        assert!(!check(&policy, Some("https://other.example"), "example.com"));
        policy.allow("*");
        assert!(check(&policy, Some("https://other.example"), "example.com"));
    }

    #[test]
    fn the_authority_stands_in_for_a_missing_host_header() {
        let policy = OriginPolicy::default();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ORIGIN, "https://example.com".parse().unwrap());
        assert!(policy.check(&headers, Some("example.com"), None).is_ok());
        assert!(policy.check(&headers, Some("other.com"), None).is_err());
        assert!(policy.check(&headers, None, None).is_err());
    }
}
