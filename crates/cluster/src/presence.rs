//! The other instances' members, as this instance knows them.
//!
//! Each instance is the only writer of its own rows and tells the others every change with a
//! sequence number, so no row ever has two writers and a replica is a plain map. A change
//! that skips a number means something was lost: the replica asks for a snapshot. An instance
//! that stops beating is forgotten after the expiry; one that says goodbye, at once. While
//! this instance's own bus is down nothing expires: the silence is ours, and forgetting
//! everyone would make every member leave and join again when the bus comes back.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use gotalk::protocol::relay::PeerId;
use gotalk::relay::{Group, Member};
use tokio::time::Instant;

use crate::envelope::{Change, Iid, Rows};

#[derive(Debug)]
struct Remote {
    seq: u64,
    heard: Instant,
    /// Known only after a snapshot: until then deltas cannot be applied.
    synced: bool,
    groups: BTreeMap<Group, Vec<Member>>,
}

/// What became of a delta.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Applied; true when it changed anything.
    Yes(bool),
    /// Older than what is known: ignored.
    Stale,
    /// Something before it was lost (or the instance is new to us): ask for a snapshot.
    Gap,
}

#[derive(Debug, Default)]
pub(crate) struct Presence {
    remotes: HashMap<Iid, Remote>,
}

impl Presence {
    fn remote(&mut self, origin: Iid, now: Instant) -> &mut Remote {
        let remote = self.remotes.entry(origin).or_insert_with(|| Remote {
            seq: 0,
            heard: now,
            synced: false,
            groups: BTreeMap::new(),
        });
        remote.heard = now;
        remote
    }

    pub(crate) fn delta(&mut self, origin: Iid, seq: u64, change: Change, now: Instant) -> Applied {
        let remote = self.remote(origin, now);
        if !remote.synced {
            return Applied::Gap;
        }
        if seq <= remote.seq {
            return Applied::Stale;
        }
        if seq != remote.seq + 1 {
            return Applied::Gap;
        }
        remote.seq = seq;
        let changed = match change {
            Change::Join(group, member) => {
                let members = remote.groups.entry(group).or_default();
                match members.iter_mut().find(|m| m.peer == member.peer) {
                    Some(m) if *m == member => false,
                    Some(m) => {
                        *m = member;
                        true
                    }
                    None => {
                        members.push(member);
                        true
                    }
                }
            }
            Change::Leave(group, peer) => leave(&mut remote.groups, &group, peer),
        };
        Applied::Yes(changed)
    }

    /// Replaces an instance's rows; true when that changed anything.
    pub(crate) fn snapshot(&mut self, origin: Iid, seq: u64, rows: Rows, now: Instant) -> bool {
        let remote = self.remote(origin, now);
        if remote.synced && seq < remote.seq {
            return false;
        }
        let groups: BTreeMap<Group, Vec<Member>> =
            rows.into_iter().filter(|(_, members)| !members.is_empty()).collect();
        remote.seq = seq;
        remote.synced = true;
        let changed = remote.groups != groups;
        remote.groups = groups;
        changed
    }

    /// A heartbeat: true when the instance has changed since what we know (ask it for a
    /// snapshot).
    pub(crate) fn beat(&mut self, origin: Iid, seq: u64, now: Instant) -> bool {
        let remote = self.remote(origin, now);
        !remote.synced || remote.seq < seq
    }

    /// Forgets an instance; true when it had members.
    pub(crate) fn forget(&mut self, origin: Iid) -> bool {
        self.remotes.remove(&origin).is_some_and(|r| !r.groups.is_empty())
    }

    /// Forgets the instances not heard from within `after`; true when any had members.
    pub(crate) fn expire(&mut self, now: Instant, after: Duration) -> bool {
        let mut changed = false;
        self.remotes.retain(|_, r| {
            let keep = now.saturating_duration_since(r.heard) < after;
            changed |= !keep && !r.groups.is_empty();
            keep
        });
        changed
    }

