//! The guides, one topic each. Each is a file in this package's `docs/` folder, included
//! here so that its Rust examples compile as doc tests.

#[doc = include_str!("../docs/gateway.md")]
pub mod gateway {}

#[doc = include_str!("../docs/browser.md")]
pub mod browser {}
