//! The guides, one topic each. Each is a file in this package's `docs/` folder, included
//! here so that its examples compile, and most run, as doc tests.

#[doc = include_str!("../docs/usage.md")]
pub mod usage {}

#[doc = include_str!("../docs/memory.md")]
pub mod memory {}

#[doc = include_str!("../docs/liveness.md")]
pub mod liveness {}

#[cfg(feature = "relay")]
#[doc = include_str!("../docs/relay.md")]
pub mod relay {}

#[cfg(feature = "sources")]
#[doc = include_str!("../docs/sources.md")]
pub mod sources {}

#[doc = include_str!("../docs/keepalive.md")]
pub mod keepalive {}

#[doc = include_str!("../docs/errors-and-middleware.md")]
pub mod errors_and_middleware {}
