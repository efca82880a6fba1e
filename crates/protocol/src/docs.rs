//! The wire mappings, one topic each. Each is a file in this package's `docs/` folder.

#[doc = include_str!("../docs/sources.md")]
pub mod sources {}
