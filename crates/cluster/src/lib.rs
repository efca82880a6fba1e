//! gotalk's relay and groups across several gateway instances behind a load balancer.
//!
//! [`ClusterBus`] implements the relay's [`Bus`](gotalk::relay::Bus) over a message bus: a
//! peer reaches any other by id whichever instance holds it, groups and broadcasts reach every
//! instance, and every instance sees who is in each group. The message bus is reached through
//! a [`Link`]; this crate has one for Redis (feature `redis`) and one for NATS (feature
//! `nats`), and compiles neither client without its feature.
//!
//! How it works and what it does when instances die and the bus restarts: [`docs::cluster`].

#![forbid(unsafe_code)]

mod bus;
pub mod docs;
mod envelope;
pub mod link;
mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
mod presence;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
mod redis_publisher;
mod resume;
mod settings;
mod supervisor;

pub use bus::{ClusterBus, StartError};
pub use link::{Incoming, Link, LinkError, Reply, RequestError, Session};
pub use metrics::{BusMetrics, Dropped, Readiness, RemoteRelays};
#[cfg(feature = "nats")]
pub use nats::NatsLink;
#[cfg(feature = "redis")]
pub use redis::RedisLink;
pub use settings::ClusterSettings;
