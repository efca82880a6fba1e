//! Which Host names the gateway answers to: the defence against DNS rebinding.
//!
//! A site can make its own name resolve to 127.0.0.1 once its page has loaded ("rebinding").
//! The page's requests to `evil.example:PORT` then reach a server on the visitor's loopback,
//! and the browser counts them as same-origin: Origin and Host both say `evil.example:PORT`,
//! so the origin check passes. Only the Host name gives the page away: it is not a name the
//! server is known by. So a request that arrived at a loopback address must name a loopback
//! host (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`, any port) or one configured with
//! [`HostPolicy::allow`]. On any other address every Host passes, unless names are configured:
//! then only those do. A request without a Host (a program speaking HTTP/1.0; browsers always
//! send one) passes, as a request without an Origin does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::origin::split_authority;

/// A configured host: a name, every subdomain of one, an IP address, or any host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Any,
    Name(String),
    /// `*.example.com`: the suffix `.example.com`, which `example.com` itself does not match.
    Subdomains(String),
    Ip(IpAddr),
}

/// The Host names allowed besides the loopback ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostPolicy {
    allowed: Vec<Allowed>,
}

/// Why a request's Host was refused, as the text the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

/// A name as hosts are compared: lowercase, without the one trailing dot that makes a DNS
/// name absolute (`localhost.` is `localhost`).
fn normalize(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.to_ascii_lowercase()
}

/// An IP address in a host: IPv4 as the four decimal numbers, IPv6 as found between the
/// brackets. Other spellings (`127.1`, `2130706433`) are names, and not loopback ones.
fn ip(host: &str) -> Option<IpAddr> {
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    host.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// True for a loopback address, an IPv4 one mapped into IPv6 included (a dual-stack listener
/// sees `::ffff:127.0.0.1`).
pub(crate) fn is_loopback(addr: IpAddr) -> bool {
    addr.to_canonical().is_loopback()
}

/// True when `host` (without port or brackets) is a loopback name: `localhost`, a name under
/// `.localhost` (RFC 6761 keeps them on the machine), or a loopback address.
fn is_loopback_name(host: &str) -> bool {
    let name = normalize(host);
    match ip(&name) {
        Some(addr) => is_loopback(addr),
        None => name == "localhost" || name.ends_with(".localhost"),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Parses what [`HostPolicy::allow`] takes: `*`, `*.example.com`, `example.com`, an IPv4
/// address, or an IPv6 one with or without brackets; no port.
fn parse_allowed(text: &str) -> Option<Allowed> {
    let text = text.trim();
    if text == "*" {
        return Some(Allowed::Any);
    }
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
    if let Some(addr) = ip(bare.unwrap_or(text)) {
        // An IPv4 address in brackets is not a host.
        return (bare.is_none() || addr.is_ipv6()).then_some(Allowed::Ip(addr));
    }
    let (subdomains, name) = match text.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, text),
    };
    let name = normalize(name);
    let valid = !name.is_empty()
        && name.chars().all(is_name_char)
        && name.split('.').all(|label| !label.is_empty());
    match (valid, subdomains) {
        (false, _) => None,
        (true, true) => Some(Allowed::Subdomains(format!(".{name}"))),
        (true, false) => Some(Allowed::Name(name)),
    }
}

/// True when `host` can be given to [`HostPolicy::allow`].
pub(crate) fn is_valid(host: &str) -> bool {
    parse_allowed(host).is_some()
}

impl Allowed {
    fn matches(&self, name: &str, addr: Option<IpAddr>) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Name(allowed) => addr.is_none() && name == allowed,
            Allowed::Subdomains(suffix) => addr.is_none() && name.ends_with(suffix.as_str()),
            Allowed::Ip(allowed) => addr == Some(*allowed),
        }
    }
}

impl HostPolicy {
    /// Allows `host` (see [`parse_allowed`]). Returns false for anything else.
    pub(crate) fn allow(&mut self, host: &str) -> bool {
        match parse_allowed(host) {
            Some(allowed) => {
                self.allowed.push(allowed);
                true
            }
            None => false,
        }
    }

    /// Checks a request's Host header (and the authority of its URI, when it has one: both
    /// must pass). `on_loopback` says whether the request arrived at a loopback address.
    pub(crate) fn check(
        &self,
        host: Option<&http::HeaderValue>,
        authority: Option<&str>,
        on_loopback: bool,
    ) -> Result<(), Refused> {
        if let Some(value) = host {
            let text = value.to_str().map_err(|_| Refused("the Host header is not text".into()))?;
            self.check_one(text, on_loopback)?;
        }
        if let Some(authority) = authority {
            self.check_one(authority, on_loopback)?;
        }
        Ok(())
    }

