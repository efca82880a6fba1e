//! Fuzz target `relay_envelope`: the check is gotalk_fuzz_harness::relay::relay_envelope, which
//! stable `cargo test` also runs on this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gotalk_fuzz_harness::relay::relay_envelope(data));