    /// Our bus is back: every instance gets a full expiry from now to be heard again.
    pub(crate) fn thaw(&mut self, now: Instant) {
        for remote in self.remotes.values_mut() {
            remote.heard = now;
        }
    }

    /// The members of `group` on other instances, instance by instance.
    pub(crate) fn members(&self, group: &Group) -> Vec<&Member> {
        let mut iids: Vec<_> = self.remotes.keys().copied().collect();
        iids.sort_unstable();
        iids.into_iter()
            .filter_map(|iid| self.remotes.get(&iid)?.groups.get(group))
            .flatten()
            .collect()
    }

    /// Adds the other instances' member counts, group by group, to `counts`.
    pub(crate) fn count(&self, counts: &mut HashMap<Group, usize>) {
        for remote in self.remotes.values() {
            for (group, members) in &remote.groups {
                *counts.entry(group.clone()).or_default() += members.len();
            }
        }
    }

    /// The instances with members in `group`: those that keep its messages.
    pub(crate) fn holders(&self, group: &Group) -> Vec<Iid> {
        let mut iids: Vec<_> = self
            .remotes
            .iter()
            .filter(|(_, r)| r.groups.get(group).is_some_and(|m| !m.is_empty()))
            .map(|(iid, _)| *iid)
            .collect();
        iids.sort_unstable();
        iids
    }

    /// How many other instances are known.
    pub(crate) fn instances(&self) -> usize {
        self.remotes.len()
    }
}

fn leave(groups: &mut BTreeMap<Group, Vec<Member>>, group: &Group, peer: PeerId) -> bool {
    let Some(members) = groups.get_mut(group) else { return false };
    let before = members.len();
    members.retain(|m| m.peer != peer);
    let changed = members.len() != before;
    if members.is_empty() {
        groups.remove(group);
    }
    changed
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn member(n: u8) -> Member {
        Member { peer: PeerId::from_random([n; 16]), meta: Bytes::new() }
    }

    #[test]
    fn deltas_apply_in_sequence_and_a_gap_asks_for_a_snapshot() {
        let g = Group::new("g").unwrap();
        let now = Instant::now();
        let mut p = Presence::default();
        let join = |n| Change::Join(g.clone(), member(n));
        assert_eq!(p.delta(1, 1, join(1), now), Applied::Gap, "unknown until a snapshot");
        assert!(p.snapshot(1, 1, vec![(g.clone(), vec![member(1)])], now));
        assert_eq!(p.delta(1, 2, join(2), now), Applied::Yes(true));
        assert_eq!(p.delta(1, 2, join(3), now), Applied::Stale);
        assert_eq!(p.delta(1, 4, join(4), now), Applied::Gap);
        assert_eq!(p.members(&g).len(), 2);
        assert!(p.beat(1, 3, now), "a beat ahead of us asks for a snapshot");
        assert!(!p.beat(1, 2, now));
        let leave = Change::Leave(g.clone(), member(1).peer);
        assert_eq!(p.delta(1, 3, leave, now), Applied::Yes(true));
        assert_eq!(p.holders(&g), vec![1]);
    }

    #[test]
    fn silent_instances_expire_unless_thawed() {
        let g = Group::new("g").unwrap();
        let start = Instant::now();
        let mut p = Presence::default();
        p.snapshot(1, 0, vec![(g.clone(), vec![member(1)])], start);
        let expiry = Duration::from_secs(15);
        assert!(!p.expire(start + Duration::from_secs(14), expiry));
        p.thaw(start + Duration::from_secs(14));
        assert!(!p.expire(start + Duration::from_secs(28), expiry), "thawed at 14 s");
        assert!(p.expire(start + Duration::from_secs(29), expiry));
        assert_eq!(p.members(&g).len(), 0);
        assert!(!p.forget(1));
    }
}