    fn check_one(&self, authority: &str, on_loopback: bool) -> Result<(), Refused> {
        let Some((host, _port)) = split_authority(authority.trim()) else {
            return Err(Refused(format!("malformed host {authority:?}")));
        };
        if on_loopback && is_loopback_name(host) {
            return Ok(());
        }
        if self.allowed.is_empty() && !on_loopback {
            return Ok(());
        }
        let name = normalize(host);
        let addr = ip(&name);
        if self.allowed.iter().any(|allowed| allowed.matches(&name, addr)) {
            return Ok(());
        }
        Err(Refused(if on_loopback {
            format!(
                "host {authority:?} is not allowed: on a loopback address only loopback names \
                 (localhost, 127.0.0.1, [::1]) and allowed hosts are served"
            )
        } else {
            format!("host {authority:?} is not among the allowed hosts")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &HostPolicy, host: &str, on_loopback: bool) -> bool {
        let value = http::HeaderValue::from_str(host).unwrap();
        policy.check(Some(&value), None, on_loopback).is_ok()
    }

    #[test]
    fn loopback_names_pass_on_loopback_with_any_port() {
        let policy = HostPolicy::default();
        for host in [
            "localhost",
            "localhost:1234",
            "LOCALHOST:1234",
            "localhost.:1234",
            "app.localhost:8080",
            "a.b.LOCALHOST.",
            "127.0.0.1",
            "127.0.0.1:1",
            "127.255.0.9:65535",
            "[::1]",
            "[::1]:1234",
            "[0:0:0:0:0:0:0:1]:1234",
            "[::ffff:127.0.0.1]:1234",
        ] {
            assert!(check(&policy, host, true), "{host} refused");
        }
    }

    #[test]
    fn other_names_are_refused_on_loopback() {
        let policy = HostPolicy::default();
        for host in [
            "evil.example",
            "evil.example:1234",
            "EVIL.EXAMPLE.:1234",
            "localhost.evil.example",
            "evillocalhost",
            "127.1:1234",
            "2130706433",
            "0.0.0.0:1234",
            "128.0.0.1",
            "[::2]:1234",
            "[::ffff:10.0.0.1]",
            "192.168.1.5:1234",
        ] {
            assert!(!check(&policy, host, true), "{host} allowed");
        }
    }

    #[test]
    fn the_refusal_names_the_host() {
        let policy = HostPolicy::default();
        let value = http::HeaderValue::from_static("evil.example:1234");
        let Err(Refused(text)) = policy.check(Some(&value), None, true) else { panic!() };
        assert!(text.contains("\"evil.example:1234\""), "{text}");
        assert!(text.contains("loopback"), "{text}");
    }

    #[test]
    fn any_host_passes_elsewhere_until_names_are_allowed() {
        let mut policy = HostPolicy::default();
        assert!(check(&policy, "evil.example:1234", false));
        assert!(check(&policy, "localhost", false));
        assert!(policy.allow("app.example"));
        assert!(check(&policy, "app.example", false));
        assert!(check(&policy, "APP.example.:443", false));
        assert!(!check(&policy, "evil.example", false));
        // A loopback name is not special off loopback.
        assert!(!check(&policy, "localhost", false));
    }

    #[test]
    fn allowed_names_pass_on_loopback_too() {
        let mut policy = HostPolicy::default();
        assert!(policy.allow("evil.example."));
        assert!(check(&policy, "evil.example:1234", true));
        assert!(check(&policy, "Evil.Example", true));
        assert!(check(&policy, "localhost:1", true));
        assert!(!check(&policy, "sub.evil.example", true));
        assert!(!check(&policy, "evil.example.com", true));
    }

    #[test]
    fn subdomains_addresses_and_star() {
        let mut policy = HostPolicy::default();
        assert!(policy.allow("*.app.example"));
        assert!(policy.allow("[2001:db8::1]"));
        assert!(policy.allow("10.0.0.1"));
        assert!(check(&policy, "a.app.example:1", true));
        assert!(check(&policy, "a.b.app.example", true));
        assert!(!check(&policy, "app.example", true));
        assert!(!check(&policy, "xapp.example", true));
        assert!(check(&policy, "[2001:DB8:0::1]:1234", true));
        assert!(check(&policy, "10.0.0.1:80", true));
        assert!(!check(&policy, "10.0.0.2", true));
        assert!(policy.allow("*"));
        assert!(check(&policy, "anything.example", true));
    }

    #[test]
    fn what_allow_takes() {
        for good in ["*", "example.com", "EXAMPLE.com.", "*.example.com", "::1", "[::1]", "a_b"] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "*.",
            "**.a",
            "a.*.b",
            "example.com:80",
            "[127.0.0.1]",
            "[::1]:80",
            "http://example.com",
            "exämple.com",
            "a b",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_hosts_are_refused_even_off_loopback() {
        let policy = HostPolicy::default();
        for host in ["", ":80", "a:port", "a b", "[::1", "user@localhost"] {
            assert!(!check(&policy, host, false), "{host:?} allowed");
        }
        let value = http::HeaderValue::from_bytes(b"local\xffhost").unwrap();
        assert!(policy.check(Some(&value), None, false).is_err());
    }

    #[test]
    fn no_host_passes_and_the_authority_is_checked_too() {
        let policy = HostPolicy::default();
        assert!(policy.check(None, None, true).is_ok());
        assert!(policy.check(None, Some("localhost:1"), true).is_ok());
        assert!(policy.check(None, Some("evil.example:1"), true).is_err());
        let local = http::HeaderValue::from_static("localhost");
        assert!(policy.check(Some(&local), Some("evil.example"), true).is_err());
    }

    #[test]
    fn mapped_loopback_addresses_are_loopback() {
        assert!(is_loopback("127.0.0.2".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
    }
}
