//! Fuzz target `sock_client`: the check is gotalk_fuzz_harness::sock::sock_client, which
//! stable `cargo test` also runs on this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gotalk_fuzz_harness::sock::sock_client(data));
