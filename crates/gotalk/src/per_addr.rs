//! Connections per remote address: one peer may not take every slot of a listener.
//!
//! The global limits (`max_connections`) bound what the server spends; this bounds what any
//! one address can take of it, so a single host (or a single slowloris) cannot lock everyone
//! else out. An IPv6 host usually owns a whole /64, so IPv6 addresses count per /64 prefix;
//! IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
//!
//! A few addresses, each within its own limit, can still fill a listener together. So the
//! last places (the reserve) go only to addresses that hold few connections: once
//! `max - reserve` are open, an address holding a tenth of the reserve or more (at least
//! one) is refused, while one holding fewer still gets in, up to the global limit. Taking
//! the reserve as well then needs ten more addresses than filling the rest did (one per
//! reserved place, for a reserve under ten).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use crate::lock;

/// The default for every listener: generous enough for an office behind one NAT address,
/// a tenth of the default global limit, so at least ten addresses share it.
pub(crate) const DEFAULT_PER_ADDR: usize = 1_000;

/// The reserve when none is set: a tenth of the places, or none when one address may take
/// every place (behind a proxy every peer shares its address, and a reserve would only
/// shrink the listener).
pub(crate) fn default_reserve(max_connections: usize, max_per_addr: usize) -> usize {
    if max_per_addr >= max_connections {
        0
    } else {
        max_connections / 10
    }
}

/// Why a connection was not given a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds its limit already.
    AddressFull,
    /// The listener is into its reserve, and the address holds too many for a reserved place.
    Crowded,
}

/// Counts open connections per address, shared by every clone.
#[derive(Clone, Debug)]
pub struct AddrLimit {
    max: usize,
    /// From this many open connections on, only addresses holding fewer than `share` get in.
    crowded_at: usize,
    share: usize,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    per_addr: HashMap<IpAddr, usize>,
    total: usize,
}

/// One connection's place in its address's count, returned on drop.
#[derive(Debug)]
pub struct AddrPermit {
    key: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl AddrLimit {
    /// At most `max_per_addr` connections per address (at least 1), and of `max_connections`
    /// places the last `reserve` only for addresses holding fewer than a tenth of the
    /// reserve (at least 1). A reserve of 0 turns that off.
    pub fn new(max_per_addr: usize, max_connections: usize, reserve: usize) -> Self {
        let crowded_at =
            if reserve == 0 { usize::MAX } else { max_connections.saturating_sub(reserve) };
        AddrLimit {
            max: max_per_addr.max(1),
            crowded_at,
            share: (reserve / 10).max(1),
            open: Arc::default(),
        }
    }

    /// A place for one more connection from `ip`, or why not.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<AddrPermit, Refused> {
        let key = key(ip);
        let mut open = lock(&self.open);
        let held = open.per_addr.get(&key).copied().unwrap_or(0);
        if held >= self.max {
            return Err(Refused::AddressFull);
        }
        if open.total >= self.crowded_at && held >= self.share {
            return Err(Refused::Crowded);
        }
        *open.per_addr.entry(key).or_insert(0) += 1;
        open.total += 1;
        Ok(AddrPermit { key, open: self.open.clone() })
    }

    /// How many addresses have a connection open (for tests of the bookkeeping).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        lock(&self.open).per_addr.len()
    }
}

