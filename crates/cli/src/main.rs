//! `gotalk`: serve the gateway, call and notify gotalk peers, listen to them.

#![forbid(unsafe_code)]

// jemalloc, with its background thread purging freed pages (the crate's `background_threads`
// feature; dirty pages decay over 10 s), instead of glibc's malloc. glibc raises its mmap
// threshold after each large free (up to 32 MiB), so once peers have sent 16 MiB messages,
// buffers of that size come from heaps it rarely trims: measured with
// `gotalk-bench --scenario hostile`, a server with no connection left still held 29-338 MiB
// 30 s after each attack, from 24 MiB before it. With jemalloc every attack's server was back
// under its RSS before the attack within 20 s. mimalloc (default options) idled at 73-93 MiB
// and kept 69 MiB-2 GiB. Throughput and idle memory per connection stayed within 10 % of the
// old glibc build (docs/performance.md). The cost: 16 MiB payloads fall in jemalloc's 20 MiB
// size class and freed ranges stay mapped, so more address space is mapped than with glibc;
// under `ulimit -v` that matters until the budget bounds every attack (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gotalk_cli::main(|args: gotalk_cli::serve::Args| {
        gotalk_cli::serve::run(args, gotalk::Handlers::new(), None)
    })
}
