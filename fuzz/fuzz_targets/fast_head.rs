#![no_main]
//! See `ztp_operator::fuzzing::fast_head`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztp_operator::fuzzing::fast_head(data));