impl Drop for AddrPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.per_addr.get_mut(&self.key) {
            *count -= 1;
            // Forget idle addresses, so the map holds only addresses with connections open
            // and a scan of the address space costs nothing once it stops.
            if *count == 0 {
                open.per_addr.remove(&self.key);
            }
            open.total -= 1;
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn an_address_gets_max_places_and_one_more_after_a_close() {
        let limit = AddrLimit::new(2, 100, 0);
        let first = limit.try_acquire(ip(1)).unwrap();
        let _second = limit.try_acquire(ip(1)).unwrap();
        assert_eq!(limit.try_acquire(ip(1)).unwrap_err(), Refused::AddressFull);
        // Another address is counted apart.
        let _other = limit.try_acquire(ip(2)).unwrap();
        drop(first);
        assert!(limit.try_acquire(ip(1)).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limit = AddrLimit::new(1, 100, 0);
        let _one = limit.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(limit.try_acquire("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        assert!(limit.try_acquire("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _v4 = limit.try_acquire("198.51.100.7".parse().unwrap()).unwrap();
        assert!(limit.try_acquire("::ffff:198.51.100.7".parse().unwrap()).is_err());
    }

    #[test]
    fn closed_addresses_are_forgotten() {
        let limit = AddrLimit::new(3, 1000, 100);
        let permits: Vec<_> =
            (0..50u8).map(|i| limit.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap()).collect();
        assert_eq!(limit.addresses(), 50);
        drop(permits);
        assert_eq!(limit.addresses(), 0);
        assert_eq!(lock(&limit.open).total, 0);
    }

    #[test]
    fn zero_means_one() {
        let limit = AddrLimit::new(0, 100, 0);
        let _only = limit.try_acquire(ip(1)).unwrap();
        assert!(limit.try_acquire(ip(1)).is_err());
    }

    #[test]
    fn into_the_reserve_only_addresses_holding_under_a_tenth_of_it_get_in() {
        // 100 places, 20 reserved: from 80 open on, an address must hold fewer than 2.
        let limit = AddrLimit::new(50, 100, 20);
        let mut held: Vec<_> = (0..40).map(|_| limit.try_acquire(ip(1)).unwrap()).collect();
        held.extend((0..39).map(|_| limit.try_acquire(ip(2)).unwrap()));
        // At 79 open, one below the reserve: anyone gets in.
        held.push(limit.try_acquire(ip(2)).unwrap());
        // At 80, those holding many are refused.
        assert_eq!(limit.try_acquire(ip(1)).unwrap_err(), Refused::Crowded);
        assert_eq!(limit.try_acquire(ip(2)).unwrap_err(), Refused::Crowded);
        // One holding none gets in; holding one, a second place; holding two, no more.
        held.push(limit.try_acquire(ip(3)).unwrap());
        held.push(limit.try_acquire(ip(3)).unwrap());
        assert_eq!(limit.try_acquire(ip(3)).unwrap_err(), Refused::Crowded);
        // A place freed below the reserve is anyone's again.
        drop(held.drain(..3));
        held.push(limit.try_acquire(ip(1)).unwrap());
        // The address's own limit is checked first.
        let full = AddrLimit::new(1, 100, 20);
        let _one = full.try_acquire(ip(1)).unwrap();
        assert_eq!(full.try_acquire(ip(1)).unwrap_err(), Refused::AddressFull);
    }

    #[test]
    fn a_reserve_under_ten_is_one_place_each_and_zero_turns_it_off() {
        let limit = AddrLimit::new(20, 20, 2);
        let _held: Vec<_> = (0..18).map(|_| limit.try_acquire(ip(1)).unwrap()).collect();
        assert_eq!(limit.try_acquire(ip(1)).unwrap_err(), Refused::Crowded);
        let _two = limit.try_acquire(ip(2)).unwrap();
        assert_eq!(limit.try_acquire(ip(2)).unwrap_err(), Refused::Crowded);
        let _three = limit.try_acquire(ip(3)).unwrap();

        let off = AddrLimit::new(20, 20, 0);
        let _all: Vec<_> = (0..20).map(|_| off.try_acquire(ip(1)).unwrap()).collect();
        assert_eq!(off.try_acquire(ip(1)).unwrap_err(), Refused::AddressFull);
    }

    #[test]
    fn the_default_reserve_is_a_tenth_unless_one_address_may_take_every_place() {
        assert_eq!(default_reserve(10_000, 1_000), 1_000);
        assert_eq!(default_reserve(20, 10), 2);
        assert_eq!(default_reserve(9, 1), 0);
        assert_eq!(default_reserve(10_000, 10_000), 0);
    }
}
