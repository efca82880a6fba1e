//! Connections per remote address: one peer may not take every slot of a listener.
//!
//! The global limits (`max_connections`) bound what the server spends; this bounds what any
//! one address can take of it, so a single host (or a single slowloris) cannot lock everyone
//! else out. An IPv6 host usually owns a whole /64, so IPv6 addresses count per /64 prefix;
//! IPv4-mapped IPv6 addresses count as the IPv4 address they carry.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use crate::lock;

/// The default for every listener: generous enough for an office behind one NAT address,
/// a tenth of the default global limit, so at least ten addresses share it.
pub(crate) const DEFAULT_PER_ADDR: usize = 1_000;

/// Counts open connections per address, shared by every clone.
#[derive(Clone, Debug)]
pub(crate) struct AddrLimit {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its address's count, returned on drop.
#[derive(Debug)]
pub(crate) struct AddrPermit {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl AddrLimit {
    /// At most `max` connections per address (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        AddrLimit { max: max.max(1), open: Arc::default() }
    }

    /// A place for one more connection from `ip`, or `None` when it has `max` already.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Option<AddrPermit> {
        let key = key(ip);
        let mut open = lock(&self.open);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddrPermit { key, open: self.open.clone() })
    }

    /// How many addresses have a connection open (for tests of the bookkeeping).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        lock(&self.open).len()
    }
}

impl Drop for AddrPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            // Forget idle addresses, so the map holds only addresses with connections open
            // and a scan of the address space costs nothing once it stops.
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_max_places_and_one_more_after_a_close() {
        let limit = AddrLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limit.try_acquire(a).unwrap();
        let _second = limit.try_acquire(a).unwrap();
        assert!(limit.try_acquire(a).is_none());
        // Another address is counted apart.
        let _other = limit.try_acquire(b).unwrap();
        drop(first);
        assert!(limit.try_acquire(a).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limit = AddrLimit::new(1);
        let _one = limit.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(limit.try_acquire("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        assert!(limit.try_acquire("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = limit.try_acquire("198.51.100.7".parse().unwrap()).unwrap();
        assert!(limit.try_acquire("::ffff:198.51.100.7".parse().unwrap()).is_none());
    }

    #[test]
    fn closed_addresses_are_forgotten() {
        let limit = AddrLimit::new(3);
        let permits: Vec<_> =
            (0..50u8).map(|i| limit.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap()).collect();
        assert_eq!(limit.addresses(), 50);
        drop(permits);
        assert_eq!(limit.addresses(), 0);
    }

    #[test]
    fn zero_means_one() {
        let limit = AddrLimit::new(0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let _only = limit.try_acquire(ip).unwrap();
        assert!(limit.try_acquire(ip).is_none());
    }
}
