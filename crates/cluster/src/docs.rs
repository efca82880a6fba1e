//! The guide, a file in this package's `docs/` folder, so its example is a doc test and it
//! ships with the package.

#[doc = include_str!("../docs/cluster.md")]
pub mod cluster {}
