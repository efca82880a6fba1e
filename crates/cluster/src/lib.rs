//! gotalk's relay and groups across several gateway instances behind a load balancer.
//!
//! [`ClusterBus`] implements the relay's [`Bus`](gotalk::relay::Bus) over a message bus: a
//! peer reaches any other by id whichever instance holds it, groups and broadcasts reach every
//! instance, and every instance sees who is in each group. The message bus is reached through
//! a [`Link`]; this crate has one for Redis (feature `redis`) and one for NATS (feature
//! `nats`), and compiles neither client without its feature.

pub mod link;
#[cfg(feature = "nats")]
pub mod nats;

pub use link::{Incoming, Link, LinkError, Reply, RequestError, Session};
#[cfg(feature = "nats")]
pub use nats::NatsLink;
