//! The server the browser tests and process tests run: `gotalk` with the demo and the fixture
//! operations behind `serve` (see `gotalk_tests::e2e`).

#![forbid(unsafe_code)]

// The allocator `gotalk` ships with, so memory figures measured here hold for it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gotalk_tests::e2e::main()
}
