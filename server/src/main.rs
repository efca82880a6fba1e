//! The `gotalk` command line: placeholder until the subcommands land.
fn main() {}
