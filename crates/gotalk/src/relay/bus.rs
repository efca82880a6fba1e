//! Where the registry of peers and the delivery between them live: the [`Bus`] interface,
//! and [`LocalBus`], its implementation for one process.
//!
//! A gateway instance registers each of its connections' mailboxes and asks the bus to
//! deliver to an id. With one process, the bus is a map. With several processes behind a
//! load balancer, an implementation over a message bus (Redis pub/sub, NATS) keeps which
//! instance owns each id and carries deliveries between them; the relay guide
//! ([`crate::docs::relay`]) describes that design. Nothing else in the relay knows which it is
//! talking to.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use gotalk_protocol::relay::PeerId;

use super::mailbox::{Mailbox, Refused};

/// Why a bus did not deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Undeliverable {
    /// No live peer has the id.
    UnknownPeer,
    /// The recipient's queue is full; the sender may retry.
    QueueFull,
}

/// A delivery in progress, as a bus returns it.
pub type Delivering<'a> = Pin<Box<dyn Future<Output = Result<(), Undeliverable>> + Send + 'a>>;

/// The registry of peers and the delivery between them.
///
/// `register` and `unregister` are called exactly once per connection, when it opens and when
/// it starts closing. `deliver` is called on the sender's read loop, so it should be quick:
/// an implementation over the network answers once the owning instance has accepted or
/// refused the message, never after waiting on a recipient.
pub trait Bus: Send + Sync + 'static {
    /// Makes `id` reachable: deliveries to it go into `mailbox`.
    fn register(&self, id: PeerId, mailbox: Mailbox);
    /// Makes `id` unreachable.
    fn unregister(&self, id: PeerId);
    /// Queues `payload` (an encoded delivery) for the peer `to`.
    fn deliver(&self, to: PeerId, payload: Bytes) -> Delivering<'_>;
    /// How many peers this process has registered.
    fn local_peers(&self) -> usize;
}

/// The bus of one process: a map from id to mailbox.
#[derive(Debug, Default)]
pub struct LocalBus {
    peers: RwLock<HashMap<PeerId, Mailbox>>,
}

impl LocalBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic cannot leave the map half-changed (each section is one map operation), so a
    // poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<PeerId, Mailbox>> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<PeerId, Mailbox>> {
        self.peers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn deliver_now(&self, to: PeerId, payload: Bytes) -> Result<(), Undeliverable> {
        let mailbox = self.read().get(&to).cloned().ok_or(Undeliverable::UnknownPeer)?;
        mailbox.push(payload).map_err(|refused| match refused {
            Refused::Full => Undeliverable::QueueFull,
            Refused::Closed => Undeliverable::UnknownPeer,
        })
    }
}

impl Bus for LocalBus {
    fn register(&self, id: PeerId, mailbox: Mailbox) {
        if self.write().insert(id, mailbox).is_some() {
            // 122 random bits make this a broken random source, not bad luck.
            tracing::error!(%id, "relay id registered twice");
        }
    }

    fn unregister(&self, id: PeerId) {
        self.write().remove(&id);
    }

    fn deliver(&self, to: PeerId, payload: Bytes) -> Delivering<'_> {
        Box::pin(std::future::ready(self.deliver_now(to, payload)))
    }

    fn local_peers(&self) -> usize {
        self.read().len()
    }
}
