//! The guide to the command. It is a file in this package's `docs/` folder, included here so
//! that its example compiles as a doc test.

#[doc = include_str!("../docs/command.md")]
pub mod command {}
